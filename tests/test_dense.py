"""One suite for every dense backend (exact, HNSW, IVF, auto): build, search, writes, filters, save/open.

Every case writes and then searches, because writes are where backends differ: IVF behind an IDMap2 once
answered with the wrong chunk ids after one remove + add.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from indexer.dense import EXACT_FILTER, DenseIndex, resolve_factory

FACTORIES = ["Flat", "HNSW32", "IVF16,Flat", "auto"]
DIMENSION = 32


def unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(params=FACTORIES)
def built(request) -> tuple[DenseIndex, np.ndarray, np.ndarray]:
    vectors = unit(600, 0)
    ids = np.arange(10_000, 10_600, dtype=np.int64) * 7919  # not positions: ids must be mapped
    index = DenseIndex.build(vectors, ids, request.param)
    return index, ids, vectors


def stored_precision(index: DenseIndex) -> float:
    """How far a vector read back (or its score against itself) may be from what was written: float16
    storage (``auto``'s exact base) keeps 11 significant bits, float32 about 7 digits."""
    return 1e-3 if index.base.factory == "SQfp16" else 1e-6


def top_ids(index: DenseIndex, queries: np.ndarray, k: int = 1, allowed=None) -> list[list[int]]:
    return [list(ids) for ids, _ in index.search(queries, k, allowed)]


def test_each_vector_finds_itself_first(built):
    index, ids, vectors = built
    assert index.count == len(ids)
    assert [row[0] for row in top_ids(index, vectors[:50])] == list(ids[:50])
    found, scores = index.search(vectors[:1], 10)[0]
    assert len(found) == 10 and np.all(np.diff(scores) <= 1e-6)  # best first
    assert scores[0] == pytest.approx(1.0, abs=max(1e-5, stored_precision(index)))


def test_delete_then_add_then_search(built):
    index, ids, vectors = built
    fresh = unit(5, 1)
    written = index.delete(ids[:20]).add(np.arange(5) + 1, fresh)
    assert written.count == len(ids) - 20 + 5
    assert top_ids(written, fresh) == [[1], [2], [3], [4], [5]]
    for row in top_ids(written, vectors[:20], k=10):
        assert not set(row) & set(ids[:20])
    # the untouched ones still map to the right ids after the write (the IDMap2-over-IVF bug)
    assert [row[0] for row in top_ids(written, vectors[20:60])] == list(ids[20:60])
    assert index.count == len(ids)  # the original is unchanged: writes return a new index


def test_replacing_an_id_serves_the_new_vector(built):
    index, ids, vectors = built
    replacement = unit(1, 2)
    written = index.delete(ids[:1]).add(ids[:1], replacement)
    assert top_ids(written, replacement) == [[ids[0]]]
    assert np.allclose(written.vectors(ids[:1]), replacement)
    found = top_ids(written, vectors[:1], k=5)[0]
    assert ids[0] not in found  # the old vector is gone


def test_vectors_reads_back_live_vectors_and_zeros_for_the_rest(built):
    index, ids, vectors = built
    written = index.delete(ids[3:4]).add([42], unit(1, 3))
    got = written.vectors(np.array([ids[0], ids[3], 42, 99], dtype=np.int64))
    assert np.allclose(got[0], vectors[0], atol=stored_precision(index))
    assert not got[1].any() and not got[3].any()
    assert np.allclose(got[2], unit(1, 3)[0])


@pytest.mark.parametrize("allowed_count", [8, EXACT_FILTER + 100])
def test_filters_apply_before_ranking_and_top_k_holds(allowed_count):
    vectors = unit(EXACT_FILTER + 600, 4)
    ids = np.arange(len(vectors), dtype=np.int64) + 1
    for factory in FACTORIES:
        index = DenseIndex.build(vectors, ids, factory).delete(ids[:2]).add([-5], unit(1, 5))
        allowed = np.concatenate([ids[:allowed_count], [-5]])
        for found, _ in index.search(vectors[-3:], 5, allowed=allowed):
            assert len(found) == 5, factory  # the far-away allowed ones still come back
            assert set(found) <= set(allowed) - set(ids[:2]), factory
    assert index.search(vectors[:1], 5, allowed=np.array([123456789]))[0][0].size == 0


class _RecordingThreads:
    """A FAISS index that notes how many OpenMP threads each search was given."""

    def __init__(self, index) -> None:
        self.index = index
        self.threads: list[int] = []

    def search(self, *args, **kwargs):
        import faiss

        self.threads.append(faiss.omp_get_max_threads())
        return self.index.search(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.index, name)


def test_a_search_runs_on_its_own_thread_count_from_any_thread(built):
    """OpenMP's thread count belongs to each calling thread: a server's request threads are not the thread
    that loaded the index, and once searched on every core (4x slower for one question here)."""
    import faiss

    index, _, vectors = built
    recording = _RecordingThreads(index.base.index)
    index.base.index = recording
    after: list[int] = []

    def request_thread() -> None:
        faiss.omp_set_num_threads(2)  # a fresh thread's default on a machine of two cores or more
        index.search(vectors[:1], 5)
        after.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=request_thread)
    worker.start()
    worker.join()
    assert recording.threads == [1]  # SearchEffort.threads, one by default
    assert after == [2]  # the thread's own setting is left as it was


def test_save_and_open_keep_every_live_vector(built, tmp_path: Path):
    index, ids, vectors = built
    written = index.delete(ids[:10]).add([7, 8], unit(2, 6))
    written.save(tmp_path / "base", factory=index.base.factory)
    reopened = DenseIndex.open(tmp_path / "base")
    assert reopened.count == written.count and reopened.written == 0
    assert top_ids(reopened, unit(2, 6)) == [[7], [8]]
    assert [row[0] for row in top_ids(reopened, vectors[10:40])] == list(ids[10:40])


def test_many_small_writes_are_merged_into_few_segments(built):
    index, _, _ = built
    for i in range(30):
        index = index.add([i + 1], unit(1, 100 + i))
    assert len(index.segments) <= 9 and index.written == 30
    assert top_ids(index, unit(1, 129)) == [[30]]


def test_auto_is_exact_for_small_corpora_and_approximate_for_large():
    assert resolve_factory("auto", 1000) == "SQfp16"
    assert resolve_factory("auto", 10_000_000) == "HNSW32"
    assert resolve_factory("IVF64,Flat", 10) == "IVF64,Flat"


def test_a_bad_factory_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid FAISS factory"):
        DenseIndex.build(unit(10, 7), np.arange(10), "NotAnIndex")
    with pytest.raises(ValueError, match="cannot be trained"):
        DenseIndex.build(unit(10, 7), np.arange(10), "IVF1024,Flat")


def test_a_float16_scan_is_exact_and_a_lossy_scalar_quantiser_is_not():
    """``auto``'s float16 base scores every vector (kind "exact", what the manifest records); an 8-bit
    scalar quantiser scores every vector too but with scores far from float32's, so it is not called exact."""
    vectors, ids = unit(300, 5), np.arange(300)
    assert DenseIndex.build(vectors, ids, "auto").base.kind == "exact"
    assert DenseIndex.build(vectors, ids, "SQfp16").base.kind == "exact"
    assert DenseIndex.build(vectors, ids, "SQ8").base.kind == "other"


@pytest.mark.parametrize("factory", ["Flat", "auto"])
def test_equal_scores_at_the_cut_are_kept_by_chunk_id_wherever_they_are_stored(factory):
    same = unit(1, 3)
    vectors = np.vstack([np.repeat(same, 5, axis=0), -unit(20, 4)])  # five equal, twenty far below
    ids = np.array([40, 30, 50, 10, 20, *range(100, 120)], dtype=np.int64)  # stored out of id order
    index = DenseIndex.build(vectors, ids, factory)
    assert top_ids(index, same, k=2) == [[10, 20]]  # FAISS alone keeps the first stored: 40, 30
    other = unit(1, 5)  # and among vectors written after the base, whatever their order or number
    written = index.add(np.arange(300, 200, -1), np.repeat(other, 100, axis=0))
    assert top_ids(written, other, k=2) == [[201, 202]]
    # a small filter scores its passages exactly: all of its equals are weighed, however many
    many = DenseIndex.build(np.repeat(same, 40, axis=0), np.arange(540, 500, -1), factory)
    assert top_ids(many, same, k=3, allowed=np.arange(500, 541)) == [[501, 502, 503]]
