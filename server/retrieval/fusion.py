"""Score fusion for hybrid retrieval: pure functions from per-candidate dense and lexical scores to one score.

Both retrievers propose candidates; every candidate then has both scores (cosine from the FAISS vectors,
BM25 from the lexical index), so fusion never has to guess a missing score. Methods, picked by name:

- ``rrf``: reciprocal rank fusion, sum of 1 / (60 + rank) over the two rankings (rank-only, robust).
- ``minmax``: ``alpha * dense' + (1 - alpha) * lexical'`` with each score min-max scaled over the candidates.
- ``zscore``: the same combination with each score standardised (mean 0, standard deviation 1).
"""

from __future__ import annotations

import numpy as np

from semqa.settings import FUSIONS

RRF_K = 60


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, best first."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def _minmax(scores: np.ndarray) -> np.ndarray:
    span = float(scores.max() - scores.min()) if len(scores) else 0.0
    return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)


def zscore(scores: np.ndarray) -> np.ndarray:
    std = float(scores.std()) if len(scores) else 0.0
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def fuse(dense: np.ndarray, lexical: np.ndarray, method: str = "zscore", alpha: float = 0.5) -> np.ndarray:
    """One fused score per candidate (higher is better). ``alpha`` weighs the dense side."""
    dense = np.asarray(dense, dtype=np.float64)
    lexical = np.asarray(lexical, dtype=np.float64)
    if method == "rrf":
        return alpha * 2 / (RRF_K + _ranks(dense)) + (1 - alpha) * 2 / (RRF_K + _ranks(lexical))
    if method == "minmax":
        return alpha * _minmax(dense) + (1 - alpha) * _minmax(lexical)
    if method == "zscore":
        return alpha * zscore(dense) + (1 - alpha) * zscore(lexical)
    raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
