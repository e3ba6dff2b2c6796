"""The index directory: manifest checks, atomic versions, corruption detection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from indexer import ChunkingConfig, IndexLoadError, build_index, load_version
from indexer import store as store_module
from indexer.store import CURRENT, VERSIONS, current_version_dir


@pytest.fixture()
def small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(
        "The Long March 5 rocket lifted off from Wenchang. It carried a probe to Mars."
    )
    (corpus / "b.txt").write_text("Tiangong is China's space station. Three astronauts live aboard.")
    return corpus


def build(corpus: Path, index_dir: Path, encoder, **kwargs):
    return build_index([corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig(), **kwargs)


def load(index_dir: Path, encoder):
    return load_version(index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)


def test_manifest_records_the_build(small_corpus, tmp_path, encoder):
    report = build(small_corpus, tmp_path / "index", encoder)
    manifest = json.loads((report.version_dir / "manifest.json").read_text())
    assert manifest["model_name"] == "all-MiniLM-L6-v2"
    assert manifest["model_sha256"] == encoder.weights_sha256
    assert manifest["dimension"] == 384
    assert manifest["document_count"] == 2 and manifest["chunk_count"] == report.chunks
    assert manifest["chunking"] == {"chunk_tokens": 128, "overlap": 32, "embed_title": True}
    assert len(manifest["corpus_fingerprint"]) == 64 and manifest["built_at"]
    assert {"dense.faiss", "chunks.sqlite", "lexical/ids.npy", "lexical/vocab.index.json"} <= set(
        manifest["files"]
    )
    for name, meta in manifest["files"].items():
        assert (report.version_dir / name).stat().st_size == meta["bytes"]
    version = load(tmp_path / "index", encoder)
    assert version.dense.ntotal == report.chunks


def test_fingerprint_changes_with_content(small_corpus, tmp_path, encoder):
    first = build(small_corpus, tmp_path / "index", encoder)
    (small_corpus / "b.txt").write_text("Tiangong is China's space station. Two astronauts live aboard.")
    second = build(small_corpus, tmp_path / "index", encoder)
    fp = [
        json.loads((r.version_dir / "manifest.json").read_text())["corpus_fingerprint"]
        for r in (first, second)
    ]
    assert fp[0] != fp[1]


def test_other_model_or_dimension_is_refused(small_corpus, tmp_path, encoder):
    build(small_corpus, tmp_path / "index", encoder)
    with pytest.raises(IndexLoadError, match="rebuild"):
        load_version(tmp_path / "index", model_sha256="0" * 64, dimension=encoder.dimension)
    with pytest.raises(IndexLoadError, match="dimension 768"):
        load_version(tmp_path / "index", model_sha256=encoder.weights_sha256, dimension=768)


def test_no_index_is_a_clear_error(tmp_path, encoder):
    with pytest.raises(IndexLoadError, match="semqa index"):
        load(tmp_path / "empty", encoder)


@pytest.mark.parametrize(
    "name", ["dense.faiss", "chunks.sqlite", "manifest.json", "lexical/data.csc.index.npy"]
)
@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_files_are_refused_naming_the_file(small_corpus, tmp_path, encoder, name, damage):
    report = build(small_corpus, tmp_path / "index", encoder)
    target = report.version_dir / name
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        target.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )
    with pytest.raises(IndexLoadError) as info:
        load(tmp_path / "index", encoder)
    assert name in str(info.value)


def test_a_failed_build_leaves_the_previous_version_current(small_corpus, tmp_path, encoder, monkeypatch):
    index_dir = tmp_path / "index"
    good = build(small_corpus, index_dir, encoder)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    (small_corpus / "c.txt").write_text("A third document that never lands.")
    monkeypatch.setattr(store_module, "write_chunk_store", crash)
    with pytest.raises(OSError, match="disk full"):
        build(small_corpus, index_dir, encoder)
    assert current_version_dir(index_dir) == good.version_dir
    assert load(index_dir, encoder).manifest.document_count == 2
    assert not list((index_dir / VERSIONS).glob(".tmp-*"))


def test_leftovers_of_a_killed_build_are_never_loaded_and_are_cleaned(small_corpus, tmp_path, encoder):
    index_dir = tmp_path / "index"
    good = build(small_corpus, index_dir, encoder)
    stale = index_dir / VERSIONS / ".tmp-killed"
    stale.mkdir()
    (stale / "dense.faiss").write_bytes(b"half")
    assert load(index_dir, encoder).path == good.version_dir
    build(small_corpus, index_dir, encoder)
    assert not stale.exists()


def test_current_pointer_is_replaced_atomically_and_old_versions_pruned(small_corpus, tmp_path, encoder):
    index_dir = tmp_path / "index"
    reports = [build(small_corpus, index_dir, encoder) for _ in range(5)]
    assert (index_dir / CURRENT).read_text().strip() == reports[-1].version_dir.name
    kept = sorted(p.name for p in (index_dir / VERSIONS).iterdir())
    assert kept == sorted(r.version_dir.name for r in reports[-store_module.KEEP_VERSIONS :])
    assert not [p for p in os.listdir(index_dir) if p.startswith(".CURRENT")]


def test_faiss_factory_is_a_setting(small_corpus, tmp_path, encoder):
    import faiss

    report = build(small_corpus, tmp_path / "index", encoder, faiss_factory="HNSW16")
    version = load(tmp_path / "index", encoder)
    assert isinstance(faiss.downcast_index(version.dense.index), faiss.IndexHNSWFlat)
    assert version.dense.ntotal == report.chunks
    vector = encoder.encode(["space station astronauts"])
    _, ids = version.dense.search(vector, 1)
    assert version.store.chunks([int(ids[0][0])])[int(ids[0][0])].document_id == "b.txt"
    with pytest.raises(ValueError, match="FAISS factory"):
        build(small_corpus, tmp_path / "index2", encoder, faiss_factory="NotAnIndex")


def test_embeddings_are_cached_by_text(small_corpus, tmp_path, encoder):
    from embeddings import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache", encoder)
    first = build(small_corpus, tmp_path / "index", encoder, cache=cache)
    assert first.embedded == first.chunks
    (small_corpus / "c.txt").write_text("A new document about the Chang'e 5 lunar sample return.")
    second = build(small_corpus, tmp_path / "index", encoder, cache=cache)
    assert second.embedded == 1  # only the new chunk was computed
    texts = ["Wentian is a lab module. It docked in July.", "Cakes need flour."]
    spans = [[(0, 24), (25, 43)], [(0, 17)]]
    cached, span_vectors, computed = cache.encode(texts, spans)
    assert computed == 2 and [v.shape for v in span_vectors] == [(2, 384), (1, 384)]
    again, span_again, computed = cache.encode(texts, spans)
    assert computed == 0
    assert np.allclose(cached, encoder.encode(texts), atol=1e-5) and np.array_equal(cached, again)
    assert all(np.array_equal(a, b) for a, b in zip(span_vectors, span_again, strict=True))
    _, _, computed = cache.encode(texts[:1], [[(0, 43)]])  # other spans of the same text: computed anew
    assert computed == 1


def test_ivf_indexes_serve_hybrid_queries(small_corpus, tmp_path, encoder):
    from server.retrieval import Searcher, SearchOptions

    build(small_corpus, tmp_path / "index", encoder, faiss_factory="IVF1,Flat")
    searcher = Searcher(encoder, load(tmp_path / "index", encoder))
    top = searcher.search("space station astronauts", 1, SearchOptions(mode="hybrid"))[0]
    assert top.chunk.document_id == "b.txt" and top.dense_score > 0
    with pytest.raises(ValueError, match="cannot be trained"):
        build(small_corpus, tmp_path / "index3", encoder, faiss_factory="IVF64,Flat")
