"""The lexical index: BM25 (bm25s) over stemmed, stop-word-filtered tokens, saved as .npy + JSON.

Documents and questions go through the same analyzer (lower-case, word tokens, English stop words,
Snowball stemming), so a question in ordinary English matches text that was stemmed before it reached
us (the white paper): stemming an already-stemmed word leaves it as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IDS_FILE = "ids.npy"
PARAMS_FILE = "params.index.json"  # written by bm25s.BM25.save
BM25_K1, BM25_B = 1.2, 0.75  # Lucene's defaults; k1 0.9 / b 0.4 measured no better (BENCHMARKS.md)
# Words of one character count too ("chang e 4", "tianlian 1"): bm25s' default pattern drops them.
TOKEN_PATTERN = r"(?u)\b\w+\b"


def _bm25s():  # type: ignore[no-untyped-def]
    """bm25s, imported on first use; it sets its own logger to DEBUG on import, which we turn down."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class Analyzer:
    """Text to BM25 terms. A stemmer is made per call: PyStemmer objects are not safe to share between threads."""

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        import Stemmer

        return _bm25s().tokenize(
            list(texts),
            token_pattern=TOKEN_PATTERN,
            stopwords="en",
            stemmer=Stemmer.Stemmer("english"),
            return_ids=False,
            show_progress=False,
        )


class LexicalIndex:
    """BM25 over chunks, addressed by our chunk ids."""

    def __init__(self, bm25: object | None, ids: np.ndarray) -> None:
        self._bm25 = bm25  # None when no passage has a single term (an empty index, or only stop words)
        self.ids = ids
        self._row_of = {int(chunk_id): row for row, chunk_id in enumerate(ids)}
        self.analyze = Analyzer()

    @classmethod
    def build(
        cls, texts: Sequence[str], ids: Sequence[int], k1: float = BM25_K1, b: float = BM25_B
    ) -> LexicalIndex:
        tokens = Analyzer()(texts)
        bm25 = None
        if any(tokens):  # bm25s cannot index an empty vocabulary
            bm25 = _bm25s().BM25(k1=k1, b=b, method="lucene")
            bm25.index(tokens, show_progress=False)
        return cls(bm25, np.asarray(ids, dtype=np.int64))

    def save(self, directory: Path) -> list[Path]:
        """Write the index into ``directory``; returns the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        if self._bm25 is not None:
            self._bm25.save(str(directory), show_progress=False)  # type: ignore[attr-defined]
        np.save(directory / IDS_FILE, self.ids, allow_pickle=False)
        return sorted(p for p in directory.iterdir() if p.is_file())

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        bm25 = None
        if (directory / PARAMS_FILE).exists():
            bm25 = _bm25s().BM25.load(str(directory), mmap=False, show_progress=False, verbosity=0)
        return cls(bm25, np.load(directory / IDS_FILE, allow_pickle=False))

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, question: str) -> np.ndarray:
        """BM25 score of every chunk (row order of ``ids``) for ``question``."""
        terms = self.analyze([question])[0]
        if not terms or self._bm25 is None:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(terms), dtype=np.float32)  # type: ignore[attr-defined]

    def idf(self, terms: Sequence[str]) -> dict[str, float]:
        """Lucene's BM25 idf of each analysed term over the chunks (0 for a term no chunk has).

        Document frequencies are the column lengths of bm25s' term-by-document CSC score matrix.
        """
        bm25 = self._bm25
        if bm25 is None:
            return dict.fromkeys(terms, 0.0)
        indptr, n = bm25.scores["indptr"], bm25.scores["num_docs"]  # type: ignore[attr-defined]
        out: dict[str, float] = {}
        for term in terms:
            column = bm25.vocab_dict.get(term)  # type: ignore[attr-defined]
            df = 0 if column is None else int(indptr[column + 1] - indptr[column])
            out[term] = float(np.log(1 + (n - df + 0.5) / (df + 0.5))) if df else 0.0
        return out

    def rows(self, chunk_ids: Sequence[int]) -> np.ndarray:
        return np.array([self._row_of[int(i)] for i in chunk_ids], dtype=np.int64)
