"""Metrics against hand-computed values, and the `semqa eval` pipeline on small data."""

from __future__ import annotations

import json
import math

import pytest
import requests

from semqa.cli import main
from semqa.evaluation import (
    Question,
    Retrieved,
    evidence_metrics,
    ndcg_at_k,
    normalise,
    read_beir,
    read_questions,
    recall_at_k,
)
from semqa.launch import running_server
from server.retrieval import Searcher
from tests.conftest import DATA


def hit(text: str, highlight: str | None = None) -> Retrieved:
    return Retrieved("d", text, highlight)


def test_a_questions_file_that_cannot_be_used_says_why(tmp_path):
    # found by probing: a file with its header alone was said to lack the columns it has
    path = tmp_path / "q.tsv"
    path.write_text("doc\tquestion\tevidence\n")
    with pytest.raises(ValueError, match="has its header but no questions"):
        read_questions(path)
    path.write_text("question\tanswer\nWhat?\tThat\n")
    with pytest.raises(ValueError, match=r"missing: evidence\)"):
        read_questions(path)
    path.write_text("question\tevidence\nWhat launched?\tA rocket\n\nA short row\n")  # line 4, after a blank
    with pytest.raises(ValueError, match="line 4: every question needs its question and evidence"):
        read_questions(path)
    path.write_text("question\tevidence\nWhat launched?\tA rocket\n")
    assert read_questions(path) == [Question("", "What launched?", "A rocket")]


def test_ndcg_matches_hand_computation():
    relevant = {"a": 1, "b": 2}
    assert ndcg_at_k(["b", "a"], relevant) == pytest.approx(1.0)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)  # a at rank 1, b at rank 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["a", "x", "b"], relevant) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["x"] * 10 + ["a"], relevant, k=10) == 0.0
    assert recall_at_k(["x", "b"], relevant, k=1) == 0.0
    assert recall_at_k(["x", "b"], relevant, k=2) == 0.5


def test_evidence_is_matched_ignoring_case_and_white_space():
    assert normalise("  The Four-day\n conference ") == "the four-day conference"
    questions = [Question("0", "q1", "four-DAY   conference"), Question("0", "q2", "absent")]

    def search(qs, k):
        return [[hit("nothing"), hit("The four-day\nconference opened")], [hit("nope")]]

    metrics = evidence_metrics(questions, search)
    assert metrics == {"questions": 2, "R@1": 0.0, "R@5": 0.5, "MRR@10": 0.25}


def test_highlight_share_counts_passages_that_hold_the_evidence():
    questions = [Question("0", "q", "four-day conference")]
    passages = [
        hit("The four-day conference opened. It rained.", "The four-day conference opened."),
        hit("A four-day conference. Then more.", "Then more."),
        hit("Unrelated text.", "Unrelated text."),
    ]
    metrics = evidence_metrics(questions, lambda qs, k: [passages])
    assert metrics["highlight"] == 0.5


def test_read_beir_layout():
    data = read_beir(DATA / "scifact_sample", "train")
    assert len(data.queries) == 12 and set(data.queries) == set(data.qrels)
    with pytest.raises(FileNotFoundError, match="queries_dev.jsonl"):
        read_beir(DATA / "scifact_sample", "dev")


def test_eval_measures_what_ask_serves(tmp_path, capsys, cache_dir, monkeypatch):
    """`semqa eval --beir` scores the ten documents a client gets from POST /ask with top_k=10 and
    group_by_document=true (so the searcher fuses the candidates it fuses for /ask), and anything deeper
    only with --deep, labelled."""
    sample = DATA / "scifact_sample"
    common = ["--cache-dir", str(cache_dir), "--quiet"]
    index_dir = tmp_path / "index"
    assert main(["index", str(sample / "corpus.jsonl"), "--index-dir", str(index_dir), *common]) == 0
    data = read_beir(sample, "train")
    served = []
    with running_server(["--index-dir", str(index_dir)], env={"SEMQA_CACHE_DIR": str(cache_dir)}) as server:
        for query_id, question in data.queries.items():
            body = {"question": question, "top_k": 10, "group_by_document": True, "mode": "hybrid"}
            answer = requests.post(server.url + "/ask", json=body, timeout=60).json()
            ranked = [p["document_id"] for p in answer["passages"]]
            served.append(ndcg_at_k(ranked, data.qrels[query_id], 10))
    asked: list[tuple[int, bool]] = []
    search_batch = Searcher.search_batch

    def spy(self, questions, top_k=5, options=None, vectors=None):  # type: ignore[no-untyped-def]
        asked.append((top_k, options.group_by_document))
        return search_batch(self, questions, top_k, options, vectors)

    monkeypatch.setattr(Searcher, "search_batch", spy)
    beir = ["eval", "--beir", str(sample), "--split", "train", "--mode", "hybrid", "--json", *common]
    assert main(beir) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(asked) == {(10, True)} and set(result) == {"settings", "beir:scifact_sample/train/hybrid"}
    assert result["beir:scifact_sample/train/hybrid"]["nDCG@10"] == pytest.approx(sum(served) / len(served))
    asked.clear()
    assert main([*beir, "--deep"]) == 0
    deep = json.loads(capsys.readouterr().out)["beir:scifact_sample/train/hybrid/top_k=100"]
    assert set(asked) == {(10, True), (100, True)} and deep["top_k"] == 100 and "Recall@100" in deep
