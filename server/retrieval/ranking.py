"""Hybrid ranking: the fused dense + BM25 score plus a small linear model over more evidence.

Every candidate has both retrievers' scores, fused as before (``fusion.fuse``: z-scores, dense weight
``alpha``). To that the model adds three more signals, each standardised over the question's candidates
(so a weight means the same on any corpus):

- ``sentence``: the question's best cosine to one of the passage's stored sentence vectors (a passage whose
  best sentence matches the question strongly is a better passage than its average suggests);
- ``coverage``: the idf-weighted share of the question's terms that the passage (title + text) holds;
- ``feedback``: the passage's cosine to the mean vector of the fused ranking's top ``feedback_depth``
  (pseudo-relevance feedback: passages like the ones both retrievers agree on).

The model is a small JSON file shipped in this package (``ranker.json``; its weights and how they were
chosen are in BENCHMARKS.md). Everything here is a pure function of arrays: no model call, no I/O, no
Python loop over candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from server.retrieval.fusion import fuse, zscore

FEATURES = ("sentence", "coverage", "feedback")


@dataclass(frozen=True)
class Ranker:
    fusion: str  # how the two retrievers' scores are fused, and the dense side's weight
    alpha: float
    feedback_depth: int  # the fused ranking's top passages whose mean vector is the feedback
    weights: dict[str, float]  # weight of each standardised feature, added to the fused score

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Ranker:
        weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}  # type: ignore[call-overload]
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"ranker weights name unknown features {sorted(unknown)}; known: {FEATURES}")
        return cls(
            fusion=str(data["fusion"]),
            alpha=float(data["alpha"]),  # type: ignore[arg-type]
            feedback_depth=int(data["feedback_depth"]),  # type: ignore[call-overload]
            weights={f: weights.get(f, 0.0) for f in FEATURES},
        )

    @classmethod
    def load(cls, path: Path | None = None) -> Ranker:
        """The model in ``path``, or the one shipped with the package."""
        text = path.read_text() if path else resources.files(__package__).joinpath("ranker.json").read_text()
        return cls.from_json(json.loads(text))


def best_sentence(sentence_cosines: np.ndarray, owner: np.ndarray, passage_cosines: np.ndarray) -> np.ndarray:
    """Per passage, the best of its sentences' cosines (``owner[i]``: the passage of sentence ``i``); a
    passage with no stored sentence (unpunctuated text) keeps its own cosine."""
    best = np.full(len(passage_cosines), -np.inf)
    np.maximum.at(best, owner, sentence_cosines)
    return np.where(np.isfinite(best), best, passage_cosines)


def coverage(holds: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Per passage, the idf-weighted share of the question's terms it holds (``holds``: passages x terms)."""
    total = float(idf.sum())
    return (holds.astype(np.float64) @ idf) / total if total > 0 else np.zeros(len(holds))


def score(
    ranker: Ranker,
    dense: np.ndarray,
    lexical: np.ndarray,
    sentence: np.ndarray,
    covered: np.ndarray,
    vectors: np.ndarray,
) -> np.ndarray:
    """One score per candidate (higher is better): the fused score plus the weighted, standardised
    features. ``vectors`` are the candidates' unit passage vectors, one row each."""
    fused = fuse(dense, lexical, ranker.fusion, ranker.alpha)
    if not len(fused):
        return fused
    top = np.argsort(-fused, kind="stable")[: ranker.feedback_depth]
    vectors = np.asarray(vectors, dtype=np.float64)
    features = {"sentence": sentence, "coverage": covered, "feedback": vectors @ vectors[top].mean(axis=0)}
    for name, weight in ranker.weights.items():
        if weight:
            fused = fused + weight * zscore(np.asarray(features[name], dtype=np.float64))
    return fused
