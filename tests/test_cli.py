"""The `semqa` command line, in process (same code path as the installed entry point)."""

from __future__ import annotations

import json
import re

import pytest

from semqa.cli import main
from tests.conftest import CORPUS, DATA


def test_index_then_ask(tmp_path, capsys, cache_dir):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The Shenzhou-13 crew spent six months aboard the space station.")
    (corpus / "b.txt").write_text("Cakes need flour, sugar and eggs.")
    (corpus / "bad.pdf").write_bytes(b"not a pdf")
    common = ["--index-dir", str(tmp_path / "index"), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(["index", str(corpus), *common]) == 0
    err = capsys.readouterr().err
    assert re.search(r"indexed 2 documents into 2 chunks .* 1 skipped, [\d.]+ s, [\d.]+ chunks/s", err)
    assert "skipped" in err and "bad.pdf" in err
    assert main(["ask", "How long did the crew stay?", "-k", "1", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] ") and "a.txt" in out and "Shenzhou-13" in out and "b.txt" not in out


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    assert main(["index", str(tmp_path / "missing"), "--index-dir", str(tmp_path / "i"), "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["ask", "anything", "--index-dir", str(tmp_path / "none")]) == 1
    assert "semqa index" in capsys.readouterr().err
    assert main(["index", "--chunk-tokens", "3", "--index-dir", str(tmp_path / "i")]) == 1
    assert "SEMQA_CHUNK_TOKENS" in capsys.readouterr().err


def test_a_corpus_with_nothing_to_index_says_why_each_file_was_skipped(tmp_path, capsys, cache_dir):
    # found by probing: "no indexable documents (2 skipped)" named neither the files nor the reasons
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "blank.md").write_text("  \n")
    index = ["--index-dir", str(tmp_path / "i"), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(["index", str(corpus), *index]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the model library's own warnings)
    assert err.startswith(f"semqa index: no indexable documents under {corpus} (2 skipped: ")
    assert "blank.md: empty document" in err and "latin1.txt: not UTF-8 text" in err


def test_bad_settings_and_arguments_stop_the_command_with_one_line(tmp_path, capsys, monkeypatch):
    # found by probing: a rate limit flask-limiter cannot read was accepted, then failed every request
    # (500) or, for writes, was skipped silently; a negative -k printed all passages but a few; a blank
    # question printed arbitrary ones; compact on a mistyped path made the path and a lock file in it
    for name, value in (("SEMQA_RATE_LIMIT", "garbage"), ("SEMQA_WRITE_RATE_LIMIT", "2 per fortnight")):
        monkeypatch.setenv(name, value)
        assert main(["ask", "space", "--index-dir", str(tmp_path / "none")]) == 1  # as serve and mcp do
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"semqa: invalid {name}: ") and "600 per minute" in err and "\n" not in err
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as exit_:
        main(["ask", "space", "-k", "-1"])
    assert exit_.value.code == 2 and "must be 1 or more" in capsys.readouterr().err
    assert main(["ask", "\u200b ", "--index-dir", str(tmp_path / "none")]) == 1
    assert "the question is blank" in capsys.readouterr().err
    typo = tmp_path / "typo" / "sub"
    assert main(["compact", "--index-dir", str(typo)]) == 1
    assert "no index in" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_a_mistyped_variable_is_named_and_an_empty_path_refused(tmp_path, capsys, monkeypatch):
    # found by probing: SEMQA_API_KEY (for SEMQA_API_KEYS) was ignored without a word, which leaves a
    # server without keys; an empty SEMQA_INDEX_DIR meant the current directory
    monkeypatch.setenv("SEMQA_API_KEY", "secret")
    monkeypatch.setenv("SEMQA_SERVICE_HOST", "10.0.0.1")  # a platform's variable: named, no suggestion
    assert main(["ask", "space", "--index-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "semqa: warning: SEMQA_API_KEY is not a semqa setting and is ignored; did you mean SEMQA_API_KEYS?"
    )
    assert err[1] == "semqa: warning: SEMQA_SERVICE_HOST is not a semqa setting and is ignored"
    assert err[2].startswith("semqa ask: no index in")
    monkeypatch.delenv("SEMQA_API_KEY")
    monkeypatch.delenv("SEMQA_SERVICE_HOST")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMQA_INDEX_DIR", "")
    assert main(["compact"]) == 1
    assert "invalid SEMQA_INDEX_DIR: Value error, must not be empty" in capsys.readouterr().err
    monkeypatch.setenv("SEMQA_API_KEY_FILE", "")  # an optional path: empty means none
    assert main(["ask", "space", "--index-dir", str(tmp_path / "none")]) == 1
    assert "no index in" in capsys.readouterr().err


def test_mcp_refuses_a_missing_index_and_bad_options(tmp_path, capsys, monkeypatch):
    assert main(["mcp", "--index-dir", str(tmp_path / "none")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"semqa mcp: no index in {tmp_path / 'none'}: run `semqa index` to build one"
    )
    assert main(["mcp", "--port", "9000"]) == 2
    assert "--http" in capsys.readouterr().err
    monkeypatch.setenv("SEMQA_READ_REQUIRES_KEY", "true")
    monkeypatch.delenv("SEMQA_API_KEYS", raising=False)
    assert main(["mcp", "--http", "--index-dir", str(tmp_path / "none")]) == 1
    assert "no API key is configured" in capsys.readouterr().err


def test_environment_settings_apply_and_flags_win(tmp_path, monkeypatch):
    from semqa.cli import build_parser, settings_from_args

    monkeypatch.setenv("SEMQA_PORT", "9100")
    monkeypatch.setenv("SEMQA_INDEX_DIR", str(tmp_path / "env-index"))
    settings = settings_from_args(build_parser().parse_args(["serve", "--index-dir", str(tmp_path / "flag")]))
    assert settings.port == 9100 and settings.index_dir == tmp_path / "flag"


def test_eval_reports_every_mode_on_questions_and_beir(capsys, cache_dir):
    common = ["--cache-dir", str(cache_dir), "--quiet", "--json"]
    questions = DATA / "questions_sample.tsv"
    assert main(["eval", "--questions", str(questions), "--corpus", str(CORPUS), *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["chunk_tokens"] == 128
    for mode in ("dense", "lexical", "hybrid"):
        metrics = result[f"questions/{mode}"]
        assert metrics["questions"] == 5
        assert 0 <= metrics["R@1"] <= metrics["R@5"] <= 1 and 0 <= metrics["highlight"] <= 1
    assert result["questions/hybrid"]["R@5"] >= 0.8  # own sample questions, not the dev set
    assert (
        main(["eval", "--beir", str(DATA / "scifact_sample"), "--split", "train", "--mode", "dense", *common])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"settings", "beir:scifact_sample/train/dense"}
    beir = result["beir:scifact_sample/train/dense"]
    assert beir["queries"] == 12
    assert 0.3 < beir["nDCG@10"] <= 1.0 and beir["top_k"] == 10 and 0 < beir["Recall@10"] <= 1.0


def test_serve_and_mcp_refuse_a_bad_key_file_naming_the_line(
    tmp_path, capsys, monkeypatch, corpus_build, corpus_settings
):
    index_dir = str(corpus_settings.index_dir)
    keys = tmp_path / "keys"
    keys.write_text("read reader-key\nadmin root-key\n")
    monkeypatch.setenv("SEMQA_API_KEY_FILE", str(keys))
    # semqa serve sets this for its workers; in this process it would turn /metrics of later tests'
    # apps into the (empty) multiprocess view. monkeypatch removes it again.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    assert main(["serve", "--index-dir", index_dir, "--port", "0"]) == 1  # before gunicorn starts
    assert (
        f"semqa serve: {keys}, line 2: expected '<key>', 'read <key>' or 'write <key>'"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("SEMQA_READ_REQUIRES_KEY", "true")
    assert main(["mcp", "--http", "--index-dir", index_dir]) == 1
    assert f"{keys}, line 2" in capsys.readouterr().err
    keys.unlink()
    assert main(["serve", "--index-dir", index_dir, "--port", "0"]) == 1
    assert "cannot read the key file" in capsys.readouterr().err
