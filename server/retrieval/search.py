"""Search over a loaded index version: dense (FAISS), lexical (BM25) or hybrid (both, fused).

Every query goes through the same steps: restrict to the requested documents, collect candidates from the
retrievers the mode asks for, give every candidate both scores, rank by the mode's score, then apply
``min_score`` and ``group_by_document`` and cut to ``top_k``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from embeddings import Encoder
from indexer import Chunk, IndexVersion
from semqa.settings import Mode
from server.retrieval.evidence import model_scores
from server.retrieval.fusion import fuse
from server.retrieval.highlight import Highlight, best_span
from server.retrieval.ranking import Ranker


@dataclass(frozen=True)
class SearchOptions:
    mode: Mode = "hybrid"
    documents: Sequence[str] | None = None  # only these document ids
    group_by_document: bool = False  # at most one passage per document
    min_score: float | None = None  # drop passages scoring below this (in the mode's score)
    highlight: bool = True  # find the best span of each passage


@dataclass(frozen=True)
class Passage:
    chunk: Chunk
    score: float  # the mode's score: cosine (dense), BM25 (lexical), fused (hybrid)
    dense_score: float | None  # None in lexical mode (the question is not embedded)
    lexical_score: float
    highlight: Highlight | None = None


@dataclass(frozen=True)
class RetrievalConfig:
    fusion: str = "zscore"
    alpha: float = 0.4  # weight of the dense side in the fusion
    highlight_alpha: float = 0.7  # weight of the dense side when choosing the highlight inside a passage
    candidates: int = 100  # per retriever, before fusion
    # hybrid mode: the ranking model (fusion + more evidence, server/retrieval/ranking.py); None: fusion alone
    ranker: Ranker | None = field(default_factory=Ranker.load)


class Searcher:
    """Retrieval over the current index version. Thread-safe: FAISS, BM25 and the chunk store are
    read-only, the encoder serialises its own calls, and ``version`` may be replaced at any time (each
    request reads it once)."""

    def __init__(
        self, encoder: Encoder, version: IndexVersion, config: RetrievalConfig | None = None
    ) -> None:
        self.encoder = encoder
        self.version = version
        self.config = config or RetrievalConfig()
        self._install_lock = threading.Lock()

    def install(self, version: IndexVersion) -> bool:
        """Serve ``version`` if it is newer than the one served (version names sort by sequence), so that
        a slow load finishing late can never take the service back to an older version."""
        with self._install_lock:
            if version.name <= self.version.name:
                return False
            self.version = version
            return True

    def search(self, question: str, top_k: int = 5, options: SearchOptions | None = None) -> list[Passage]:
        return self.search_batch([question], top_k, options)[0]

    def search_queries(self, queries: Sequence[tuple[str, int, SearchOptions]]) -> list[list[Passage]]:
        """Several questions, each with its own ``top_k`` and options, embedded in one batch."""
        if not queries:
            return []
        vectors = self.encoder.encode([question for question, _, _ in queries])
        return [
            self.search_batch([question], top_k, options, vectors=vectors[row : row + 1])[0]
            for row, (question, top_k, options) in enumerate(queries)
        ]

    def search_batch(
        self,
        questions: Sequence[str],
        top_k: int = 5,
        options: SearchOptions | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[Passage]]:
        """The ``top_k`` best passages for each question, best first (questions embedded in one batch,
        unless their ``vectors`` are given)."""
        options = options or SearchOptions()
        version = self.version  # one version for the whole request, even if a newer one is swapped in
        if version.dense.ntotal == 0:  # every document was deleted
            return [[] for _ in questions]
        allowed = None
        if options.documents is not None:
            allowed = np.array(version.store.chunk_ids_of(list(options.documents)), dtype=np.int64)
            if not len(allowed):
                return [[] for _ in questions]
        depth = max(self.config.candidates, top_k * (10 if options.group_by_document else 1))
        dense_found = None
        if options.mode != "lexical":
            if vectors is None:
                vectors = self.encoder.encode(questions)
            dense_found = self._dense_candidates(version, vectors, depth, allowed)
        results = []
        for row, question in enumerate(questions):
            ids, dense, lexical = self._candidates(
                version,
                question,
                None if dense_found is None else dense_found[row],
                depth,
                options.mode,
                allowed,
            )
            scores = None
            if options.mode == "hybrid" and self.config.ranker is not None and dense_found is not None:
                # hook (issue 11): the ranking model's scores; server/retrieval/evidence.py reads its inputs
                scores = model_scores(
                    self.config.ranker, version, question, dense_found[row][0], ids, dense, lexical
                )
            passages = self._rank(version, ids, dense, lexical, top_k, options, scores)
            if options.highlight:
                passages = self._highlight(
                    version, question, None if dense_found is None else dense_found[row][0], passages
                )
            results.append(passages)
        return results

    def _dense_candidates(
        self, version: IndexVersion, vectors: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question: its vector and the ids of its ``depth`` nearest chunks (one FAISS call for all)."""
        params = None
        if allowed is not None:
            import faiss

            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        dense_index = version.dense
        _, found = dense_index.search(vectors, min(depth, dense_index.ntotal), params=params)
        return [(vector, row[row >= 0]) for vector, row in zip(vectors, found, strict=True)]

    def _candidates(
        self,
        version: IndexVersion,
        question: str,
        dense_found: tuple[np.ndarray, np.ndarray] | None,
        depth: int,
        mode: str,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate chunk ids with their dense and lexical scores."""
        lexical_index = version.lexical
        proposed: list[np.ndarray] = []
        if dense_found is not None:
            proposed.append(dense_found[1])
        all_lexical = lexical_index.scores(question)
        if allowed is not None:
            mask = np.zeros(len(all_lexical), dtype=bool)
            mask[lexical_index.rows(allowed)] = True
            all_lexical = np.where(mask, all_lexical, -np.inf)
        if mode != "dense":
            top = np.argpartition(-all_lexical, min(depth, len(all_lexical) - 1))[:depth]
            top = top[np.isfinite(all_lexical[top]) & (all_lexical[top] > 0)]
            proposed.append(lexical_index.ids[top])
        ids = np.unique(np.concatenate(proposed)) if proposed else np.zeros(0, dtype=np.int64)
        lexical = all_lexical[lexical_index.rows(ids)]
        if dense_found is not None and len(ids):
            dense = version.dense.reconstruct_batch(ids) @ dense_found[0]
        else:
            dense = np.zeros(len(ids), dtype=np.float32)
        return ids, dense, lexical

    def _highlight(
        self, version: IndexVersion, question: str, vector: np.ndarray | None, passages: list[Passage]
    ) -> list[Passage]:
        """Each passage with its best span (lexical evidence only in lexical mode: no question vector)."""
        lexical = version.lexical
        terms = lexical.analyze([question])[0]
        idf = lexical.idf(terms)
        chunk_ids = [p.chunk.chunk_id for p in passages]
        stored = {} if vector is None else version.store.spans(chunk_ids, self.encoder.dimension)
        highlighted = []
        for p in passages:
            offsets, vectors = stored.get(p.chunk.chunk_id, ([], None))
            dense = dict(zip(offsets, (vectors @ vector).tolist(), strict=True)) if offsets else None
            span = best_span(
                p.chunk.text,
                terms,
                idf,
                lexical.analyze,
                dense,
                self.config.highlight_alpha,
                p.chunk.title,
                question=question,
            )
            highlighted.append(replace(p, highlight=span))
        return highlighted

    def _rank(
        self,
        version: IndexVersion,
        ids: np.ndarray,
        dense: np.ndarray,
        lexical: np.ndarray,
        top_k: int,
        options: SearchOptions,
        scores: np.ndarray | None = None,
    ) -> list[Passage]:
        if not len(ids):
            return []
        if scores is None:  # else the ranking model's (hybrid mode)
            if options.mode == "dense":
                scores = dense.astype(np.float64)
            elif options.mode == "lexical":
                scores = lexical.astype(np.float64)
            else:
                scores = fuse(dense, lexical, self.config.fusion, self.config.alpha)
        order = np.argsort(-scores, kind="stable")
        if options.min_score is not None:
            order = order[scores[order] >= options.min_score]
        if options.group_by_document:
            document_of = version.store.document_of([int(ids[i]) for i in order])
            first: dict[str, int] = {}
            for i in order:
                first.setdefault(document_of[int(ids[i])], int(i))
            order = np.array(list(first.values()), dtype=np.int64)
        order = order[:top_k]
        chunks = version.store.chunks([int(ids[i]) for i in order])
        return [
            Passage(
                chunks[int(ids[i])],
                float(scores[i]),
                None if options.mode == "lexical" else float(dense[i]),
                float(lexical[i]),
            )
            for i in order
        ]
