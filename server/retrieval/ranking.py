"""Hybrid ranking: the fused dense + BM25 score plus a small linear model over more evidence.

Every candidate has both retrievers' scores, fused (``fusion.fuse``: z-scores) with a dense weight that
follows the question: ``alpha`` when the best BM25 passage holds all of the question's terms, rising
linearly to ``alpha_unmatched`` as the share it holds falls (``lexical_match``): a question worded like the
documents is answered by its words, one worded otherwise by its meaning. To that the model adds three more
signals, each standardised over the question's candidates (so a weight means the same on any corpus):

- ``sentence``: the question's best cosine to one of the passage's stored sentence vectors (a passage whose
  best sentence matches the question strongly is a better passage than its average suggests);
- ``coverage``: the idf-weighted share of the question's terms that the passage (title + text) holds;
- ``feedback``: the passage's cosine to the mean vector of the fused ranking's top ``feedback_depth``
  (pseudo-relevance feedback: passages like the ones both retrievers agree on). Its weight is scaled by
  the lexical match too (``scaled_by_match``): when the best BM25 passage holds few of the question's
  terms, the fused top is BM25's guess as much as the dense side's, and feeding it back amplifies it.

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
    fusion: str  # how the two retrievers' scores are fused
    alpha: float  # the dense side's weight when the best BM25 passage holds every question term
    feedback_depth: int  # the fused ranking's top passages whose mean vector is the feedback
    weights: dict[str, float]  # weight of each standardised feature, added to the fused score
    alpha_unmatched: float | None = None  # the dense weight when it holds none (None: ``alpha`` always)
    scaled_by_match: tuple[str, ...] = ()  # features whose weight is multiplied by ``lexical_match``

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Ranker:
        weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}  # type: ignore[call-overload]
        scaled = tuple(str(f) for f in data.get("scaled_by_match", ()))  # type: ignore[attr-defined]
        unknown = (set(weights) | set(scaled)) - set(FEATURES)
        if unknown:
            raise ValueError(f"ranker names unknown features {sorted(unknown)}; known: {FEATURES}")
        unmatched = data.get("alpha_unmatched")
        return cls(
            fusion=str(data["fusion"]),
            alpha=float(data["alpha"]),  # type: ignore[arg-type]
            feedback_depth=int(data["feedback_depth"]),  # type: ignore[call-overload]
            weights={f: weights.get(f, 0.0) for f in FEATURES},
            alpha_unmatched=None if unmatched is None else float(unmatched),  # type: ignore[arg-type]
            scaled_by_match=scaled,
        )

    def dense_weight(self, match: float) -> float:
        """The fusion's dense weight for a question whose best BM25 passage holds ``match`` of its terms."""
        if self.alpha_unmatched is None:
            return self.alpha
        return self.alpha + (self.alpha_unmatched - self.alpha) * (1.0 - match)

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


def lexical_match(lexical: np.ndarray, covered: np.ndarray) -> float:
    """The idf-weighted share of the question's terms that the best BM25 candidate holds (0 when no
    candidate holds any): how far the question is worded like the passages that answer it."""
    if not len(lexical) or float(np.max(lexical)) <= 0:
        return 0.0
    return float(covered[int(np.argmax(lexical))])


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
    match = lexical_match(lexical, covered)
    fused = fuse(dense, lexical, ranker.fusion, ranker.dense_weight(match))
    if not len(fused):
        return fused
    top = np.argsort(-fused, kind="stable")[: ranker.feedback_depth]
    vectors = np.asarray(vectors, dtype=np.float64)
    features = {"sentence": sentence, "coverage": covered, "feedback": vectors @ vectors[top].mean(axis=0)}
    for name, weight in ranker.weights.items():
        if name in ranker.scaled_by_match:
            weight *= match
        if weight:
            fused = fused + weight * zscore(np.asarray(features[name], dtype=np.float64))
    return fused
