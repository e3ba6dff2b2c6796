"""Builds and the index directory: what a build records, what a rebuild keeps, atomic generations,
corruption detection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from indexer import (
    API_SOURCE,
    ChunkingConfig,
    Document,
    IndexLoadError,
    IndexReader,
    build_index,
    check_index,
)
from indexer import build as build_module
from indexer.chunking import chunk_document
from indexer.generation import GENERATIONS, MANIFEST, current_path
from indexer.layout import CURRENT, STORE
from indexer.passages import prepare_upserts
from indexer.store import Delete, Store, float32_rows
from indexer.writer import Writer
from semqa.cli import _print_report
from server.retrieval import Searcher, SearchOptions


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


def reader(index_dir: Path, encoder) -> IndexReader:
    return IndexReader(index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)


def documents_of(index_dir: Path, encoder) -> dict[str, str]:
    view = reader(index_dir, encoder).view
    return {d["id"]: view.store.document(d["id"])["text"] for d in view.store.list_documents(0, 100)}


def write_through_api(index_dir: Path, encoder, document: Document) -> None:
    """What the documents API commits (tests/test_documents.py covers the HTTP path)."""
    from indexer.writer import Writer

    store = Store(index_dir / STORE)
    upserts, _ = prepare_upserts([document], encoder, None, ChunkingConfig(**store.config.chunking))
    Writer(index_dir, store).submit(upserts, store.config)


def test_a_build_records_what_it_was_made_with(small_corpus, tmp_path, encoder):
    report = build(small_corpus, tmp_path / "index", encoder)
    manifest = json.loads((report.generation_dir / MANIFEST).read_text())
    assert manifest["model_sha256"] == encoder.weights_sha256 and manifest["dimension"] == 384
    assert manifest["kind"] == "exact" and manifest["factory"] == "SQfp16"  # auto, below the threshold
    assert manifest["passages"] == report.chunks and manifest["base_seq"] == 1
    assert {"dense/dense.faiss", "dense/ids.npy"} <= set(manifest["files"])
    for name, meta in manifest["files"].items():
        assert (report.generation_dir / name).stat().st_size == meta["bytes"]
    store = Store(tmp_path / "index" / STORE)
    assert store.config.chunking == {"chunk_tokens": 128, "overlap": 32, "embed_title": True}
    assert store.config.model_name == "all-MiniLM-L6-v2" and store.counts(store.latest()) == (
        2,
        report.chunks,
    )
    view = reader(tmp_path / "index", encoder).view
    assert view.dense.count == report.chunks == view.lexical.count and view.name == "0000000001"


def test_a_rebuild_changes_only_what_changed_and_keeps_api_documents(small_corpus, tmp_path, encoder):
    index_dir = tmp_path / "index"
    build(small_corpus, index_dir, encoder)
    write_through_api(
        index_dir, encoder, Document("notes/api.md", "Written through the API.", source=API_SOURCE)
    )
    write_through_api(index_dir, encoder, Document("b.txt", "An API version of b.", source=API_SOURCE))
    (small_corpus / "b.txt").write_text("Tiangong is China's space station. Two astronauts live aboard.")
    (small_corpus / "a.txt").unlink()
    (small_corpus / "c.txt").write_text("Chang'e 5 brought lunar samples back.")
    report = build(small_corpus, index_dir, encoder)
    assert report.documents == 2 and report.unchanged == 0
    docs = documents_of(index_dir, encoder)
    # a.txt left the corpus: gone; b.txt comes from its file again (the newer write); the API's own stays
    assert set(docs) == {"b.txt", "c.txt", "notes/api.md"}
    assert "Two astronauts" in docs["b.txt"]
    again = build(small_corpus, index_dir, encoder)
    assert again.unchanged == 2 and again.chunks == 0  # nothing made again
    assert documents_of(index_dir, encoder) == docs


def test_other_chunking_remakes_every_passage_api_documents_too(small_corpus, tmp_path, encoder, capsys):
    index_dir = tmp_path / "index"
    build(small_corpus, index_dir, encoder)
    long_text = " ".join(f"Sentence number {i} about the lunar base." for i in range(40))
    write_through_api(index_dir, encoder, Document("api", long_text, source=API_SOURCE))
    before = reader(index_dir, encoder).view.store.document("api")["chunks"]
    report = build_index([small_corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig(32, 8))
    store = Store(index_dir / STORE)
    assert store.config.chunking == {"chunk_tokens": 32, "overlap": 8, "embed_title": True}
    after = reader(index_dir, encoder).view.store.document("api")["chunks"]
    assert after > before
    # the API's passages count apart from the files' (the summary printed a negative "from cache" count:
    # they were embedded, but not counted among the chunks)
    assert (report.api_documents, report.api_chunks) == (1, after)
    _print_report(report)
    summary = capsys.readouterr().err
    assert f"and 1 API-written document made again into {after} chunks" in summary
    cached = int(re.search(r"(-?\d+) from cache", summary)[1])
    assert cached == report.chunks + after - report.embedded >= 0


def test_a_rebuild_that_fails_before_its_commit_leaves_the_recipe_as_it_was(
    small_corpus, tmp_path, encoder, monkeypatch
):
    # found by a crash campaign: the new chunking was recorded in a transaction of its own before the
    # passages made with it; a rebuild killed in between left the API's documents cut the old way under
    # the new recipe, and a second rebuild, seeing the recipe unchanged, never made them again
    index_dir = tmp_path / "index"
    build(small_corpus, index_dir, encoder)
    long_text = " ".join(f"Sentence number {i} about the lunar base." for i in range(40))
    write_through_api(index_dir, encoder, Document("api", long_text, source=API_SOURCE))
    other = ChunkingConfig(32, 8)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies in the middle of the commit

    with monkeypatch.context() as patched:
        patched.setattr(Store, "_apply", crash)
        with pytest.raises(KeyboardInterrupt):
            build_index([small_corpus], index_dir=index_dir, encoder=encoder, chunking=other)
    assert Store(index_dir / STORE).read_config().chunking["chunk_tokens"] == 128
    build_index([small_corpus], index_dir=index_dir, encoder=encoder, chunking=other)
    made = reader(index_dir, encoder).view.store.document("api")["chunks"]
    assert made == len(chunk_document(Document("api", long_text), encoder, other))


def test_api_writes_while_a_remake_embeds_are_kept_and_made_with_its_recipe(
    small_corpus, tmp_path, encoder, monkeypatch
):
    # found by review: a rebuild with other chunking read the API's documents before it embedded and
    # committed them after, so a write meanwhile was lost (an update), undone (a delete) or left cut the
    # old way under the new recipe (a new document)
    index_dir = tmp_path / "index"
    build(small_corpus, index_dir, encoder)

    def text(n: str) -> str:
        return " ".join(f"Sentence number {i} about base {n}." for i in range(40))

    write_through_api(index_dir, encoder, Document("api/kept", text("one"), source=API_SOURCE))
    write_through_api(index_dir, encoder, Document("api/gone", text("two"), source=API_SOURCE))
    prepare = build_module.prepare_upserts
    writes: list[str] = []

    def writes_meanwhile(*args, **kwargs):
        made = prepare(*args, **kwargs)
        if not writes:  # once, while the rebuild embeds, with the recipe the store still records
            writes.append("done")
            write_through_api(index_dir, encoder, Document("api/kept", text("three"), source=API_SOURCE))
            write_through_api(index_dir, encoder, Document("api/new", text("four"), source=API_SOURCE))
            store = Store(index_dir / STORE)
            Writer(index_dir, store).submit([Delete("api/gone")], store.config)
        return made

    monkeypatch.setattr(build_module, "prepare_upserts", writes_meanwhile)
    other = ChunkingConfig(32, 8)
    build_index([small_corpus], index_dir=index_dir, encoder=encoder, chunking=other)
    view = reader(index_dir, encoder).view
    assert view.store.document("api/gone") is None
    for doc_id, n in (("api/kept", "three"), ("api/new", "four")):
        stored = view.store.document(doc_id)
        assert stored["text"] == text(n)
        assert stored["chunks"] == len(chunk_document(Document(doc_id, text(n)), encoder, other))


def test_other_model_or_dimension_is_refused(small_corpus, tmp_path, encoder):
    build(small_corpus, tmp_path / "index", encoder)
    with pytest.raises(IndexLoadError, match="rebuild"):
        IndexReader(tmp_path / "index", model_sha256="0" * 64, dimension=encoder.dimension)
    with pytest.raises(IndexLoadError, match="dimension 768"):
        IndexReader(tmp_path / "index", model_sha256=encoder.weights_sha256, dimension=768)


def test_no_index_is_a_clear_error(tmp_path, encoder):
    with pytest.raises(IndexLoadError, match="semqa index"):
        reader(tmp_path / "empty", encoder)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        path.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )


@pytest.mark.parametrize("name", ["dense/dense.faiss", "dense/ids.npy", MANIFEST])
@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_generation_files_are_refused_naming_the_file(small_corpus, tmp_path, encoder, name, how):
    report = build(small_corpus, tmp_path / "index", encoder)
    damage(report.generation_dir / name, how)
    for check in (lambda: reader(tmp_path / "index", encoder), lambda: check_index(tmp_path / "index")):
        with pytest.raises(IndexLoadError) as info:
            check()
        assert name in str(info.value)


def test_a_damaged_store_is_refused_naming_it(small_corpus, tmp_path, encoder):
    build(small_corpus, tmp_path / "index", encoder)
    (tmp_path / "index" / STORE).write_bytes(b"not a database" * 100)
    with pytest.raises(IndexLoadError, match=STORE):
        reader(tmp_path / "index", encoder)


def test_a_failed_build_leaves_the_previous_generation_served(small_corpus, tmp_path, encoder, monkeypatch):
    index_dir = tmp_path / "index"
    good = build(small_corpus, index_dir, encoder)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    (small_corpus / "c.txt").write_text("A third document that never lands.")
    monkeypatch.setattr(build_module, "build_generation", crash)
    with pytest.raises(OSError, match="disk full"):
        build(small_corpus, index_dir, encoder)
    assert current_path(index_dir) == good.generation_dir
    assert reader(index_dir, encoder).view.store.document_count == 2
    assert not list((index_dir / GENERATIONS).glob(".tmp-*"))


def test_leftovers_of_a_killed_build_are_never_served_and_are_cleaned(small_corpus, tmp_path, encoder):
    index_dir = tmp_path / "index"
    good = build(small_corpus, index_dir, encoder)
    stale = index_dir / GENERATIONS / ".tmp-killed"
    stale.mkdir()
    (stale / "dense.faiss").write_bytes(b"half")
    assert reader(index_dir, encoder).view.generation.path == good.generation_dir
    build(small_corpus, index_dir, encoder)
    assert not stale.exists()


def test_current_is_replaced_atomically_and_old_generations_pruned(small_corpus, tmp_path, encoder):
    index_dir = tmp_path / "index"
    reports = [build(small_corpus, index_dir, encoder) for _ in range(4)]
    assert (index_dir / CURRENT).read_text().strip() == reports[-1].generation_dir.name
    kept = sorted(p.name for p in (index_dir / GENERATIONS).iterdir())
    assert kept == sorted(r.generation_dir.name for r in reports[-2:])  # the current one and the one before
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".CURRENT")]


@pytest.mark.parametrize("factory, kind", [("HNSW16", "hnsw"), ("IVF1,Flat", "ivf"), ("Flat", "exact")])
def test_faiss_factory_is_a_setting_and_every_kind_serves_hybrid(
    small_corpus, tmp_path, encoder, factory, kind
):
    build(small_corpus, tmp_path / "index", encoder, faiss_factory=factory)
    index = reader(tmp_path / "index", encoder)
    assert index.view.manifest.kind == kind
    searcher = Searcher(encoder, index)
    top = searcher.search("space station astronauts", 1, SearchOptions(mode="hybrid"))[0]
    assert top.chunk.document_id == "b.txt" and top.dense_score > 0


def test_a_bad_factory_is_a_clear_error(small_corpus, tmp_path, encoder):
    with pytest.raises(ValueError, match="FAISS factory"):
        build(small_corpus, tmp_path / "index", encoder, faiss_factory="NotAnIndex")
    with pytest.raises(ValueError, match="cannot be trained"):
        build(small_corpus, tmp_path / "index2", encoder, faiss_factory="IVF64,Flat")


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


def test_stored_float16_vectors_read_back_as_float32_rows():
    halves = np.array([[1.0, -0.0, 65504.0], [2**-24, -2.5, 0.1]], dtype=np.float16)
    rows = float32_rows([halves[0].tobytes(), halves[1].tobytes()], 3)
    assert rows.dtype == np.float32 and rows.shape == (2, 3)
    assert rows[0].tolist() == [1.0, 0.0, 65504.0] and np.signbit(rows[0, 1])  # -0.0 stays -0.0
    assert rows[1, 0] == 2**-24 and rows[1, 1] == -2.5 and rows[1, 2] == np.float32(np.float16(0.1))
    assert float32_rows([], 384).shape == (0, 384) and float32_rows([b""], 4).shape == (0, 4)
