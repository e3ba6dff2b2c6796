"""What the ranking model needs about a question's candidates, from their evidence (``IndexView.evidence``).

``ranking`` itself is pure arithmetic on the arrays returned here. Per candidate it needs its unit passage
vector (the dense side already read it), its stored sentence vectors and, per analysed question term,
whether the passage (title + text, as indexed) holds it: the index keeps both per passage (``terms`` and
the sentence vectors), read for all candidates at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from indexer.evidence import Evidence
from server.retrieval.ranking import Ranker, best_sentence, coverage, score


def term_holdings(
    terms_of: Mapping[int, str], ids: np.ndarray, terms: Sequence[str], idf: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(holds, idf)``: for each candidate and each distinct question term the corpus has, whether the
    passage holds it, and each term's idf."""
    kept = [t for t in dict.fromkeys(terms) if idf.get(t, 0.0) > 0]
    holds = np.zeros((len(ids), len(kept)), dtype=bool)
    if kept:
        # " term " inside " t1 t2 ... ": a substring search in C per passage and term
        padded = [f" {terms_of.get(chunk_id, '')} " for chunk_id in ids.tolist()]
        for j, term in enumerate(kept):
            needle = f" {term} "
            holds[:, j] = [needle in held for held in padded]
    return holds, np.array([idf[t] for t in kept], dtype=np.float64)


def model_scores(
    ranker: Ranker,
    evidence: Evidence,
    terms: Sequence[str],
    idf: Mapping[str, float],
    vector: np.ndarray,
    vectors: np.ndarray,
    dense: np.ndarray,
    lexical: np.ndarray,
) -> np.ndarray:
    """The ranking model's score of each candidate (hybrid mode); ``vectors`` are the candidates' own."""
    holds, term_idf = term_holdings(evidence.terms, evidence.ids, terms, idf)
    sentences = best_sentence(evidence.vectors @ vector, evidence.owners, dense)
    return score(ranker, dense, lexical, sentences, coverage(holds, term_idf), vectors)
