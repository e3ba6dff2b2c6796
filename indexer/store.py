"""The index directory: immutable versions, each written atomically, and a pointer to the current one.

Layout::

    <index_dir>/CURRENT                  name of the current version (replaced atomically)
    <index_dir>/versions/<sequence>-<time>-<random>/
        manifest.json                    what was built, with what, and the size + sha256 of every file
        dense.faiss                      FAISS index (IDMap2 over the configured factory), our chunk ids
        chunks.sqlite                    chunk store: text, document id, title, offsets, metadata; documents
        lexical/                         BM25 index (bm25s .npy + JSON) and the chunk id of each row
    <index_dir>/versions/.tmp-*          a build in progress (never loaded; removed by the next build)

A build writes everything into a temporary directory beside the versions, fsyncs it, renames it into
place and only then repoints CURRENT, so a crash at any moment leaves the previous version current and
intact. A version is never modified after it is published.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.backends import incompatibility
from embeddings.files import fsync as _fsync
from embeddings.model import file_sha256
from indexer.documents import Chunk, Document
from indexer.lexical import LexicalIndex

FORMAT_VERSION = 3  # 2: lexical index and sentence span vectors; 3: documents.source
MANIFEST = "manifest.json"
DENSE_FILE = "dense.faiss"
CHUNKS_FILE = "chunks.sqlite"
LEXICAL_DIR = "lexical"
CURRENT = "CURRENT"
VERSIONS = "versions"
KEEP_VERSIONS = 3
SQL_BATCH = 500  # ids per IN (...) query, under SQLite's variable limit on any version
LOCK = ".lock"


class IndexLoadError(RuntimeError):
    """The index directory cannot be served: missing, corrupt, or built with another model."""


@dataclass(frozen=True)
class Manifest:
    model_name: str
    model_sha256: str
    dimension: int
    chunking: dict[str, Any]
    faiss_factory: str
    document_count: int
    chunk_count: int
    corpus_fingerprint: str
    built_at: str
    format_version: int = FORMAT_VERSION
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend: str = "torch"  # the encoder backend that computed the vectors (indexes before it: torch)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(**data)


def corpus_fingerprint(documents: Iterable[tuple[str, str, str]]) -> str:
    """A hash of every document's (id, title, text), independent of reading order."""
    lines = sorted(
        f"{doc_id}\x00{title}\x00{hashlib.sha256(text.encode()).hexdigest()}"
        for doc_id, title, text in documents
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_faiss(vectors: np.ndarray, ids: np.ndarray, factory: str) -> Any:
    """An inner-product FAISS index over ``vectors`` with our 64-bit ``ids`` (``IDMap2,<factory>``)."""
    import faiss

    try:
        index = faiss.index_factory(vectors.shape[1], f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"invalid FAISS factory string {factory!r}: {exc}") from exc
    if not index.is_trained:
        try:
            index.train(vectors)
        except RuntimeError as exc:
            raise ValueError(
                f"FAISS factory {factory!r} cannot be trained on {len(vectors)} vectors: {exc}"
            ) from exc
    index.add_with_ids(vectors, ids.astype(np.int64))
    return index


CHUNK_STORE_SCHEMA = """
CREATE TABLE documents (id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
                        chunk_count INTEGER NOT NULL, source TEXT NOT NULL);
CREATE TABLE chunks (id INTEGER PRIMARY KEY, document_id TEXT NOT NULL, title TEXT NOT NULL,
                     start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX chunks_by_document ON chunks (document_id, start);
CREATE TABLE spans (chunk_id INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX spans_by_chunk ON spans (chunk_id);
"""


def open_published(path: Path, **options: Any) -> sqlite3.Connection:
    """A read-only connection to the chunk store of a published (so never again written) version."""
    # A file URI, percent-encoded, so that a "?" or "#" in the path is part of the path.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, **options)


def insert_rows(
    db: sqlite3.Connection,
    documents: Sequence[Document],
    chunks: Sequence[Chunk],
    spans: Sequence[Sequence[tuple[int, int]]],
    span_vectors: Sequence[np.ndarray],
) -> None:
    """Add documents with their chunks and sentence span vectors (float16) to a chunk store."""
    per_doc: dict[str, int] = {}
    for chunk in chunks:
        per_doc[chunk.document_id] = per_doc.get(chunk.document_id, 0) + 1
    db.executemany(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
        ((d.id, d.title, d.text, json.dumps(d.metadata), per_doc.get(d.id, 0), d.source) for d in documents),
    )
    db.executemany(
        "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (c.chunk_id, c.document_id, c.title, c.start, c.end, c.text, json.dumps(c.metadata))
            for c in chunks
        ),
    )
    db.executemany(
        "INSERT INTO spans VALUES (?, ?, ?, ?)",
        (
            (chunk.chunk_id, start, end, vector.astype(np.float16).tobytes())
            for chunk, chunk_spans, vectors in zip(chunks, spans, span_vectors, strict=True)
            for (start, end), vector in zip(chunk_spans, vectors, strict=True)
        ),
    )


def write_chunk_store(
    path: Path,
    documents: Sequence[Document],
    chunks: Sequence[Chunk],
    spans: Sequence[Sequence[tuple[int, int]]],
    span_vectors: Sequence[np.ndarray],
) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(CHUNK_STORE_SCHEMA)
        insert_rows(db, documents, chunks, spans, span_vectors)
        db.commit()


def write_version(
    index_dir: Path,
    documents: Sequence[Document],
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    spans: Sequence[Sequence[tuple[int, int]]],
    span_vectors: Sequence[np.ndarray],
    lexical: LexicalIndex,
    manifest: Manifest,
) -> Path:
    """Write a complete new version and make it current; returns its directory.

    ``spans`` are the quotable sentences of each chunk (offsets in the chunk text) and ``span_vectors``
    their vectors, kept for the highlighter."""
    import faiss

    with staging(index_dir) as tmp:
        ids = np.array([c.chunk_id for c in chunks], dtype=np.int64)
        faiss.write_index(build_faiss(vectors, ids, manifest.faiss_factory), str(tmp / DENSE_FILE))
        write_chunk_store(tmp / CHUNKS_FILE, documents, chunks, spans, span_vectors)
        lexical.save(tmp / LEXICAL_DIR)
        return publish(index_dir, tmp, manifest)


@contextmanager
def staging(index_dir: Path) -> Iterator[Path]:
    """Hold the writer lock and give an empty temporary version directory to fill, then ``publish``.

    Whatever is not published is removed; leftovers of a writer that crashed are removed first (we hold
    the lock, so no other writer is running)."""
    versions = index_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    with writer_lock(index_dir):
        for stale in [*versions.glob(".tmp-*"), *index_dir.glob(f".{CURRENT}.*")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=versions))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when published


def publish(index_dir: Path, tmp: Path, manifest: Manifest) -> Path:
    """Record every file of ``tmp`` in its manifest, make it durable, move it into place, point CURRENT at
    it: from here on readers load it, and a crash at any earlier point left the previous version current."""
    versions = index_dir / VERSIONS
    written = sorted(p for p in tmp.rglob("*") if p.is_file())
    files = {
        p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in written
    }
    final = Manifest(**{**asdict(manifest), "files": files})
    (tmp / MANIFEST).write_text(json.dumps(asdict(final), indent=2, sort_keys=True))
    for path in [*written, tmp / MANIFEST, *(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
        _fsync(path)
    name = f"{_next_sequence(versions):08d}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    target = versions / name
    os.rename(tmp, target)
    _fsync(versions)
    _set_current(index_dir, name)
    _prune(versions, keep={name})
    return target


@contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Exclusive across processes (builds, server writers): one version is written at a time."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _published(versions: Path) -> list[Path]:
    """Published versions, oldest first (names start with a zero-padded sequence number)."""
    return sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))


def _next_sequence(versions: Path) -> int:
    numbers = [
        int(p.name.split("-", 1)[0]) for p in _published(versions) if p.name.split("-", 1)[0].isdigit()
    ]
    return max(numbers, default=0) + 1


def _set_current(index_dir: Path, name: str) -> None:
    tmp = index_dir / f".{CURRENT}.{uuid.uuid4().hex}"
    tmp.write_text(name + "\n")
    _fsync(tmp)
    os.replace(tmp, index_dir / CURRENT)
    _fsync(index_dir)


def _prune(versions: Path, keep: set[str]) -> None:
    """Drop all but the newest ``KEEP_VERSIONS`` versions (a server may still be reading a recent one)."""
    for old in _published(versions)[:-KEEP_VERSIONS]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _read_faiss(path: Path) -> Any:
    """Memory-mapped where FAISS can (flat and HNSW storage, faiss >= 1.11), so that gunicorn workers
    share the pages of one file instead of holding a copy each; read into memory otherwise."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError:
        return faiss.read_index(str(path))


def _enable_reconstruct(dense: Any) -> None:
    """Search reads candidates' vectors back (``reconstruct_batch``); IVF indexes need a direct map for that."""
    import faiss

    try:
        inner = faiss.extract_index_ivf(dense.index)
    except RuntimeError:  # not an IVF index: flat and HNSW reconstruct as they are
        return
    inner.make_direct_map()


def current_version_dir(index_dir: Path) -> Path:
    """The directory of the current version; ``IndexLoadError`` if there is none."""
    pointer = index_dir / CURRENT
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        raise IndexLoadError(f"no index in {index_dir}: run `semqa index` to build one") from None
    path = index_dir / VERSIONS / name
    if not name or "/" in name or not path.is_dir():
        raise IndexLoadError(
            f"{pointer} names version {name!r}, which does not exist; rebuild with `semqa index`"
        )
    return path


def has_index(index_dir: Path) -> bool:
    try:
        current_version_dir(index_dir)
    except IndexLoadError:
        return False
    return True


class ChunkStore:
    """Read-only access to a version's ``chunks.sqlite``.

    One connection, opened at load and shared by all threads (SQLite here is built serialized,
    ``sqlite3.threadsafety == 3``): holding it open keeps the file readable even after a newer build
    prunes this version, so requests in flight never fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_published(path, check_same_thread=False)

    def _select(self, sql: str, values: Sequence[object]) -> list[tuple[Any, ...]]:
        """``sql`` with its one ``IN ({})`` filled in, in batches under SQLite's variable limit."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), SQL_BATCH):
            part = list(values[start : start + SQL_BATCH])
            rows += self._db.execute(sql.format(",".join("?" * len(part))), part).fetchall()
        return rows

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        rows = self._select(
            'SELECT id, document_id, title, start, "end", text, metadata FROM chunks WHERE id IN ({})',
            [int(i) for i in ids],
        )
        return {
            row[0]: Chunk(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6])) for row in rows
        }

    def spans(
        self, ids: Sequence[int], dimension: int
    ) -> dict[int, tuple[list[tuple[int, int]], np.ndarray]]:
        """The stored sentence spans of each chunk (offsets in the chunk text) and their vectors."""
        found: dict[int, tuple[list[tuple[int, int]], list[np.ndarray]]] = {}
        rows = self._select(
            'SELECT chunk_id, start, "end", vector FROM spans WHERE chunk_id IN ({}) ORDER BY chunk_id, start',
            [int(i) for i in ids],
        )
        for chunk_id, start, end, blob in rows:
            offsets, vectors = found.setdefault(chunk_id, ([], []))
            offsets.append((start, end))
            vectors.append(np.frombuffer(blob, dtype=np.float16).astype(np.float32))
        empty = np.zeros((0, dimension), dtype=np.float32)
        return {i: (o, np.stack(v) if v else empty) for i, (o, v) in found.items()}

    def document_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The document id of each chunk id (a light query: no text)."""
        return dict(
            self._select("SELECT id, document_id FROM chunks WHERE id IN ({})", [int(i) for i in ids])
        )

    def document_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def list_documents(self, offset: int, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, title, chunk_count FROM documents ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
        return [{"id": r[0], "title": r[1], "chunks": r[2]} for r in rows]

    def document(self, document_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, title, text, metadata, chunk_count FROM documents WHERE id = ?", (document_id,)
        ).fetchone()
        if row is None:
            return None
        return {
            "id": row[0],
            "title": row[1],
            "text": row[2],
            "metadata": json.loads(row[3]),
            "chunks": row[4],
        }

    def chunk_ids_of(self, document_ids: Sequence[str]) -> list[int]:
        return [
            row[0] for row in self._select("SELECT id FROM chunks WHERE document_id IN ({})", document_ids)
        ]


@dataclass
class IndexVersion:
    """A loaded version: manifest, FAISS index, lexical index and chunk store."""

    path: Path
    manifest: Manifest
    dense: Any
    lexical: LexicalIndex
    store: ChunkStore

    @property
    def name(self) -> str:
        return self.path.name


def check_version(index_dir: Path, *, verify: bool = True) -> tuple[Path, Manifest]:
    """The current version's directory and manifest, once its manifest is readable and every file it
    lists has the recorded size (and, with ``verify``, sha256). Cheap: no FAISS, no model."""
    path = current_version_dir(index_dir)
    manifest_path = path / MANIFEST
    try:
        manifest = Manifest.from_json(json.loads(manifest_path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexLoadError(
            f"{manifest_path} is unreadable or corrupt ({exc}); rebuild with `semqa index`"
        ) from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IndexLoadError(
            f"{manifest_path} has format {manifest.format_version}, this semqa reads {FORMAT_VERSION}; rebuild"
        )
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected["bytes"]:
            raise IndexLoadError(f"{file} is missing or truncated; rebuild with `semqa index`")
        if verify and file_sha256(file) != expected["sha256"]:
            raise IndexLoadError(f"{file} is corrupt (sha256 mismatch); rebuild with `semqa index`")
    return path, manifest


def load_version(
    index_dir: Path, *, model_sha256: str, dimension: int, verify: bool = True, backend: str | None = None
) -> IndexVersion:
    """Load the current version, checking it was built by this model (and, given ``backend``, by an encoder
    backend compatible with it) and that its files are intact.

    Every failure is an ``IndexLoadError`` naming what is wrong, including files that vanish while
    loading (a version pruned by writers in the meantime)."""
    try:
        return _load_version(
            index_dir, model_sha256=model_sha256, dimension=dimension, verify=verify, backend=backend
        )
    except (OSError, sqlite3.Error) as exc:
        raise IndexLoadError(
            f"the index in {index_dir} could not be read ({exc}); retry, or rebuild"
        ) from exc


def _load_version(
    index_dir: Path, *, model_sha256: str, dimension: int, verify: bool, backend: str | None
) -> IndexVersion:
    path, manifest = check_version(index_dir, verify=verify)
    problem = None if backend is None else incompatibility(manifest.backend, backend)
    if problem:
        raise IndexLoadError(f"index {path}: {problem}")
    if manifest.model_sha256 != model_sha256 or manifest.dimension != dimension:
        raise IndexLoadError(
            f"index {path} was built with model {manifest.model_name} (weights {manifest.model_sha256[:12]}, "
            f"dimension {manifest.dimension}) but the configured model has weights {model_sha256[:12]}, "
            f"dimension {dimension}; rebuild with `semqa index` or configure the model it was built with"
        )
    try:
        dense = _read_faiss(path / DENSE_FILE)
    except RuntimeError as exc:
        raise IndexLoadError(f"{path / DENSE_FILE} cannot be read by FAISS ({exc}); rebuild") from exc
    if dense.ntotal != manifest.chunk_count or dense.d != dimension:
        raise IndexLoadError(
            f"{path / DENSE_FILE} holds {dense.ntotal} vectors of dimension {dense.d}, the manifest says "
            f"{manifest.chunk_count} of dimension {dimension}; rebuild with `semqa index`"
        )
    _enable_reconstruct(dense)
    try:
        lexical = LexicalIndex.load(path / LEXICAL_DIR)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexLoadError(
            f"{path / LEXICAL_DIR} cannot be read ({exc}); rebuild with `semqa index`"
        ) from exc
    if len(lexical) != manifest.chunk_count:
        raise IndexLoadError(
            f"{path / LEXICAL_DIR} holds {len(lexical)} chunks, manifest says {manifest.chunk_count}"
        )
    store = ChunkStore(path / CHUNKS_FILE)
    return IndexVersion(path=path, manifest=manifest, dense=dense, lexical=lexical, store=store)
