"""Dense search: one FAISS *base* per index generation, plus the passages written since, in memory.

A ``DenseBase`` is an immutable FAISS index over the passages of a generation, addressed by position
0..n-1: no ``IDMap`` (whose id map lives in each process's memory and which broke IVF on
``remove_ids`` + ``add_with_ids``); the chunk id of each position is kept in ``ids.npy`` beside it, and
both are memory-mapped, so the workers of one server share their pages. Its kind (exact, HNSW, IVF)
comes from the FAISS factory string; ``auto`` picks exact search over float16 vectors below
``EXACT_BELOW`` passages and HNSW above (measured: ``bench/segments.py``, BENCHMARKS.md).

A ``DenseIndex`` is a base plus what was written after it, as in Lucene: small exact *segments* of added
vectors and a mask of deleted positions. ``add`` and ``delete`` return a new ``DenseIndex`` sharing
everything unchanged (no write ever touches the base), so a search in flight keeps the index it
started with. Compaction (``indexer/compact.py``) folds the segments into a new base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexer.lexical import TIE_MARGIN

AUTO = "auto"
EXACT_BELOW = 50_000  # passages; exact float32 search above this cost more than ~5 ms a question here
# (measured before the float16 base, which halves it; the threshold was not measured again)
# Exact search reads every vector for every question, so its time is the memory it reads: float16 halves
# it (SciFact's 18,086 vectors, one search 1.43 -> 0.77 ms) for scores within 5e-5 of float32's, the same
# top 10 for 300 of 300 SciFact questions (BENCHMARKS.md "A float16 exact base").
AUTO_EXACT = "SQfp16"
AUTO_APPROXIMATE = "HNSW32"
INDEX_FILE = "dense.faiss"
IDS_FILE = "ids.npy"
PARAMS_FILE = "dense.json"
EXACT_FILTER = 4096  # a filter allowing at most this many base passages is scored exactly, not searched
MERGE_SEGMENTS = 8  # in-memory segments merged into one beyond this many
TRAIN_SAMPLE = 200_000  # vectors an IVF quantizer is trained on at most

Kind = Literal["exact", "hnsw", "ivf", "other"]


@dataclass(frozen=True)
class SearchEffort:
    """How hard approximate bases search: HNSW's ``efSearch``, IVF's ``nprobe`` (exact ignores both); and
    on how many OpenMP threads one search runs."""

    # 512: recall@10 0.966 of exact search at 1M passages, 0.9995 at 100k; 128 gave 0.86-0.92 at 1M (BENCHMARKS.md)
    ef_search: int = 512
    nprobe: int = 32
    # One: a single question searched on OpenMP's default (every core) took 4x as long here (exact search
    # over 18k SciFact passages, 5.4 ms against 1.4 ms, in a server thread); concurrency comes from requests.
    threads: int = 1


DEFAULT_EFFORT = SearchEffort()


def resolve_factory(factory: str, count: int) -> str:
    """The FAISS factory string a base of ``count`` passages is built with (``auto`` resolved)."""
    if factory != AUTO:
        return factory
    return AUTO_EXACT if count < EXACT_BELOW else AUTO_APPROXIMATE


def _kind(index: Any) -> Kind:
    import faiss

    if isinstance(index, faiss.IndexFlat):
        return "exact"
    if isinstance(index, faiss.IndexScalarQuantizer) and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        return "exact"  # every vector scored, in float16 (scores within 5e-5); SQ8 and the like are lossy
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return "other"
    return "ivf"


class _IdLookup:
    """Row of each chunk id in an array of unique ids, by binary search over a sorted copy."""

    def __init__(self, ids: np.ndarray) -> None:
        self._order = np.argsort(ids, kind="stable")
        self._sorted = np.asarray(ids)[self._order]

    def rows(self, chunk_ids: np.ndarray) -> np.ndarray:
        """The row of each chunk id, -1 where it is absent."""
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        if not len(self._sorted):
            return np.full(len(chunk_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, chunk_ids), len(self._sorted) - 1)
        return np.where(self._sorted[at] == chunk_ids, self._order[at], -1).astype(np.int64)


def bitmap(mask: np.ndarray) -> np.ndarray:
    """A boolean mask over positions as the little-endian bit array ``faiss.IDSelectorBitmap`` reads."""
    return np.packbits(mask, bitorder="little")


class DenseBase:
    """An immutable inner-product FAISS index over unit vectors, positions mapped to chunk ids."""

    def __init__(self, index: Any, ids: np.ndarray, factory: str) -> None:
        self.index = index
        self.ids = ids  # chunk id of each position
        self.factory = factory
        self.kind = _kind(index)
        self._lookup = _IdLookup(ids)
        if self.kind == "ivf" and len(ids):
            import faiss

            faiss.extract_index_ivf(index).make_direct_map()  # so that vectors can be read back

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, factory: str) -> DenseBase:
        """A base over ``vectors`` (unit, float32) with chunk ``ids``; ``factory`` may be ``auto``."""
        import faiss

        resolved = resolve_factory(factory, len(vectors))
        dimension = vectors.shape[1]
        try:
            index = faiss.index_factory(dimension, resolved, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"invalid FAISS factory string {resolved!r}: {exc}") from exc
        if not index.is_trained:
            sample = vectors
            if len(vectors) > TRAIN_SAMPLE:
                rows = np.random.default_rng(0).choice(len(vectors), TRAIN_SAMPLE, replace=False)
                sample = vectors[np.sort(rows)]
            try:
                index.train(sample)
            except RuntimeError as exc:
                raise ValueError(
                    f"FAISS factory {resolved!r} cannot be trained on {len(sample)} vectors ({exc}); "
                    "use Flat or auto for a corpus this small"
                ) from exc
        if len(vectors):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, np.asarray(ids, dtype=np.int64), resolved)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    def save(self, directory: Path) -> list[Path]:
        """Write the index and its ids into ``directory``; returns the files written."""
        import faiss

        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        np.save(directory / IDS_FILE, self.ids, allow_pickle=False)
        (directory / PARAMS_FILE).write_text(json.dumps({"factory": self.factory, "kind": self.kind}))
        return [directory / INDEX_FILE, directory / IDS_FILE, directory / PARAMS_FILE]

    @classmethod
    def open(cls, directory: Path) -> DenseBase:
        """Open a saved base, memory-mapped where FAISS can (flat, HNSW and IVF-flat storage)."""
        import faiss

        params = json.loads((directory / PARAMS_FILE).read_text())
        try:
            index = faiss.read_index(str(directory / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError:
            index = faiss.read_index(str(directory / INDEX_FILE))
        ids = np.load(directory / IDS_FILE, mmap_mode="r", allow_pickle=False)
        if index.ntotal != len(ids):
            raise ValueError(f"{directory / INDEX_FILE} holds {index.ntotal} vectors for {len(ids)} ids")
        return cls(index, ids, params["factory"])

    def positions(self, chunk_ids: np.ndarray) -> np.ndarray:
        """The position of each chunk id, -1 where the base does not hold it."""
        return self._lookup.rows(chunk_ids)

    def reconstruct(self, positions: np.ndarray) -> np.ndarray:
        if not len(positions):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.index.reconstruct_batch(np.ascontiguousarray(positions, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, effort: SearchEffort
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the ``k`` nearest vectors per query; ``allowed`` (positions as packed
        bits, see ``bitmap``; None for all) applies inside the search. Missing results are position -1."""
        import faiss

        k = min(k, self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        # ``allowed`` stays referenced until the search returns: the selector only points at it.
        selector = None if allowed is None else faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(allowed))
        if self.kind == "hnsw":
            params: Any = faiss.SearchParametersHNSW(sel=selector, efSearch=max(effort.ef_search, k))
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=effort.nprobe)
        else:
            params = None if selector is None else faiss.SearchParameters(sel=selector)
        # OpenMP keeps its thread count per calling thread (``omp_set_num_threads`` changes the caller's
        # own setting only), so it is set here, on the thread that searches, for this search alone: set
        # once at load, it held for the loading thread and not for the server's request threads.
        prior = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(effort.threads)
        try:
            scores, positions = self.index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(prior)
        return positions, scores


@dataclass(frozen=True)
class _Segment:
    """Vectors added after the base, searched exactly; ``alive`` masks the ones deleted since."""

    ids: np.ndarray
    vectors: np.ndarray
    alive: np.ndarray
    lookup: _IdLookup

    @classmethod
    def of(cls, ids: np.ndarray, vectors: np.ndarray) -> _Segment:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(ids, vectors, np.ones(len(ids), dtype=bool), _IdLookup(ids))

    @property
    def live(self) -> int:
        return int(self.alive.sum())


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of a flat list of candidates, best first, equal scores by chunk id: which of equal
    vectors (duplicate passages) make the cut must not depend on where they are stored, which differs
    between two builds of the same passages. Every candidate scoring as the ``k``-th does is kept to choose
    from; the base, which cuts where FAISS does, is asked for ``TIE_MARGIN`` more than ``k`` for the same
    reason."""
    if len(ids) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th best score
        keep = scores >= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


class DenseIndex:
    """A base and the segments written after it: the dense side of one view of the index.

    Immutable: ``add`` and ``delete`` return a new index. Chunk ids are unique among live vectors.
    """

    def __init__(
        self,
        base: DenseBase,
        base_alive: np.ndarray | None = None,
        segments: tuple[_Segment, ...] = (),
        effort: SearchEffort = DEFAULT_EFFORT,
    ) -> None:
        self.base = base
        self.base_alive = base_alive  # None: every base position is live
        self._alive_bits = None if base_alive is None else bitmap(base_alive)  # packed once per index
        self.segments = segments
        self.effort = effort

    @classmethod
    def build(
        cls, vectors: np.ndarray, ids: Sequence[int] | np.ndarray, factory: str = AUTO, **kwargs: Any
    ) -> DenseIndex:
        return cls(DenseBase.build(vectors, np.asarray(ids, dtype=np.int64), factory), **kwargs)

    @classmethod
    def open(cls, directory: Path, effort: SearchEffort = DEFAULT_EFFORT) -> DenseIndex:
        return cls(DenseBase.open(directory), effort=effort)

    def save(self, directory: Path, factory: str = AUTO) -> list[Path]:
        """Write every live vector as one new base (what compaction does)."""
        ids, vectors = self.live()
        return DenseBase.build(vectors, ids, factory).save(directory)

    @property
    def count(self) -> int:
        base = self.base.count if self.base_alive is None else int(self.base_alive.sum())
        return base + sum(s.live for s in self.segments)

    @property
    def written(self) -> int:
        """Live vectors held outside the base (what compaction would fold in)."""
        return sum(s.live for s in self.segments)

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live chunk id and its vector (base first, then segments)."""
        positions = np.arange(self.base.count) if self.base_alive is None else np.flatnonzero(self.base_alive)
        ids = [np.asarray(self.base.ids)[positions]] + [s.ids[s.alive] for s in self.segments]
        vectors = [self.base.reconstruct(positions)] + [s.vectors[s.alive] for s in self.segments]
        return np.concatenate(ids), np.concatenate(vectors).astype(np.float32)

    def delete(self, ids: Sequence[int] | np.ndarray) -> DenseIndex:
        """Without the live vectors of ``ids`` (ids not held are ignored)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return self
        segments = tuple(
            replace(s, alive=s.alive & ~hit) if (hit := np.isin(s.ids, ids) & s.alive).any() else s
            for s in self.segments
        )
        positions = self.base.positions(ids)
        positions = positions[positions >= 0]
        base_alive = self.base_alive
        if len(positions):
            base_alive = np.ones(self.base.count, dtype=bool) if base_alive is None else base_alive.copy()
            base_alive[positions] = False
        return DenseIndex(self.base, base_alive, segments, self.effort)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> DenseIndex:
        """With ``vectors`` under ``ids``, which must not be live already (delete them first)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return self
        segments = (*self.segments, _Segment.of(ids, vectors))
        if len(segments) > MERGE_SEGMENTS:  # keep per-query work small: one matrix per few writes
            segments = (
                _Segment.of(
                    np.concatenate([s.ids[s.alive] for s in segments]),
                    np.concatenate([s.vectors[s.alive] for s in segments]),
                ),
            )
        return DenseIndex(self.base, self.base_alive, segments, self.effort)

    def base_rows(self, ids: np.ndarray) -> np.ndarray:
        """The base position of each chunk id live in the base, -1 for the others (written since the base,
        deleted, or unknown)."""
        positions = self.base.positions(np.asarray(ids, dtype=np.int64))
        if self.base_alive is not None:
            positions = np.where(positions >= 0, np.where(self.base_alive[positions], positions, -1), -1)
        return positions

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The live vector of each chunk id (zeros for an id not held)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.base.dimension), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        for segment in self.segments:  # a live id is live in one place only
            rows = segment.lookup.rows(ids)
            hit = rows >= 0
            hit[hit] = segment.alive[rows[hit]]
            out[hit], found[hit] = segment.vectors[rows[hit]], True
        positions = self.base_rows(ids)
        take = (positions >= 0) & ~found
        out[take] = self.base.reconstruct(positions[take])
        return out

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the chunk ids and inner products of its ``k`` nearest live vectors, best first;
        ``allowed`` (chunk ids) restricts the search before ranking, so ``k`` results still come back
        when that many allowed vectors exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        found = [[] for _ in queries]  # type: list[list[tuple[np.ndarray, np.ndarray]]]
        for query_found, hit in zip(found, self._search_base(queries, k, allowed), strict=True):
            query_found.append(hit)
        for segment in self.segments:
            mask = segment.alive if allowed is None else segment.alive & np.isin(segment.ids, allowed)
            if not mask.any():
                continue
            scores = queries @ segment.vectors[mask].T
            for query_found, row in zip(found, scores, strict=True):
                query_found.append((segment.ids[mask], row))
        results = []
        for query_found in found:
            ids = np.concatenate([i for i, _ in query_found]) if query_found else np.zeros(0, np.int64)
            scores = np.concatenate([s for _, s in query_found]) if query_found else np.zeros(0, np.float32)
            results.append(_top(ids, scores.astype(np.float32), k))
        return results

    def _search_base(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        base = self.base
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if not base.count:
            return [empty for _ in queries]
        bits = self._alive_bits
        if allowed is not None:
            positions = base.positions(np.asarray(allowed, dtype=np.int64))
            positions = positions[positions >= 0]
            if self.base_alive is not None:
                positions = positions[self.base_alive[positions]]
            if len(positions) <= EXACT_FILTER:  # a small filter: score its vectors, no index walk
                if not len(positions):
                    return [empty for _ in queries]
                scores = queries @ base.reconstruct(positions).T
                ids = np.asarray(base.ids)[positions]
                return [_top(ids, row, k) for row in scores]
            mask = np.zeros(base.count, dtype=bool)
            mask[positions] = True
            bits = bitmap(mask)
        positions, scores = base.search(queries, k + TIE_MARGIN, bits, self.effort)
        ids = np.asarray(base.ids)
        return [(ids[p[p >= 0]], s[p >= 0]) for p, s in zip(positions, scores, strict=True)]
