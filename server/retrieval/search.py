"""Search over the current view of the index: dense (FAISS), lexical (BM25, tantivy) or hybrid (both, fused).

Every query goes through the same steps: restrict to the requested documents, collect candidates from the
retrievers the mode asks for, give every candidate both scores, rank by the mode's score, then apply
``min_score`` and ``group_by_document`` and cut to ``top_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from embeddings import Encoder
from indexer import Chunk, IndexReader, IndexView
from indexer.evidence import Evidence
from indexer.lexical import ANALYZE, analyze_cached
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
    # Per retriever, before fusion (``depth``). 50: every measured figure as with 100 or better (BENCHMARKS.md
    # "Fifty candidates per retriever"), and the ranking model reads half as many passages' evidence.
    candidates: int = 50
    # Grouped by document, how deep each retriever may be asked when the first ``depth`` passages hold
    # fewer than ``top_k`` documents (``deeper``).
    max_depth: int = 2000
    # hybrid mode: the ranking model (fusion + more evidence, server/retrieval/ranking.py); None: fusion alone
    ranker: Ranker | None = field(default_factory=Ranker.load)

    def depth(self, top_k: int, group_by_document: bool) -> int:
        """Passages each retriever proposes for ``top_k`` results: ``candidates``; grouped by document,
        twice that and at least 10 per document asked for, since passages of one document crowd the list
        (at 50 candidates, 50 dense candidates held only 4 of the corpus's 5 documents)."""
        if group_by_document:
            return max(2 * self.candidates, 10 * top_k)
        return max(self.candidates, top_k)

    def deeper(self, depth: int) -> int | None:
        """The next depth to ask the retrievers for when a grouped query's ``depth`` best passages hold
        fewer than ``top_k`` documents: four times as deep, up to ``max_depth``; None once there."""
        return min(4 * depth, self.max_depth) if depth < self.max_depth else None


class Searcher:
    """Retrieval over an ``IndexReader``'s current view. Thread-safe: views are immutable, the encoder
    is safe from several threads, and each request reads ``reader.view`` once, so a refresh in between never
    mixes two states of the index in one answer."""

    def __init__(self, encoder: Encoder, reader: IndexReader, config: RetrievalConfig | None = None) -> None:
        self.encoder = encoder
        self.reader = reader
        self.config = config or RetrievalConfig()

    @property
    def view(self) -> IndexView:
        return self.reader.view

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
        view = self.reader.view  # one view for the whole request, even if a newer one is swapped in
        if view.store.chunk_count == 0:  # every document was deleted
            return [[] for _ in questions]
        allowed = None
        if options.documents is not None:
            allowed = view.store.chunk_ids_of(list(options.documents))
            if not len(allowed):
                return [[] for _ in questions]
        depth = self.config.depth(top_k, options.group_by_document)
        documents = view.store.document_count if options.documents is None else len(set(options.documents))
        wanted = min(top_k, documents)  # a grouped answer cannot hold more documents than there are
        dense_found: list[tuple[np.ndarray, np.ndarray]] | None = None
        if options.mode != "lexical":
            if vectors is None:
                vectors = self.encoder.encode(questions)
            dense_found = view.dense.search(vectors, depth, allowed)  # (ids, scores) per question
        results = []
        for row, question in enumerate(questions):
            terms = ANALYZE([question])[0]
            idf = view.lexical.idf(terms)
            vector = None if vectors is None or dense_found is None else vectors[row]
            found = None if dense_found is None else dense_found[row][0]
            passages, more, evidence = self._ranked(view, terms, idf, vector, found, depth, top_k, options)
            # Grouped by document, a few documents can hold all of both retrievers' best passages: search
            # deeper until ``top_k`` documents are found (or as many as there are), the retrievers run out,
            # or the depth limit.
            question_depth: int | None = depth
            while more and len(passages) < wanted and (question_depth := self.config.deeper(question_depth)):
                if vector is not None:
                    found = view.dense.search(vector[None, :], question_depth, allowed)[0][0]
                passages, more, evidence = self._ranked(
                    view, terms, idf, vector, found, question_depth, top_k, options
                )
            if options.mode == "dense":  # BM25 only for what is returned: it plays no part in the ranking
                bm25 = view.lexical.scores(terms, np.array([p.chunk.chunk_id for p in passages], np.int64))
                passages = [replace(p, lexical_score=float(s)) for p, s in zip(passages, bm25, strict=True)]
            if options.highlight:
                passages = self._highlight(view, question, terms, idf, vector, passages, evidence)
            results.append(passages)
        return results

    def _ranked(
        self,
        view: IndexView,
        terms: list[str],
        idf: dict[str, float],
        vector: np.ndarray | None,
        dense_ids: np.ndarray | None,
        depth: int,
        top_k: int,
        options: SearchOptions,
    ) -> tuple[list[Passage], bool, Evidence | None]:
        """The ``top_k`` best of the retrievers' ``depth`` best candidates, whether a deeper search could
        find more for a grouped query (some retriever filled its ``depth`` and no candidate fell below
        ``min_score``), and the candidates' evidence when the ranking model read it (the highlights use it
        too). A deeper search adds passages each retriever scores lower; in hybrid mode, whose scores are
        relative to the candidates, any ``min_score`` that cuts one stops the deepening."""
        ids, candidate_vectors, lexical, full = self._candidates(
            view, terms, vector, dense_ids, depth, options
        )
        dense = np.zeros(len(ids), np.float32) if vector is None else candidate_vectors @ vector
        evidence = None
        if options.mode == "hybrid" and self.config.ranker is not None and vector is not None:
            evidence = view.evidence(ids)
            scores = model_scores(
                self.config.ranker, evidence, terms, idf, vector, candidate_vectors, dense, lexical
            )
        elif options.mode == "dense":
            scores = dense.astype(np.float64)
        elif options.mode == "lexical":
            scores = lexical.astype(np.float64)
        else:
            scores = fuse(dense, lexical, self.config.fusion, self.config.alpha)
        passages = self._rank(view, ids, scores, dense, lexical, top_k, options)
        cut = options.min_score is not None and bool((scores < options.min_score).any())
        return passages, options.group_by_document and full and not cut, evidence

    def _candidates(
        self,
        view: IndexView,
        terms: list[str],
        vector: np.ndarray | None,
        dense_ids: np.ndarray | None,
        depth: int,
        options: SearchOptions,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Candidate chunk ids, their vectors (read once: the dense score and ranking both need them; empty
        in lexical mode), their BM25 scores, and whether some retriever proposed all ``depth`` it was asked
        for (so a deeper search would find more): each retriever proposes its ``depth`` best, and the
        other's score is computed for the ones it did not propose. Dense mode proposes by dense alone and
        leaves the BM25 scores at zero: the caller scores only the passages it returns."""
        if options.mode == "dense" and dense_ids is not None:
            ids = np.sort(dense_ids)  # by chunk id, as in the other modes: equal scores rank by chunk id
            return ids, view.dense.vectors(ids), np.zeros(len(ids), np.float32), len(ids) >= depth
        lexical_ids, lexical_scores = view.lexical.search(terms, depth, options.documents)
        full = len(lexical_ids) >= depth or (dense_ids is not None and len(dense_ids) >= depth)
        # a few hundred ids at most: sets and dicts beat numpy's unique and isin at this size
        scored = dict(zip(lexical_ids.tolist(), lexical_scores.tolist(), strict=True))
        union = sorted(scored.keys() | set(() if dense_ids is None else dense_ids.tolist()))
        unscored = [i for i in union if i not in scored]
        if unscored:
            bm25 = view.lexical.scores(terms, np.array(unscored, np.int64))
            scored.update(zip(unscored, bm25.tolist(), strict=True))
        ids = np.array(union, dtype=np.int64)
        lexical = np.array([scored[i] for i in union], dtype=np.float32)
        vectors = np.zeros((0, 0), np.float32) if vector is None else view.dense.vectors(ids)
        return ids, vectors, lexical, full

    def _highlight(
        self,
        view: IndexView,
        question: str,
        terms: list[str],
        idf: dict[str, float],
        vector: np.ndarray | None,
        passages: list[Passage],
        evidence: Evidence | None,
    ) -> list[Passage]:
        """Each passage with its best span (lexical evidence only in lexical mode: no question vector), its
        sentences taken from the candidates' ``evidence`` when the ranking model read it."""
        chunk_ids = [p.chunk.chunk_id for p in passages]
        if vector is None:
            stored = {}
        else:
            read = view.evidence(np.array(chunk_ids, np.int64)) if evidence is None else evidence
            stored = read.sentences(chunk_ids)
        highlighted = []
        for p in passages:
            offsets, vectors = stored.get(p.chunk.chunk_id, ([], None))
            dense = dict(zip(offsets, (vectors @ vector).tolist(), strict=True)) if offsets else None
            span = best_span(
                p.chunk.text,
                terms,
                idf,
                analyze_cached,
                dense,
                self.config.highlight_alpha,
                p.chunk.title,
                question=question,
            )
            highlighted.append(replace(p, highlight=span))
        return highlighted

    @staticmethod
    def _best_per_document(view: IndexView, ids: np.ndarray, order: np.ndarray, top_k: int) -> np.ndarray:
        """The first of ``order`` from each document, until ``top_k`` documents: documents are looked up
        a slice of the ranking at a time, as far down as it takes (rarely past the first few slices)."""
        first: dict[str, int] = {}
        step = max(2 * top_k, 20)
        for start in range(0, len(order), step):
            part = order[start : start + step]
            document_of = view.store.document_of([int(ids[i]) for i in part])
            for i in part:
                document = document_of.get(int(ids[i]))
                if document is not None:  # a passage a newer commit replaced meanwhile
                    first.setdefault(document, int(i))
            if len(first) >= top_k:
                break
        return np.array(list(first.values()), dtype=np.int64)

    def _rank(
        self,
        view: IndexView,
        ids: np.ndarray,
        scores: np.ndarray,
        dense: np.ndarray,
        lexical: np.ndarray,
        top_k: int,
        options: SearchOptions,
    ) -> list[Passage]:
        """The ``top_k`` best candidates by ``scores`` (the mode's), after ``min_score`` and grouping."""
        if not len(ids):
            return []
        order = np.argsort(-scores, kind="stable")
        if options.min_score is not None:
            order = order[scores[order] >= options.min_score]
        if options.group_by_document:
            order = self._best_per_document(view, ids, order, top_k)
        order = order[:top_k]
        chunks = view.store.chunks([int(ids[i]) for i in order])
        return [
            Passage(
                chunks[int(ids[i])],
                float(scores[i]),
                None if options.mode == "lexical" else float(dense[i]),
                float(lexical[i]),
            )
            for i in order
            if int(ids[i]) in chunks  # a passage a newer commit replaced meanwhile is not served
        ]
