"""A generation's per-passage evidence in flat files read by memory map: each base passage's analysed terms
and its sentences' offsets and vectors, the same bytes as the store's rows, in the dense base's row order.

A question reads them for each of its candidates (ranking: terms and sentence vectors) and for each passage
it returns (highlight: sentence offsets and vectors). From the store that is one SQLite row per passage,
each an index descent, a table descent and an overflow page: about 0.5 ms for a question's hundred
candidates inside a server whose caches the rest of the request has cooled (BENCHMARKS.md, "Stop 23").
Here a passage's evidence is a few slices. Passages written after the base (the dense side's segments) are
read from the store, as before; ``IndexView`` puts the two together. A generation built before these files
existed has none and reads everything from the store.

Layout of ``<generation>/evidence/``::

    terms.txt             each passage's distinct analysed terms (the store's ``terms``), UTF-8, back to back
    term_starts.npy       int64, passages + 1: passage p's terms are bytes [starts[p], starts[p + 1])
    sentences.f16         each passage's sentence vectors (``span_vectors``), float16 rows, back to back
    sentence_spans.i32    each sentence's (start, end) in its passage's text (``span_offsets``), int32 pairs
    sentence_starts.npy   int64, passages + 1: passage p's sentences are rows [starts[p], starts[p + 1])
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVIDENCE_DIR = "evidence"
TERMS = "terms.txt"
TERM_STARTS = "term_starts.npy"
SENTENCES = "sentences.f16"
SENTENCE_SPANS = "sentence_spans.i32"
SENTENCE_STARTS = "sentence_starts.npy"


@dataclass(frozen=True)
class Evidence:
    """What ranking and highlights read of a question's candidates, read once for both: per passage its
    distinct analysed terms (space-separated), and all their sentences, each with the row of ``ids`` it
    belongs to, its offsets in its passage's text and its vector."""

    ids: np.ndarray  # the candidates' chunk ids
    terms: dict[int, str]
    owners: np.ndarray  # sentence -> row in ``ids``
    spans: np.ndarray  # sentence -> (start, end), int32
    vectors: np.ndarray  # sentence -> float32 vector

    def sentences(self, chunk_ids: Sequence[int]) -> dict[int, tuple[list[tuple[int, int]], np.ndarray]]:
        """The quotable sentences of some of the candidates: each one's (start, end) offsets in its text and
        their vectors."""
        row_of = {chunk_id: row for row, chunk_id in enumerate(self.ids.tolist())}
        out = {}
        for chunk_id in chunk_ids:
            held = np.flatnonzero(self.owners == row_of[chunk_id])
            out[chunk_id] = ([(s, e) for s, e in self.spans[held].tolist()], self.vectors[held])
        return out


def write_evidence(
    directory: Path, rows: Iterable[tuple[int, str, bytes, bytes]], ids: np.ndarray, dimension: int
) -> list[Path]:
    """Write the evidence of the base passages ``ids`` (in the base's row order) from the store's ``rows``
    (chunk id, terms, span offsets, span vectors), which must come in the same order; returns the files."""
    directory.mkdir(parents=True)
    expected = ids.tolist()
    term_starts = np.zeros(len(expected) + 1, np.int64)
    sentence_starts = np.zeros(len(expected) + 1, np.int64)
    row = 0
    with (
        (directory / TERMS).open("wb") as terms_file,
        (directory / SENTENCES).open("wb") as vectors_file,
        (directory / SENTENCE_SPANS).open("wb") as spans_file,
    ):
        for chunk_id, terms, spans, vectors in rows:
            if row >= len(expected) or chunk_id != expected[row]:
                raise ValueError(
                    f"passage {chunk_id} is not the base's row {row}: the store changed under the build"
                )
            sentences = len(vectors) // (2 * dimension)
            if len(spans) != 8 * sentences:
                raise ValueError(
                    f"passage {chunk_id} has {len(spans) // 8} sentence offsets for {sentences} vectors"
                )
            encoded = terms.encode()
            terms_file.write(encoded)
            vectors_file.write(vectors)
            spans_file.write(spans)
            term_starts[row + 1] = term_starts[row] + len(encoded)
            sentence_starts[row + 1] = sentence_starts[row] + sentences
            row += 1
    if row != len(expected):
        raise ValueError(f"the store holds {row} of the base's {len(expected)} passages")
    np.save(directory / TERM_STARTS, term_starts, allow_pickle=False)
    np.save(directory / SENTENCE_STARTS, sentence_starts, allow_pickle=False)
    return [directory / name for name in (TERMS, TERM_STARTS, SENTENCES, SENTENCE_SPANS, SENTENCE_STARTS)]


def _mapped(path: Path) -> mmap.mmap | bytes:
    """The file's bytes, memory-mapped (an empty file cannot be mapped: its bytes are none)."""
    with path.open("rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""


class PassageEvidence:
    """The evidence files of one generation, opened read-only; rows are the dense base's positions."""

    def __init__(self, directory: Path, dimension: int, passages: int) -> None:
        """Open the files of a base of ``passages`` passages; ``ValueError`` if they hold another count."""
        self._terms = _mapped(directory / TERMS)
        self._term_starts = np.load(directory / TERM_STARTS, mmap_mode="r", allow_pickle=False)
        self._sentence_starts = np.load(directory / SENTENCE_STARTS, mmap_mode="r", allow_pickle=False)
        if not len(self._term_starts) == len(self._sentence_starts) == passages + 1:
            raise ValueError(
                f"the evidence files hold {len(self._term_starts) - 1} passages, the base {passages}"
            )
        if int(self._term_starts[-1]) != len(self._terms):
            raise ValueError(
                f"{TERMS} holds {len(self._terms)} bytes, its offsets say {int(self._term_starts[-1])}"
            )
        sentences = int(self._sentence_starts[-1])
        self._vectors = np.frombuffer(_mapped(directory / SENTENCES), np.float16).reshape(
            sentences, dimension
        )
        self._spans = np.frombuffer(_mapped(directory / SENTENCE_SPANS), np.int32).reshape(sentences, 2)

    def terms(self, rows: np.ndarray) -> list[str]:
        """Each row's distinct analysed terms, space-separated."""
        starts, ends = self._term_starts[rows].tolist(), self._term_starts[rows + 1].tolist()
        return [self._terms[a:b].decode() for a, b in zip(starts, ends, strict=True)]

    def sentences(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(counts, spans, vectors)``: how many sentences each row has, and all their (start, end) offsets
        and float16 vectors, one row after another."""
        starts = self._sentence_starts[rows]
        counts = self._sentence_starts[rows + 1] - starts
        # positions of every wanted sentence: each row's start, then one up per sentence
        at = np.arange(int(counts.sum())) + np.repeat(starts - np.cumsum(counts) + counts, counts)
        return counts, self._spans[at], self._vectors[at]
