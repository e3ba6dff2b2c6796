"""The index engine: group commit, views, recovery after a crash, compaction (also killed mid-way and with
writes arriving meanwhile), approximate bases against exact search, the generation's evidence files."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests

from indexer import API_SOURCE, ChunkingConfig, Document, IndexLoadError, IndexReader, build_index
from indexer import compact as compact_module
from indexer import writer as writer_module
from indexer.compact import compact
from indexer.evidence import PassageEvidence, write_evidence
from indexer.generation import GENERATIONS, MANIFEST, current_name
from indexer.layout import STORE, writer_lock
from indexer.passages import prepare_upserts
from indexer.store import Delete, Passage, Store, Upsert
from indexer.writer import NotSearchable, Writer, recover_index
from semqa.launch import running_server
from server.retrieval import Searcher, SearchOptions
from tests.conftest import CORPUS, DATA, copy_index


@pytest.fixture()
def index_dir(tmp_path, corpus_build, corpus_settings) -> Path:
    """A private copy of the session's corpus index."""
    target = tmp_path / "index"
    copy_index(corpus_settings.index_dir, target)
    return target


def open_reader(index_dir: Path, encoder) -> IndexReader:
    return IndexReader(index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)


def upserts(encoder, store: Store, *documents: Document) -> list[Upsert]:
    made, _ = prepare_upserts(list(documents), encoder, None, ChunkingConfig(**store.config.chunking))
    return made


def note(i: int) -> Document:
    return Document(
        f"notes/{i}", f"Note {i}: the Tianzhou {i} cargo ship docked with Tiangong.", source=API_SOURCE
    )


def finds(reader: IndexReader, encoder, question: str, document_id: str, mode: str) -> bool:
    passages = Searcher(encoder, reader).search(question, 3, SearchOptions(mode=mode))  # type: ignore[arg-type]
    return document_id in {p.chunk.document_id for p in passages}


def test_concurrent_writes_share_commits(index_dir, encoder):
    store = Store(index_dir / STORE)
    writer = Writer(index_dir, store)
    prepared = [upserts(encoder, store, note(i)) for i in range(8)]
    before = store.latest()
    results: list = []
    with writer_lock(index_dir):  # hold the lock as a commit in another process would: writes pile up
        threads = [
            threading.Thread(target=lambda u=u: results.append(writer.submit(u, store.config)))
            for u in prepared
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8 and all(r.outcomes == ["changed"] for r in results)
    assert store.latest() - before <= 2  # one leader went first at most; the other seven shared a commit
    reader = open_reader(index_dir, encoder)
    assert reader.view.store.document_count == 5 + 8
    assert finds(reader, encoder, "Which cargo ship is number 7?", "notes/7", "lexical")


def _grouped_with_a_bad_write(index_dir: Path, encoder) -> dict[int, object]:
    """Three good writes and one that cannot be stored (metadata JSON cannot hold), the last three sharing
    a commit: the first leader waits for the held lock while the others pile up behind it."""
    store = Store(index_dir / STORE)
    writer = Writer(index_dir, store)
    bad = replace(note(100), metadata={"not json": object()})
    prepared = [upserts(encoder, store, note(i)) for i in range(3)] + [upserts(encoder, store, bad)]
    results: dict[int, object] = {}

    def submit(n: int) -> None:
        try:
            results[n] = writer.submit(prepared[n], store.config)
        except Exception as exc:  # noqa: BLE001 (each write's own error)
            results[n] = exc

    with writer_lock(index_dir):
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_write_that_cannot_be_stored_fails_alone_not_the_writes_beside_it(index_dir, encoder, caplog):
    # Writes arriving together share one commit: one that could not be stored (found by probing: metadata
    # nested too deep for JSON) failed every write of the group. Now each is committed alone then.
    results = _grouped_with_a_bad_write(index_dir, encoder)
    assert "a commit of 3 writes failed: committing each alone" in caplog.text  # they were grouped
    assert isinstance(results[3], TypeError)
    assert all(results[n].outcomes == ["changed"] for n in range(3))
    reader = open_reader(index_dir, encoder)
    assert reader.view.store.document_count == 5 + 3 and reader.view.store.document("notes/100") is None
    assert finds(reader, encoder, "Which cargo ship is number 2?", "notes/2", "lexical")


def test_a_write_that_failed_alone_is_not_told_it_was_stored(index_dir, encoder, caplog, monkeypatch):
    # when the lexical index then cannot be updated, the stored writes hear "durable, not searchable yet";
    # the write that failed keeps its own error (it heard "committed" too, and would not have resent it)
    calls, apply_lexical = [], writer_module.apply_lexical

    def failing_apply(*args: object) -> None:
        calls.append(args)
        if len(calls) > 1:  # the first commit (the first write alone) applies; the group's does not
            raise OSError("disk full")
        apply_lexical(*args)

    monkeypatch.setattr(writer_module, "apply_lexical", failing_apply)
    results = _grouped_with_a_bad_write(index_dir, encoder)
    assert "a commit of 3 writes failed: committing each alone" in caplog.text
    assert isinstance(results[3], TypeError)
    assert all(isinstance(results[n], NotSearchable) for n in (1, 2)), results


def test_a_new_generation_made_with_another_backend_is_not_served(index_dir, encoder):
    # found by probing: `semqa index --backend onnx` over an int8 index while serving switched the server to
    # vectors its questions' encoder does not match (and every write then failed with 503), while /ready
    # said nothing. The new generation is refused as a server's start refuses it: the last view stays
    # and the refresh reports why (/ready's reload_error).
    reader = open_reader(index_dir, encoder)
    before = reader.view
    store = Store(index_dir / STORE)
    other = "onnx-int8" if encoder.backend != "onnx-int8" else "torch"
    store.commit([], config=replace(store.config, backend=other))
    compact(index_dir)  # a new generation of the store as it now says it was made
    with pytest.raises(IndexLoadError, match=f"built with encoder backend {other}"):
        reader.refresh()
    assert reader.view is before


def test_a_view_never_changes_under_a_request(index_dir, encoder):
    reader = open_reader(index_dir, encoder)
    store = reader.store
    before = reader.view
    Writer(index_dir, store).submit(
        [*upserts(encoder, store, note(1)), Delete("000_de246961d5590b13.txt")], store.config
    )
    assert before.store.document("notes/1") is None and before.store.document("000_de246961d5590b13.txt")
    assert reader.refresh() is True
    after = reader.view
    assert after.store.document("notes/1") and after.store.document("000_de246961d5590b13.txt") is None
    assert after.dense.count == after.lexical.count == after.store.chunk_count != before.store.chunk_count


def test_a_commit_whose_lexical_side_was_never_applied_is_invisible_until_recovered(index_dir, encoder):
    """A crash right after the store commit: durable, not yet searchable, and caught up later."""
    store = Store(index_dir / STORE)
    with writer_lock(index_dir):
        store.commit(upserts(encoder, store, note(42)))  # and then the process "dies"
    reader = open_reader(index_dir, encoder)
    assert reader.view.store.document("notes/42") is None  # neither side serves a half-applied write
    for mode in ("dense", "lexical"):
        assert not finds(reader, encoder, "Which cargo ship is number 42?", "notes/42", mode)
    recover_index(index_dir)
    assert reader.refresh() is True
    for mode in ("dense", "lexical", "hybrid"):
        assert finds(reader, encoder, "Which cargo ship is number 42?", "notes/42", mode)


def test_a_server_started_after_a_crash_catches_the_index_up(index_dir, encoder, corpus_settings):
    store = Store(index_dir / STORE)
    with writer_lock(index_dir):
        store.commit(upserts(encoder, store, note(7)))
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)}
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        body = requests.post(
            server.url + "/ask", json={"question": "Which cargo ship is number 7?", "top_k": 1}, timeout=30
        ).json()
    assert body["passages"][0]["document_id"] == "notes/7"


def test_compaction_folds_written_passages_in_and_answers_the_same(index_dir, encoder):
    reader = open_reader(index_dir, encoder)
    store = reader.store
    writer = Writer(index_dir, store)
    for i in range(6):
        writer.submit(upserts(encoder, store, note(i)), store.config)
    writer.submit([Delete("notes/0"), Delete("001_c76768aa996baf89.txt")], store.config)
    reader.refresh()
    assert reader.view.dense.written == 5
    questions = ["Which cargo ship is number 3?", "Where is the 2020 China Space Conference held?"]
    searcher = Searcher(encoder, reader)
    before = [[p.chunk.chunk_id for p in searcher.search(q, 5)] for q in questions]
    report = compact(index_dir)
    assert report.folded == 5 and report.passages == reader.view.store.chunk_count
    assert reader.refresh() is True
    view = reader.view
    assert (
        view.generation.name == report.generation
        and view.dense.written == 0
        and view.dense.base_alive is None
    )
    # The same answers; lower down, BM25 statistics may move a little: until a merge, deleted passages
    # still count in tantivy's document frequencies (as in Lucene), and after it they do not.
    assert [[p.chunk.chunk_id for p in searcher.search(q, 5)][:3] for q in questions] == [
        b[:3] for b in before
    ]
    assert view.lexical.count == view.store.chunk_count  # the deleted ones are gone from tantivy too
    again = compact(index_dir)  # rows deleted before the replaced generation's base are purged now
    assert again.purged > 0 and again.folded == 0
    assert sorted(p.name for p in (index_dir / GENERATIONS).iterdir()) == sorted(
        [report.generation, again.generation]
    )


def test_writes_committed_during_a_compaction_are_kept(index_dir, encoder, monkeypatch):
    store = Store(index_dir / STORE)
    writer = Writer(index_dir, store)
    original = compact_module.build_generation

    def build_then_write(*args, **kwargs):
        tmp = original(*args, **kwargs)
        # the service keeps taking writes while the new generation is being built
        writer.submit([*upserts(encoder, store, note(99)), Delete("002_353dd3b29b1f0b6d.txt")], store.config)
        return tmp

    monkeypatch.setattr(compact_module, "build_generation", build_then_write)
    report = compact(index_dir)
    assert report.seq == report.base_seq + 1
    reader = open_reader(index_dir, encoder)
    assert reader.view.generation.name == report.generation
    for mode in ("dense", "lexical"):
        assert finds(reader, encoder, "Which cargo ship is number 99?", "notes/99", mode)
    assert reader.view.store.document("002_353dd3b29b1f0b6d.txt") is None
    assert not finds(
        reader, encoder, "Who attended the preparatory meeting?", "002_353dd3b29b1f0b6d.txt", "lexical"
    )


def synthetic_index(index_dir: Path, encoder, passages: int, factory: str) -> None:
    """An index of ``passages`` short passages with random unit vectors (fast to make: no model)."""
    build_index(
        [CORPUS], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig(), faiss_factory=factory
    )
    store = Store(index_dir / STORE)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((passages, encoder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    from indexer.chunking import chunk_id
    from indexer.documents import Chunk

    changes = []
    for i in range(passages):
        text = f"Synthetic passage {i} about orbit {i % 97}."
        chunk = Chunk(chunk_id(f"s{i}", 0, len(text)), f"s{i}", "", 0, len(text), text)
        changes.append(Upsert(Document(f"s{i}", text, source=API_SOURCE), [Passage(chunk, vectors[i])]))
    with writer_lock(index_dir):
        store.commit(changes)


def test_a_compaction_killed_mid_way_loses_nothing(tmp_path, encoder):
    index_dir = tmp_path / "index"
    synthetic_index(index_dir, encoder, 8_000, "HNSW32")
    recover_index(index_dir)
    served = current_name(index_dir)
    command = [
        sys.executable,
        "-m",
        "semqa.cli",
        "compact",
        "--index-dir",
        str(index_dir),
        "--faiss-factory",
        "HNSW32",
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((index_dir / GENERATIONS).glob(".tmp-*/dense")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # kill -9 while the new base is being built
    process.wait()
    assert current_name(index_dir) == served
    reader = open_reader(index_dir, encoder)
    assert reader.view.store.document_count == 5 + 8_000
    assert reader.view.dense.written == 8_000  # every written passage still served, from the store
    store = reader.store
    Writer(index_dir, store).submit(upserts(encoder, store, note(5)), store.config)  # writes still work
    report = compact(index_dir, "HNSW32")  # the next compaction cleans up and succeeds
    assert not list((index_dir / GENERATIONS).glob(".tmp-*"))
    assert report.passages == reader.view.store.chunk_count + 1
    reader.refresh()
    assert finds(reader, encoder, "Which cargo ship is number 5?", "notes/5", "hybrid")


@pytest.mark.parametrize("factory", ["HNSW32", "IVF8,Flat"])
def test_an_approximate_base_answers_like_exact_search(tmp_path, encoder, cache_dir, factory):
    from embeddings import EmbeddingCache
    from semqa.evaluation import read_questions

    questions = [q.question for q in read_questions(DATA / "questions_sample.tsv")]
    tops = {}
    for name in ("Flat", factory):
        build_index(
            [CORPUS],
            index_dir=tmp_path / name,
            encoder=encoder,
            chunking=ChunkingConfig(),
            faiss_factory=name,
            cache=EmbeddingCache(cache_dir, encoder),
        )
        searcher = Searcher(encoder, open_reader(tmp_path / name, encoder))
        tops[name] = [searcher.search(q, 1, SearchOptions(mode="dense"))[0].chunk.chunk_id for q in questions]
    assert tops[factory] == tops["Flat"]


def test_an_automatic_compaction_starts_after_enough_writes(index_dir, corpus_settings):
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": "k",
        "SEMQA_COMPACT_AFTER": "3",
        "SEMQA_RELOAD_INTERVAL": "0.2",
    }
    served = current_name(index_dir)
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        for i in range(4):
            document = {"id": f"auto/{i}", "text": f"Automatic note {i}: Shenzhou {i} returned to Dongfeng."}
            response = requests.post(
                server.url + "/documents",
                json={"documents": [document]},
                headers={"Authorization": "Bearer k"},
                timeout=60,
            )
            assert response.status_code == 200
        deadline = time.monotonic() + 60
        while current_name(index_dir) == served:
            assert time.monotonic() < deadline, "no compaction started"
            time.sleep(0.2)
        time.sleep(1)  # the worker switches to the new generation
        body = requests.post(
            server.url + "/ask", json={"question": "Which Shenzhou is number 3?", "top_k": 1}, timeout=30
        ).json()
    assert body["passages"][0]["document_id"] == "auto/3"


def assert_evidence_as_stored(view, ids: np.ndarray) -> None:
    """The view's evidence and spans (evidence files where they hold a passage) equal the store's own."""
    evidence, stored = view.evidence(ids), view.store.evidence(ids)
    assert evidence.terms == stored.terms
    for row in range(len(ids)):  # the store's rows and the files' may come in another order
        mine, theirs = evidence.owners == row, stored.owners == row
        assert np.array_equal(evidence.vectors[mine], stored.vectors[theirs])
        assert np.array_equal(evidence.spans[mine], stored.spans[theirs])
    # the highlights' sentences, per passage, as the store has them
    spans, stored_spans = evidence.sentences(ids.tolist()), stored.sentences(ids.tolist())
    assert spans.keys() == stored_spans.keys()
    for chunk_id, (offsets, sentence_vectors) in spans.items():
        assert offsets == stored_spans[chunk_id][0]
        assert np.array_equal(sentence_vectors, stored_spans[chunk_id][1])


def test_evidence_files_answer_as_the_store_before_and_after_writes(index_dir, encoder):
    reader = open_reader(index_dir, encoder)
    view = reader.view
    assert view.generation.evidence is not None
    ids = np.sort(view.dense.live()[0])
    assert_evidence_as_stored(view, ids)
    store = reader.store
    writer = Writer(index_dir, store)
    replaced = "000_de246961d5590b13.txt"  # its passages die in the base and live again in a segment
    writer.submit(upserts(encoder, store, note(1), note(2)), store.config)
    writer.submit(
        upserts(
            encoder, store, note(3), Document(replaced, "The conference moved to Wuhan. It lasts a week.")
        ),
        store.config,
    )
    writer.submit([Delete("notes/2"), Delete("001_c76768aa996baf89.txt")], store.config)
    # the same passages made again (same chunk ids, new rows): the base's rows die, the segment's live
    kept = "002_353dd3b29b1f0b6d.txt"
    stored = view.store.document(kept)
    again = Document(kept, stored["text"], stored["title"], stored["metadata"], source=API_SOURCE)
    writer.submit([replace(u, force=True) for u in upserts(encoder, store, again)], store.config)
    reader.refresh()
    view = reader.view
    ids = np.sort(view.dense.live()[0])
    from_files = view.dense.base_rows(ids) >= 0
    assert from_files.any() and not from_files.all()  # both sources in one answer
    kept_ids = view.store.chunk_ids_of([kept])
    assert len(kept_ids) and (view.dense.base.positions(kept_ids) >= 0).all()  # the ids are in the base
    assert not (view.dense.base_rows(kept_ids) >= 0).any()  # but read from the store
    assert_evidence_as_stored(view, ids)
    assert_evidence_as_stored(view, ids[::7])


def test_a_generation_without_evidence_files_reads_the_store(index_dir, encoder):
    questions = ["How long does the 4th China Space Science Conference last?", "Which satellites relay data?"]
    before = [Searcher(encoder, open_reader(index_dir, encoder)).search(q, 5) for q in questions]
    generation = index_dir / GENERATIONS / current_name(index_dir)
    manifest = json.loads((generation / MANIFEST).read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("evidence/")}
    (generation / MANIFEST).write_text(json.dumps(manifest))
    shutil.rmtree(generation / "evidence")  # as built before evidence files
    reader = open_reader(index_dir, encoder)
    assert reader.view.generation.evidence is None
    assert [Searcher(encoder, reader).search(q, 5) for q in questions] == before


def test_a_truncated_evidence_file_is_refused(index_dir, encoder):
    generation = index_dir / GENERATIONS / current_name(index_dir)
    with (generation / "evidence" / "sentences.f16").open("r+b") as handle:
        handle.truncate(1024)
    with pytest.raises(IndexLoadError, match="sentences.f16 is missing or truncated"):
        open_reader(index_dir, encoder)


def test_evidence_must_come_in_the_base_order_and_match_its_size(tmp_path):
    rows = [(2, "b", b"", b""), (1, "a", b"", b"")]
    with pytest.raises(ValueError, match="is not the base's row 0"):
        write_evidence(tmp_path / "bad", rows, np.array([1, 2]), 4)
    write_evidence(tmp_path / "evidence", rows[::-1], np.array([1, 2]), 4)
    assert PassageEvidence(tmp_path / "evidence", 4, 2).terms(np.array([1, 0])) == ["b", "a"]
    with pytest.raises(ValueError, match="hold 2 passages, the base 3"):
        PassageEvidence(tmp_path / "evidence", 4, 3)
