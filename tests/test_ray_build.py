"""The Ray build (``semqa index --engine ray``) on a real local Ray instance with 2 CPUs: the index equals a
single-process build's (passage ids, offsets, texts, vectors, spans, skipped files and their messages, answers
to the dev questions); killed midway it leaves the served index untouched, and a re-run reuses its shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import requests

from embeddings import EmbeddingCache, load_encoder
from embeddings.backends import backend_setting
from indexer import ChunkingConfig, CorpusError, IndexReader, build_index
from indexer.documents import Document
from indexer.generation import GENERATIONS
from indexer.layout import CURRENT, STORE
from indexer.ray_build import RayOptions, build_index_with_ray, provenance, shard_key
from indexer.store import LIVE, Store
from semqa.evaluation import read_questions
from semqa.launch import running_server
from server.retrieval import Searcher, SearchOptions
from tests.conftest import CORPUS, DATA, REPO
from tests.pdfgen import write_pdf

SHARD_CHARS = 3000  # small shards: several per run, so both actors work and a kill finds some done
# The development questions when the shared folder is beside the repository, else the sample in tests/data
# (a fresh clone elsewhere).
DEV_QUESTIONS = REPO.parent / "shared" / "eval" / "dev_questions.tsv"
QUESTIONS = DEV_QUESTIONS if DEV_QUESTIONS.is_file() else DATA / "questions_sample.tsv"


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus and one file of every other format, a JSONL with a bad line and an empty document, and
    two files that cannot be read."""
    root = tmp_path_factory.mktemp("ray-docs")
    shutil.copytree(CORPUS, root, dirs_exist_ok=True)
    (root / "reports").mkdir()
    write_pdf(
        root / "reports" / "mission.pdf",
        ["The lander touched down in the crater.", "The rover drove two kilometres."],
        title="Mission report",
    )
    (root / "reports" / "briefing.html").write_text(
        "<html><head><title>Briefing</title></head><body><p>The orbiter relays data to Earth.</p></body></html>"
    )
    records = [
        {
            "id": "notes/1",
            "title": "Fuel",
            "text": "The upper stage burns liquid hydrogen.",
            "metadata": {"n": 1},
        },
        "{not json",
        {"id": "notes/2", "text": "   "},
    ]
    (root / "notes.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    return root


def single_process_build(docs: Path, index_dir: Path, encoder, cache_dir: Path):
    report = build_index(
        [docs],
        index_dir=index_dir,
        encoder=encoder,
        chunking=ChunkingConfig(),
        cache=EmbeddingCache(cache_dir, encoder),
    )
    return index_dir, report


@pytest.fixture(scope="module")
def local_build(docs, tmp_path_factory, encoder, cache_dir):
    return single_process_build(docs, tmp_path_factory.mktemp("local-index"), encoder, cache_dir)


def contents(index_dir: Path) -> dict:
    """Everything an index holds that a build decides: documents, chunks, spans, vectors (live rows)."""
    store = Store(index_dir / STORE)
    live = {"s": store.latest()}
    with closing(sqlite3.connect(index_dir / STORE)) as db:
        documents = db.execute(
            f"SELECT id, title, text, metadata, source, chunk_count FROM documents WHERE {LIVE} ORDER BY id",
            live,
        ).fetchall()
        rows = db.execute(
            'SELECT id, document_id, title, start, "end", text, metadata, vector, span_offsets, span_vectors '
            f"FROM chunks WHERE {LIVE} ORDER BY document_id, start",
            live,
        ).fetchall()
    return {
        "documents": documents,
        "chunks": [r[:7] for r in rows],
        "span_offsets": [np.frombuffer(r[8], np.int32).tolist() for r in rows],
        "span_vectors": np.concatenate([np.frombuffer(r[9], np.float16) for r in rows]).astype(np.float32),
        "vectors": np.stack([np.frombuffer(r[7], np.float32) for r in rows]),
    }


def assert_same_index(actual: Path, expected: Path) -> None:
    a, b = contents(actual), contents(expected)
    assert a["documents"] == b["documents"]  # ids, titles, texts, metadata, chunk counts, sources
    assert a["chunks"] == b["chunks"]  # passage ids, offsets, texts, page metadata, in the same order
    assert a["span_offsets"] == b["span_offsets"]
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5, rtol=0)
    # Span vectors are stored as float16: a 1e-7 difference can round to neighbouring halves.
    np.testing.assert_allclose(a["span_vectors"], b["span_vectors"], atol=2e-3, rtol=0)


def ray_build(
    docs: Path, index_dir: Path, cache_dir: Path, encoder, *, use_cache: bool, exports: Path | None = None
):
    """``exports``: where the actors find the ONNX exports (the cache folder unless given)."""
    return build_index_with_ray(
        [docs],
        index_dir=index_dir,
        encoder=encoder,
        load_encoder=partial(
            load_encoder, "", "", 1, backend=backend_setting(encoder.backend), cache_dir=exports or cache_dir
        ),
        chunking=ChunkingConfig(),
        options=RayOptions(shard_chars=SHARD_CHARS),
        cache_dir=cache_dir,
        use_cache=use_cache,
    )


def answers(index_dir: Path, encoder) -> list[tuple[int, str]]:
    questions = read_questions(QUESTIONS)
    reader = IndexReader(
        index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension, backend=encoder.backend
    )
    results = Searcher(encoder, reader).search_batch([q.question for q in questions], 1, SearchOptions())
    return [(p[0].chunk.chunk_id, p[0].highlight.text) for p in results]


@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_ray_build_equals_the_single_process_build(
    docs, local_build, ray_address, encoder, int8_encoder, onnx_cache, backend, tmp_path
):
    """With torch, and with int8, the default of a new index: each text is embedded alone, so an actor's
    vector for a passage is the single process's whatever else the two embedded beside it."""
    if backend == "torch":
        local_dir, local_report = local_build
    else:
        encoder = int8_encoder
        local_dir, local_report = single_process_build(docs, tmp_path / "local", encoder, tmp_path / "c1")
    result = ray_build(
        docs, tmp_path / "index", tmp_path / "cache", encoder, use_cache=False, exports=onnx_cache
    )
    report = result.build
    assert result.shards >= 3 and result.shards_reused == 0
    assert report.embedded == report.chunks == local_report.chunks  # embedded by the actors, no cache
    assert_same_index(tmp_path / "index", local_dir)
    skipped = [(s.source, s.reason) for s in report.skipped]
    assert skipped == [(s.source, s.reason) for s in local_report.skipped]
    assert {Path(s.split(":")[0]).name for s, _ in skipped} == {"broken.pdf", "latin1.txt", "notes.jsonl"}
    ours, theirs = answers(tmp_path / "index", encoder), answers(local_dir, encoder)
    assert len(ours) == len(read_questions(QUESTIONS)) >= 5
    assert ours == theirs  # the same top passage and highlight for every question


def test_duplicate_ids_are_refused_as_in_a_local_build(tmp_path, ray_address, encoder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.jsonl").write_text('{"id": "same", "text": "one"}\n')
    (docs / "b.jsonl").write_text('{"id": "same", "text": "two"}\n')
    with pytest.raises(CorpusError) as local:
        build_index([docs], index_dir=tmp_path / "i1", encoder=encoder, chunking=ChunkingConfig())
    with pytest.raises(CorpusError) as distributed:
        ray_build(docs, tmp_path / "i2", tmp_path / "cache", encoder, use_cache=True)
    assert str(distributed.value) == str(local.value) and "a.jsonl:1" in str(local.value)
    assert not (tmp_path / "i2" / CURRENT).exists()


def published(index_dir: Path) -> tuple[str, list[str]]:
    generations = sorted(p.name for p in (index_dir / GENERATIONS).iterdir() if not p.name.startswith("."))
    return (index_dir / CURRENT).read_text(), generations


def test_killed_midway_leaves_the_served_index_and_a_rerun_reuses_shards(
    docs, local_build, ray_address, encoder, tmp_path
):
    local_dir, local_report = local_build
    index_dir = tmp_path / "index"
    shutil.copytree(local_dir, index_dir)  # a served index, which the killed build must leave as it is
    before = published(index_dir)
    cache = tmp_path / "cache"  # fresh: the killed run really embeds
    command = [
        sys.executable, "-m", "semqa.cli", "index", str(docs), "--engine", "ray", "--ray-address", ray_address,
        "--index-dir", str(index_dir), "--cache-dir", str(cache), "--ray-shard-chars", str(SHARD_CHARS), "--quiet",
        "--backend", "torch",  # as the in-process re-run below: shards are keyed by backend
    ]  # fmt: skip
    log = (tmp_path / "killed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(cache.glob("ray-shards/*/*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "killed.log").read_text()
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert published(index_dir) == before  # nothing published, the served version untouched
    done = len(list(cache.glob("ray-shards/*/*.parquet")))
    assert done >= 1

    rerun = ray_build(docs, index_dir, cache, encoder, use_cache=True)  # in process: one model load less
    # Every shard finished before the kill is reused (the kill may even come after the last one, before
    # publishing); what was not finished comes from the embedding cache where the killed run reached it.
    assert rerun.shards_reused >= done
    assert rerun.build.embedded < local_report.chunks  # finished shards and the cache were not embedded again
    assert published(index_dir) != before
    assert_same_index(index_dir, local_dir)
    # Served over HTTP, the Ray-built index gives the single-process build's answers.
    questions = read_questions(QUESTIONS)[:5]
    expected = answers(local_dir, encoder)[:5]
    env = {"SEMQA_CACHE_DIR": str(cache), "SEMQA_QUIET": "1"}
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        for question, (chunk_id, highlight) in zip(questions, expected, strict=True):
            body = {"question": question.question, "top_k": 1}
            top = requests.post(server.url + "/ask", json=body, timeout=30).json()["passages"][0]
            assert (int(top["chunk_id"]), top["highlight"]["text"]) == (chunk_id, highlight)


def test_index_flags_reach_the_settings():
    from semqa.cli import build_parser, settings_from_args

    args = build_parser().parse_args(
        ["index", "--engine", "ray", "--ray-address", "auto", "--ray-num-gpus", "2", "--ray-workers", "3"]
    )
    settings = settings_from_args(args)
    assert (settings.engine, settings.ray_address, settings.ray_num_gpus, settings.ray_workers) == (
        "ray",
        "auto",
        2,
        3,
    )
    assert settings_from_args(build_parser().parse_args(["index"])).engine == "local"


def test_an_actor_with_other_weights_refuses_naming_its_node(encoder):
    """What each actor checks after loading its model (in process here: the class is plain Python), and
    how the driver turns the error Ray wraps back into ours."""
    from embeddings import ModelError
    from indexer.ray_build import ShardEmbedder, _cluster_error

    with pytest.raises(
        ModelError, match=f"on node {os.uname().nodename} has weights {encoder.weights_sha256[:12]}"
    ):
        ShardEmbedder(lambda: encoder, "0" * 64, ChunkingConfig(), "", 32)
    wrapped = RuntimeError(
        "ray::MapWorker.__init__()\n  ...\nembeddings.model.ModelError: the model on node n1 differs"
    )
    error = _cluster_error(wrapped)
    assert isinstance(error, ModelError) and str(error) == "the model on node n1 differs"


def test_gpu_actors_build_float32_and_refuse_an_int8_index(tmp_path, capsys):
    """GPU actors run torch on CUDA (onnxruntime runs on the CPU here): ``auto`` builds a new index with
    torch then, and an int8 index or backend is refused before Ray starts (nothing here needs a GPU)."""
    from semqa.cli import main
    from semqa.settings import Settings
    from server.retrieval.load import configured_backend

    assert configured_backend(Settings(), tmp_path / "new", new_index="torch") == "torch"
    assert configured_backend(Settings(), tmp_path / "new") == "onnx-int8"
    command = ["index", str(CORPUS), "--engine", "ray", "--ray-num-gpus", "1", "--backend", "onnx-int8"]
    assert main([*command, "--index-dir", str(tmp_path / "index"), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "GPU actors run torch" in error and "--backend torch" in error
    assert not (tmp_path / "index" / CURRENT).exists()


def test_shards_record_and_are_named_by_the_int8_recipe():
    """A rerun reuses a finished shard only if it would make the same one: after the int8 export's recipe
    changes, shards of the old recipe are made again rather than imported as today's vectors."""
    from types import SimpleNamespace

    from embeddings.onnx_export import INT8_FORMAT

    int8 = SimpleNamespace(name="m", weights_sha256="sha", dimension=384, backend="onnx-int8-avx512_vnni")
    made = provenance(int8, ChunkingConfig())  # type: ignore[arg-type]
    assert made.int8_format == INT8_FORMAT
    documents = [Document("a.txt", "One document.")]
    assert shard_key(documents, made) != shard_key(documents, replace(made, int8_format=INT8_FORMAT - 1))
    float32 = provenance(
        SimpleNamespace(name="m", weights_sha256="sha", dimension=384, backend="onnx"), ChunkingConfig()
    )  # type: ignore[arg-type]
    assert float32.int8_format is None
