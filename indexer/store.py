"""The store: the one source of truth of an index, a SQLite database in WAL mode (``store.sqlite``).

It holds every document, every passage with its vector and its quotable sentences (offsets and their
late-chunked vectors), and a commit sequence. A commit is one SQLite transaction, fsynced before it
returns (WAL, ``synchronous=FULL``): once ``commit`` returns, the change survives a crash of any process.
Everything else in an index directory (FAISS bases, tantivy indexes) is derived from the store and records
the sequence it reflects, so it can always be caught up or rebuilt from here.

Rows are versioned, never updated in place: a row is *live at sequence s* when ``seq <= s`` and
(``dseq`` is NULL or ``dseq > s``). A write inserts rows at the new sequence and sets ``dseq`` on the rows
it replaces or deletes, so a reader keeps a consistent view at its sequence while writers commit, and
the rows changed between two sequences are found by index (``changes``). Compaction purges rows deleted
before the generation it replaces.

Tables: ``meta`` (format, model, dimension, backend, chunking), ``commits`` (per sequence: live documents
and passages, time), ``derived`` (per derived index: the sequence it reflects), ``documents`` and
``chunks`` (passages, with ``vector`` float32, ``span_offsets`` int32 pairs, ``span_vectors`` float16, and
``terms``: the distinct analysed terms of title and text, which ranking reads instead of re-analysing).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.documents import Chunk, Document
from indexer.evidence import Evidence
from indexer.layout import IndexLoadError
from indexer.lexical import ANALYZE, passage_body

FORMAT_VERSION = 4  # 4: the segment store (one SQLite store, derived generations)
SQL_BATCH = 500  # values per IN (...), under SQLite's variable limit on any version
READ_MMAP_BYTES = 1 << 30  # per read-only connection, address space only (SQLite caps it at its own maximum)
LIVE = "seq <= :s AND (dseq IS NULL OR dseq > :s)"  # a row live at sequence :s
_LIVE_AT = "seq <= ? AND (dseq IS NULL OR dseq > ?)"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE commits (seq INTEGER PRIMARY KEY, documents INTEGER NOT NULL, chunks INTEGER NOT NULL,
                      at REAL NOT NULL);
CREATE TABLE derived (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE documents (id TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER, title TEXT NOT NULL,
                        text TEXT NOT NULL, metadata TEXT NOT NULL, source TEXT NOT NULL,
                        chunk_count INTEGER NOT NULL, UNIQUE (id, seq));
CREATE INDEX documents_deleted ON documents (dseq) WHERE dseq IS NOT NULL;
CREATE TABLE chunks (id INTEGER NOT NULL, seq INTEGER NOT NULL, dseq INTEGER, document_id TEXT NOT NULL,
                     title TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL,
                     metadata TEXT NOT NULL, vector BLOB NOT NULL, span_offsets BLOB NOT NULL,
                     span_vectors BLOB NOT NULL, terms TEXT NOT NULL, UNIQUE (id, seq));
CREATE INDEX chunks_by_document ON chunks (document_id, start);
CREATE INDEX chunks_by_seq ON chunks (seq);
CREATE INDEX chunks_deleted ON chunks (dseq) WHERE dseq IS NOT NULL;
INSERT INTO commits VALUES (0, 0, 0, 0);
"""


@dataclass(frozen=True)
class StoreConfig:
    """What every passage in a store was made with; a change of any of it means re-embedding."""

    model_name: str
    model_sha256: str
    dimension: int
    chunking: dict[str, Any]
    backend: str = "torch"
    # the int8 export's recipe format that made the vectors (``embeddings.onnx_export.vectors_recipe``);
    # None for float32 vectors, and for int8 indexes built before semqa recorded it
    int8_format: int | None = None

    def to_json(self) -> str:
        """As the store keeps it; an unset ``int8_format`` is left out, so that a float32 store stays
        readable by a semqa from before the field existed."""
        fields = {k: v for k, v in self.__dict__.items() if not (k == "int8_format" and v is None)}
        return json.dumps(fields)


@dataclass(frozen=True)
class Passage:
    """A chunk with what the index keeps of it: its vector and its quotable sentences with theirs."""

    chunk: Chunk
    vector: np.ndarray
    spans: Sequence[tuple[int, int]] = ()
    span_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


@dataclass(frozen=True)
class Upsert:
    document: Document
    passages: Sequence[Passage]
    force: bool = False  # replace even an identical live document (its passages were made anew)


@dataclass(frozen=True)
class Delete:
    document_id: str


Change = Upsert | Delete


@dataclass(frozen=True)
class Committed:
    """What a commit did: the new sequence (None when nothing changed) and, per change, its outcome:
    ``changed``/``unchanged`` for an upsert, ``deleted``/``missing`` for a delete."""

    seq: int | None
    outcomes: list[str]


@dataclass(frozen=True)
class Changes:
    """The passages that changed between two sequences: ids no longer live (in a row deleted in the range)
    and the rows added in the range that are still live at its end."""

    removed: np.ndarray
    added_ids: np.ndarray
    added_vectors: np.ndarray
    added: list[tuple[int, str, str, str]]  # (chunk id, document id, title, text), for the lexical index


def _open(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        # Pages read through a memory map, not a read() call each: a question's candidates' evidence (100-200
        # rows) came 0.6 ms sooner on SciFact's store, and the workers share the pages as they share the
        # memory-mapped vectors. A rebuild replaces the file (rename), so no mapping sees it truncated.
        db.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
    else:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


def _in_batches(values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    """``values`` in parts under SQLite's variable limit, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(values), SQL_BATCH):
        part = list(values[start : start + SQL_BATCH])
        yield ",".join("?" * len(part)), part


def _document_id(change: Change) -> str:
    return change.document.id if isinstance(change, Upsert) else change.document_id


def _same(stored: Sequence[Any], document: Document) -> bool:
    """Whether a stored (title, text, metadata, source) is ``document``'s. Metadata compares as stored
    JSON: JSON true and 1 are different values, which Python's == calls equal."""
    return tuple(stored) == (document.title, document.text, json.dumps(document.metadata), document.source)


def _spans_blob(spans: Sequence[tuple[int, int]]) -> bytes:
    return np.asarray(spans, dtype=np.int32).reshape(-1, 2).tobytes()


class Store:
    """An open store. Reads go through per-thread read-only connections; writes through one connection,
    used under the index's writer lock (``indexer.layout.writer_lock``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise IndexLoadError(f"no index in {path.parent}: run `semqa index` to build one")
        self._local = threading.local()
        self._write_db: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        try:
            meta = dict(self._reader().execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise IndexLoadError(
                f"{path} is not a readable index store ({exc}): restore it from a copy, or move the index "
                "directory aside and build a new one with `semqa index` (documents written through the API "
                "are kept in this file only)"
            )
        if int(meta.get("format", 0)) != FORMAT_VERSION:
            raise IndexLoadError(
                f"{path} has format {meta.get('format')}, this semqa reads {FORMAT_VERSION}; rebuild with "
                "`semqa index`"
            )
        self.config = StoreConfig(**json.loads(meta["config"]))

    @classmethod
    def create(cls, path: Path, config: StoreConfig) -> Store:
        """A new, empty store (refused if one exists)."""
        if path.exists():
            raise FileExistsError(f"{path} exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.new"
        tmp.unlink(missing_ok=True)
        db = _open(tmp, readonly=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("format", str(FORMAT_VERSION)), ("config", config.to_json())],
            )
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        tmp.rename(path)
        return cls(path)

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _open(self.path, readonly=True)
        return db

    def _writer(self) -> sqlite3.Connection:
        if self._write_db is None:
            db = _open(self.path, readonly=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # every commit is fsynced before it returns
            self._write_db = db
        return self._write_db

    def read_config(self) -> StoreConfig:
        """The configuration as stored now (another process's rebuild may have changed it)."""
        value = self._reader().execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0]
        self.config = StoreConfig(**json.loads(value))
        return self.config

    # -- sequences -------------------------------------------------------------------------------------

    def latest(self) -> int:
        """The sequence of the last commit."""
        return int(self._reader().execute("SELECT MAX(seq) FROM commits").fetchone()[0])

    def derived_seq(self, name: str) -> int | None:
        row = self._reader().execute("SELECT seq FROM derived WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_derived(self, name: str, seq: int) -> None:
        with self._write_lock:
            self._writer().execute("INSERT OR REPLACE INTO derived VALUES (?, ?)", (name, seq))

    def forget_derived(self, keep: set[str]) -> None:
        with self._write_lock:
            db = self._writer()
            for (name,) in db.execute("SELECT name FROM derived").fetchall():
                if name not in keep:
                    db.execute("DELETE FROM derived WHERE name = ?", (name,))

    def counts(self, seq: int) -> tuple[int, int]:
        """Live documents and passages at ``seq``."""
        row = self._reader().execute("SELECT documents, chunks FROM commits WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise IndexLoadError(f"{self.path} has no commit {seq}; rebuild with `semqa index`")
        return int(row[0]), int(row[1])

    # -- writes ----------------------------------------------------------------------------------------

    def commit(self, changes: Sequence[Change], config: StoreConfig | None = None) -> Committed:
        """Apply ``changes`` in order as one transaction at the next sequence, durably. An upsert identical
        to the live document (title, text, metadata as stored JSON, source) and a delete of a missing
        document change nothing; when nothing changes, no sequence is used. ``config``: what the passages
        are made with from now on (a rebuild that made every passage again), recorded in the same
        transaction as those passages, so that a crash between the two cannot leave passages labelled
        with a recipe they were not made with."""
        with self._write_lock:
            db = self._writer()
            db.execute("BEGIN IMMEDIATE")
            try:
                committed = self._apply(db, changes)
                if config is not None:
                    db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (config.to_json(),))
                db.execute("ROLLBACK" if committed.seq is None and config is None else "COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if config is not None:
            self.config = config
        return committed

    def _apply(self, db: sqlite3.Connection, changes: Sequence[Change]) -> Committed:
        """The net effect of ``changes`` per document, worked out in memory against the live rows (read in
        batches), then written in bulk: a build of a million passages is a few statements, not millions."""
        previous = int(db.execute("SELECT MAX(seq) FROM commits").fetchone()[0])
        seq = previous + 1
        documents, chunks = db.execute(
            "SELECT documents, chunks FROM commits WHERE seq = ?", (previous,)
        ).fetchone()
        ids = list(dict.fromkeys(_document_id(c) for c in changes))
        live: dict[str, tuple[Any, ...]] = {}
        for marks, part in _in_batches(ids):
            for row in db.execute(
                f"SELECT id, title, text, metadata, source, chunk_count FROM documents "
                f"WHERE id IN ({marks}) AND dseq IS NULL",
                part,
            ):
                live[row[0]] = row[1:]
        state: dict[str, tuple[Any, ...] | None] = dict(live)  # each document as the next change finds it
        final: dict[str, Upsert | None] = {}  # what each touched document becomes: its last upsert, or gone
        outcomes: list[str] = []
        for change in changes:
            document_id = _document_id(change)
            current = state.get(document_id)
            if isinstance(change, Upsert):
                if current is not None and _same(current[:4], change.document) and not change.force:
                    outcomes.append("unchanged")
                    continue
                outcomes.append("changed")
                d = change.document
                state[document_id] = (d.title, d.text, json.dumps(d.metadata), d.source, len(change.passages))
                final[document_id] = change
            else:
                outcomes.append("missing" if current is None else "deleted")
                if current is not None:
                    state[document_id] = final[document_id] = None
        touched = set(final)
        if not touched:
            return Committed(None, outcomes)
        retired = [d for d in touched if d in live]
        db.executemany(
            "UPDATE documents SET dseq = ? WHERE id = ? AND dseq IS NULL", [(seq, d) for d in retired]
        )
        db.executemany(
            "UPDATE chunks SET dseq = ? WHERE document_id = ? AND dseq IS NULL", [(seq, d) for d in retired]
        )
        inserted = [u for u in final.values() if u is not None]
        self._insert(db, inserted, seq)
        documents += len(inserted) - len(retired)
        chunks += sum(len(u.passages) for u in inserted) - sum(live[d][4] for d in retired)
        db.execute("INSERT INTO commits VALUES (?, ?, ?, ?)", (seq, documents, chunks, time.time()))
        return Committed(seq, outcomes)

    @staticmethod
    def _insert(db: sqlite3.Connection, upserts: Sequence[Upsert], seq: int) -> None:
        db.executemany(
            "INSERT INTO documents VALUES (?, ?, NULL, ?, ?, ?, ?, ?)",
            (
                (d.id, seq, d.title, d.text, json.dumps(d.metadata), d.source, len(u.passages))
                for u in upserts
                for d in (u.document,)
            ),
        )
        db.executemany(
            "INSERT INTO chunks VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    p.chunk.chunk_id,
                    seq,
                    p.chunk.document_id,
                    p.chunk.title,
                    p.chunk.start,
                    p.chunk.end,
                    p.chunk.text,
                    json.dumps(p.chunk.metadata),
                    np.asarray(p.vector, dtype=np.float32).tobytes(),
                    _spans_blob(p.spans),
                    np.asarray(p.span_vectors, dtype=np.float16).tobytes(),
                    " ".join(dict.fromkeys(ANALYZE([passage_body(p.chunk.title, p.chunk.text)])[0])),
                )
                for u in upserts
                for p in u.passages
            ),
        )

    def purge(self, before: int) -> int:
        """Drop rows deleted at or before sequence ``before`` (no view still reads them); returns how many
        passage rows went."""
        with self._write_lock:
            db = self._writer()
            db.execute("BEGIN IMMEDIATE")
            gone = db.execute("DELETE FROM chunks WHERE dseq IS NOT NULL AND dseq <= ?", (before,)).rowcount
            db.execute("DELETE FROM documents WHERE dseq IS NOT NULL AND dseq <= ?", (before,))
            db.execute("COMMIT")
        return int(gone)

    # -- change feed and full scans --------------------------------------------------------------------

    def changes(self, after: int, upto: int) -> Changes:
        db = self._reader()
        params = {"a": after, "b": upto}
        removed = [r[0] for r in db.execute("SELECT id FROM chunks WHERE dseq > :a AND dseq <= :b", params)]
        rows = db.execute(
            "SELECT id, document_id, title, text, vector FROM chunks WHERE seq > :a AND seq <= :b "
            "AND (dseq IS NULL OR dseq > :b) ORDER BY seq, id",
            params,
        ).fetchall()
        dimension = self.config.dimension
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(-1, dimension)
        return Changes(
            removed=np.array(removed, dtype=np.int64),
            added_ids=np.array([r[0] for r in rows], dtype=np.int64),
            added_vectors=vectors,
            added=[(r[0], r[1], r[2], r[3]) for r in rows],
        )

    def _scan(self, columns: str, seq: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        with closing(_open(self.path, readonly=True)) as db:
            cursor = db.execute(f"SELECT {columns} FROM chunks WHERE {LIVE} ORDER BY id", {"s": seq})
            while rows := cursor.fetchmany(batch):
                yield rows

    def live_vectors(self, seq: int, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The ids and vectors of every passage live at ``seq``, in batches, by id."""
        dimension = self.config.dimension
        for rows in self._scan("id, vector", seq, batch):
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dimension)
            yield np.array([r[0] for r in rows], dtype=np.int64), vectors

    def live_evidence(self, seq: int, batch: int = 20_000) -> Iterator[tuple[int, str, bytes, bytes]]:
        """(chunk id, terms, span offsets, span vectors) of every passage live at ``seq``, by id."""
        for rows in self._scan("id, terms, span_offsets, span_vectors", seq, batch):
            yield from rows

    def live_texts(self, seq: int, batch: int = 20_000) -> Iterator[tuple[int, str, str, str]]:
        """(chunk id, document id, title, text) of every passage live at ``seq``, by id."""
        for rows in self._scan("id, document_id, title, text", seq, batch):
            yield from rows

    def live_documents(self, seq: int, source: str | None = None) -> Iterator[Document]:
        """Every document live at ``seq`` (only those of ``source`` when given)."""
        query = f"SELECT id, title, text, metadata, source FROM documents WHERE {LIVE}"
        params: dict[str, Any] = {"s": seq}
        if source is not None:
            query += " AND source = :source"
            params["source"] = source
        with closing(_open(self.path, readonly=True)) as db:
            for row in db.execute(query + " ORDER BY id", params):
                yield Document(
                    id=row[0], title=row[1], text=row[2], metadata=json.loads(row[3]), source=row[4]
                )

    def written_since(self, base: int, seq: int) -> int:
        """Passages committed after ``base`` that are still live at ``seq``."""
        return int(
            self._reader()
            .execute(
                "SELECT COUNT(*) FROM chunks WHERE seq > ? AND seq <= ? AND (dseq IS NULL OR dseq > ?)",
                (base, seq, seq),
            )
            .fetchone()[0]
        )

    def unchanged(self, documents: Sequence[Document]) -> set[str]:
        """Ids of the documents whose live row is identical (title, text, metadata as stored JSON, source)."""
        db = self._reader()
        by_id = {d.id: d for d in documents}
        same: set[str] = set()
        for marks, part in _in_batches(list(by_id)):
            for row in db.execute(
                f"SELECT id, title, text, metadata, source FROM documents WHERE id IN ({marks}) AND dseq IS NULL",
                part,
            ):
                if _same(row[1:], by_id[row[0]]):
                    same.add(row[0])
        return same

    def view(self, seq: int) -> StoreView:
        return StoreView(self, seq)


def float32_rows(blobs: Iterable[bytes], dimension: int) -> np.ndarray:
    """Stored float16 vectors (``blobs`` one after another) as float32 rows, exactly. numpy's cast (about
    2 ns an element), not torch's: torch's is ten times faster in a warm loop, but inside a server, between
    requests, it took 0.20-0.25 ms for a question's candidates against numpy's 0.07-0.15 (BENCHMARKS.md,
    "Stop 23")."""
    return np.frombuffer(b"".join(blobs), np.float16).reshape(-1, dimension).astype(np.float32)


class StoreView:
    """Reads of the store as it was at sequence ``seq`` (thread-safe: each thread has its connection)."""

    def __init__(self, store: Store, seq: int) -> None:
        self.store = store
        self.seq = seq
        self.document_count, self.chunk_count = store.counts(seq)

    def _select(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``sql`` with its one ``IN ({})`` filled in batches, rows live at this view's sequence."""
        db = self.store._reader()
        rows: list[tuple[Any, ...]] = []
        for marks, part in _in_batches(values):
            rows += db.execute(
                sql.format(marks) + f" AND {_LIVE_AT}",
                [*part, self.seq, self.seq],
            ).fetchall()
        return rows

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        rows = self._select(
            'SELECT id, document_id, title, start, "end", text, metadata FROM chunks WHERE id IN ({})',
            [int(i) for i in ids],
        )
        return {r[0]: Chunk(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows}

    def evidence(self, ids: np.ndarray) -> Evidence:
        """What ranking and highlights read of each passage (``Evidence``), in one query."""
        ids = np.asarray(ids, dtype=np.int64)
        dimension = self.store.config.dimension
        rows = self._select(
            "SELECT id, terms, span_offsets, span_vectors FROM chunks WHERE id IN ({})", ids.tolist()
        )
        row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        counts = [len(r[3]) // (2 * dimension) for r in rows]
        return Evidence(
            ids,
            {r[0]: r[1] for r in rows},
            np.repeat(np.array([row_of[r[0]] for r in rows], dtype=np.int64), counts),
            np.frombuffer(b"".join(r[2] for r in rows), dtype=np.int32).reshape(-1, 2),
            float32_rows((r[3] for r in rows), dimension),
        )

    def document_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The document id of each chunk id (a light query: no text)."""
        return dict(
            self._select("SELECT id, document_id FROM chunks WHERE id IN ({})", [int(i) for i in ids])
        )

    def chunk_ids_of(self, document_ids: Sequence[str]) -> np.ndarray:
        rows = self._select("SELECT id FROM chunks WHERE document_id IN ({})", list(document_ids))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def document(self, document_id: str) -> dict[str, Any] | None:
        rows = self._select(
            "SELECT id, title, text, metadata, chunk_count FROM documents WHERE id IN ({})", [document_id]
        )
        if not rows:
            return None
        r = rows[0]
        return {"id": r[0], "title": r[1], "text": r[2], "metadata": json.loads(r[3]), "chunks": r[4]}

    def list_documents(self, offset: int, limit: int) -> list[dict[str, Any]]:
        rows = self.store._reader().execute(
            f"SELECT id, title, chunk_count FROM documents WHERE {LIVE} ORDER BY id LIMIT :limit OFFSET :offset",
            {"s": self.seq, "limit": limit, "offset": offset},
        )
        return [{"id": r[0], "title": r[1], "chunks": r[2]} for r in rows]
