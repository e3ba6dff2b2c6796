"""The lexical index: BM25 in tantivy, a search engine library with on-disk segments, deletes and merges.

One analyzer serves passages, questions and highlights alike (``ANALYZER``: word tokens, lower case,
English stop words, Snowball English stemming), so a question in ordinary English matches text that was
stemmed before it reached us (the white paper): stemming a stemmed word leaves it as it is. Tantivy
scores with Lucene's BM25 (k1 1.2, b 0.75, idf ln(1 + (N - n + 0.5) / (n + 0.5)), lengths stored in one
byte as Lucene does). Each passage is indexed with its document's title (BEIR's BM25 does the same:
measured +0.03 nDCG@10 on SciFact), by chunk id (a fast field) and document id (for filters).

Files are tantivy's own; the index is written only by ``LexicalIndex.write`` sessions (one process at a
time: tantivy holds a lock file, released by the OS if the process dies) and read through ``searcher()``
snapshots, which see the last commit at the time of ``reload()``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ANALYZER_NAME = "semqa"
BUILD_HEAP = 256_000_000  # bytes, split over the build's threads (tantivy's minimum: 15 MB a thread)
WRITE_HEAP = 32_000_000  # bytes, for the small commits of the write path
DELETE_BATCH = 1000  # chunk ids per delete query
TIE_MARGIN = 16  # hits beyond a search's k, among which equal scores at the cut are settled by chunk id
CHUNK_ID, DOCUMENT_ID, BODY = "chunk_id", "document_id", "body"
BM25_K1, BM25_B = 1.2, 0.75  # tantivy's (and Lucene's) BM25 parameters, which the highlighter reuses
# Words of one character count too ("chang e 4", "tianlian 1").
TOKEN_PATTERN = r"\w+"


def _tantivy() -> Any:
    import tantivy

    return tantivy


def make_analyzer() -> Any:
    t = _tantivy()
    return (
        t.TextAnalyzerBuilder(t.Tokenizer.regex(TOKEN_PATTERN))
        .filter(t.Filter.lowercase())
        .filter(t.Filter.stopword("english"))
        .filter(t.Filter.stemmer("english"))
        .build()
    )


class Analyzer:
    """Text to BM25 terms, the same analysis tantivy applies to passages (thread-safe)."""

    def __init__(self) -> None:
        self._analyzer = make_analyzer()

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [self._analyzer.analyze(text) for text in texts]


ANALYZE = Analyzer()
_WORD = re.compile(TOKEN_PATTERN)


@functools.lru_cache(maxsize=1 << 18)
def _terms_of_word(word: str) -> tuple[str, ...]:
    return tuple(ANALYZE([word])[0])


def analyze_cached(texts: Sequence[str]) -> list[list[str]]:
    """``ANALYZE``, one word at a time through a cache of what each word analyses to: passages' sentences
    are analysed anew for every question's highlights, and a dictionary lookup per word costs far less
    than a call into the analyzer. Words are split as the analyzer splits them (``TOKEN_PATTERN``)."""
    return [[term for word in _WORD.findall(text) for term in _terms_of_word(word)] for text in texts]


def passage_body(title: str, text: str) -> str:
    """What BM25 reads of a passage: its document's title, then its text."""
    return f"{title}\n{text}" if title else text


@dataclass(frozen=True)
class LexicalRow:
    chunk_id: int
    document_id: str
    title: str
    text: str


def _schema() -> Any:
    t = _tantivy()
    builder = t.SchemaBuilder()
    builder.add_unsigned_field(CHUNK_ID, indexed=True, fast=True)
    builder.add_text_field(DOCUMENT_ID, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(BODY, tokenizer_name=ANALYZER_NAME, index_option="freq")
    return builder.build()


class LexicalWriter:
    """Adds and deletes passages inside one ``LexicalIndex.write`` session."""

    def __init__(self, writer: Any, schema: Any) -> None:
        self._writer = writer
        self._schema = schema

    def add(self, rows: Iterable[LexicalRow]) -> int:
        t = _tantivy()
        added = 0
        for row in rows:
            doc = t.Document()
            doc.add_unsigned(CHUNK_ID, row.chunk_id)
            doc.add_text(DOCUMENT_ID, row.document_id)
            doc.add_text(BODY, passage_body(row.title, row.text))
            self._writer.add_document(doc)
            added += 1
        return added

    def delete(self, chunk_ids: Sequence[int]) -> None:
        """Delete the passages with these chunk ids (passages added later in the session stay).

        By query: ``delete_documents_by_term`` with a Python int builds a signed term, which never
        matches an unsigned field."""
        for start in range(0, len(chunk_ids), DELETE_BATCH):
            part = [int(i) for i in chunk_ids[start : start + DELETE_BATCH]]
            self._writer.delete_documents_by_query(_any_of(self._schema, CHUNK_ID, part))


class LexicalIndex:
    """A tantivy index in ``directory``."""

    def __init__(self, index: Any, directory: Path) -> None:
        self._index = index
        self.directory = directory
        index.register_tokenizer(ANALYZER_NAME, make_analyzer())
        index.config_reader(reload_policy="Manual")

    @classmethod
    def create(cls, directory: Path) -> LexicalIndex:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(_tantivy().Index(_schema(), path=str(directory)), directory)

    @classmethod
    def open(cls, directory: Path) -> LexicalIndex:
        t = _tantivy()
        if not directory.is_dir() or not t.Index.exists(str(directory)):
            raise FileNotFoundError(f"no lexical index in {directory}")
        return cls(t.Index.open(str(directory)), directory)

    @classmethod
    def build(cls, directory: Path, rows: Iterable[LexicalRow], threads: int = 0) -> LexicalIndex:
        """A new index of ``rows`` in ``directory``, committed and merged by tantivy."""
        index = cls.create(directory)
        with index.write(heap=BUILD_HEAP, threads=threads) as writer:
            writer.add(rows)
        return index

    @contextmanager
    def write(self, heap: int = WRITE_HEAP, threads: int = 1) -> Iterator[LexicalWriter]:
        """A write session: everything done in it is committed together when it ends without error,
        and rolled back otherwise; merges that the commit started are waited for."""
        writer = self._index.writer(heap_size=heap, num_threads=threads)
        try:
            yield LexicalWriter(writer, self._index.schema)
        except BaseException:
            writer.rollback()
            raise
        else:
            writer.commit()
        finally:
            writer.wait_merging_threads()

    def reload(self) -> None:
        self._index.reload()

    def searcher(self) -> LexicalSearcher:
        return LexicalSearcher(self._index.searcher(), self._index.schema)


def _any_of(schema: Any, field: str, values: Iterable[Any]) -> Any:
    """Matches documents whose ``field`` holds any of ``values`` (a boolean of term queries: measured far
    faster than tantivy's term-set query on an indexed u64 field)."""
    t = _tantivy()
    return t.Query.boolean_query(
        [(t.Occur.Should, t.Query.term_query(schema, field, value)) for value in values]
    )


class LexicalSearcher:
    """One consistent snapshot of the index (the commit that was current at ``reload``)."""

    def __init__(self, searcher: Any, schema: Any) -> None:
        self._searcher = searcher
        self._schema = schema

    @property
    def count(self) -> int:
        return int(self._searcher.num_docs)

    def _query(self, terms: Sequence[str], restrict: Any | None) -> Any:
        t = _tantivy()
        clauses = [(t.Occur.Should, t.Query.term_query(self._schema, BODY, term)) for term in terms]
        if restrict is not None:
            clauses.append((t.Occur.Must, t.Query.const_score_query(restrict, 0.0)))
        return t.Query.boolean_query(clauses)

    def _run(self, query: Any, limit: int) -> tuple[np.ndarray, np.ndarray]:
        if limit <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hits = self._searcher.search(query, limit, count=False).hits
        ids = self._searcher.fast_field_values(CHUNK_ID, [address for _, address in hits])
        return np.array(ids, dtype=np.int64), np.array([score for score, _ in hits], dtype=np.float32)

    def search(
        self, terms: Sequence[str], k: int, documents: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids and BM25 scores of the ``k`` best passages holding any of ``terms``, best first;
        ``documents`` restricts the search to those document ids before ranking."""
        if not terms:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        restrict = None if documents is None else _any_of(self._schema, DOCUMENT_ID, documents)
        # a few more than k, so that passages scoring the same as the k-th are kept by chunk id rather than
        # by where tantivy stored them (which differs between two builds of the same passages)
        ids, scores = self._run(self._query(terms, restrict), k + TIE_MARGIN)
        order = np.lexsort((ids, -scores))[:k]
        ids, scores = ids[order], scores[order]
        keep = scores > 0  # under a filter, passages with none of the terms match too (score 0)
        return ids[keep], scores[keep]

    def scores(self, terms: Sequence[str], chunk_ids: np.ndarray) -> np.ndarray:
        """The BM25 score of each of ``chunk_ids`` (0 for a passage with none of the terms, or unknown)."""
        out = np.zeros(len(chunk_ids), dtype=np.float32)
        if not terms or not len(chunk_ids):
            return out
        ids, scores = self._run(
            self._query(terms, _any_of(self._schema, CHUNK_ID, [int(i) for i in chunk_ids])), len(chunk_ids)
        )
        found = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        return np.array([found.get(int(i), 0.0) for i in chunk_ids], dtype=np.float32)

    def idf(self, terms: Sequence[str]) -> dict[str, float]:
        """BM25's idf of each term over the passages, as tantivy computes it (0 for a term no passage has)."""
        n = self.count
        out: dict[str, float] = {}
        for term in terms:
            df = int(self._searcher.doc_freq(BODY, term))
            out[term] = math.log(1 + (n - df + 0.5) / (df + 0.5)) if df else 0.0
        return out
