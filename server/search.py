"""Search over a loaded index version: encode the question, ask FAISS, fetch the passages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embeddings import Encoder
from indexer import Chunk, IndexVersion


@dataclass(frozen=True)
class Passage:
    chunk: Chunk
    score: float


class Searcher:
    """Dense retrieval over one index version. Thread-safe: FAISS search and the chunk store are read-only,
    and the encoder serialises its own calls."""

    def __init__(self, encoder: Encoder, version: IndexVersion) -> None:
        self.encoder = encoder
        self.version = version

    def search(self, question: str, top_k: int = 5) -> list[Passage]:
        return self.search_batch([question], top_k)[0]

    def search_batch(self, questions: Sequence[str], top_k: int = 5) -> list[list[Passage]]:
        """The ``top_k`` best passages for each question, best first (questions embedded in one batch)."""
        vectors = self.encoder.encode(questions)
        return self.search_vectors(vectors, top_k)

    def search_vectors(self, vectors: np.ndarray, top_k: int) -> list[list[Passage]]:
        k = min(top_k, self.version.dense.ntotal)
        if k <= 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = self.version.dense.search(vectors, k)
        found = self.version.store.chunks([int(i) for i in np.unique(ids) if i >= 0])
        return [
            [Passage(found[int(i)], float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]
