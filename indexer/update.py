"""Incremental changes to the index: upsert and delete documents, published as a new version.

A change is applied to a copy of the current version under the writer lock, so changes are serialised
across processes and none is lost: only the upserted documents are chunked and embedded (the embedding
cache keys vectors by content, so an unchanged passage is never embedded twice), FAISS drops the old
chunk ids and adds the new ones (never rebuilt from the vectors of every document), the chunk store is
edited in a copy, and BM25 is rebuilt from the stored passage texts, which keeps lexical statistics
exactly consistent with the dense side. The new version is published like any build: fsynced, renamed
into place, then made current; only then does the caller acknowledge the write.

Cost per change: copying the version's files and re-tokenising every passage for BM25, O(corpus size);
fine to tens of thousands of passages. A segment design (small delta versions merged in the background)
is the path beyond that.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from embeddings import EmbeddingCache, Encoder
from indexer.chunking import ChunkingConfig, chunk_document, embedding_inputs, quotable_sentences
from indexer.documents import Chunk, Document
from indexer.lexical import LexicalIndex
from indexer.store import (
    CHUNKS_FILE,
    DENSE_FILE,
    LEXICAL_DIR,
    MANIFEST,
    SQL_BATCH,
    IndexLoadError,
    Manifest,
    corpus_fingerprint,
    current_version_dir,
    insert_rows,
    open_published,
    publish,
    staging,
)

API_SOURCE = "api"  # documents.source of documents written through the HTTP API


class UnsupportedChange(ValueError):
    """The index cannot take this change as it is built (e.g. HNSW cannot remove vectors)."""


Prepared = tuple[list[Chunk], list[list[tuple[int, int]]], np.ndarray, list[np.ndarray], int]


def _manifest(version_dir: Path) -> Manifest:
    return Manifest.from_json(json.loads((version_dir / MANIFEST).read_text()))


def _prepare(
    upserts: Sequence[Document], encoder: Encoder, cache: EmbeddingCache | None, chunking: ChunkingConfig
) -> Prepared:
    """Chunks of the upserted documents, their sentence spans, vectors, span vectors, and how many
    passages had to be embedded (the rest came from the cache)."""
    chunks = [c for doc in upserts for c in chunk_document(doc, encoder, chunking)]
    spans = [quotable_sentences(c.text) for c in chunks]
    texts, embed_spans = embedding_inputs(chunks, spans, encoder, chunking)
    if cache is not None:
        vectors, span_vectors, embedded = cache.encode(texts, embed_spans)
    else:
        vectors, span_vectors = encoder.encode_spans(texts, embed_spans)
        embedded = len(texts)
    return chunks, spans, vectors, span_vectors, embedded


def _unchanged(version_dir: Path, upserts: Sequence[Document], deletes: Sequence[str]) -> bool:
    """Whether the change would leave ``version_dir`` as it is: then no version is published (a copy of
    the whole index for nothing)."""
    with closing(open_published(version_dir / CHUNKS_FILE)) as db:
        for document_id in deletes:
            if db.execute("SELECT 1 FROM documents WHERE id = ?", (document_id,)).fetchone():
                return False
        for d in upserts:
            row = db.execute(
                "SELECT title, text, metadata, source FROM documents WHERE id = ?", (d.id,)
            ).fetchone()
            # Metadata as stored (insert_rows' json.dumps): JSON true and 1 are different values, and
            # Python's == would call them equal; a mere change of key order counts as a change.
            if row is None or tuple(row) != (d.title, d.text, json.dumps(d.metadata), d.source):
                return False
    return True


@dataclass(frozen=True)
class ChangeReport:
    version_dir: Path
    upserted: list[str]
    deleted: list[str]
    missing: list[str]  # ids asked to be deleted that were not in the index
    embedded: int  # passages whose vectors had to be computed


def apply_changes(
    index_dir: Path,
    *,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    upserts: Sequence[Document] = (),
    deletes: Sequence[str] = (),
) -> ChangeReport:
    """Upsert ``upserts`` (replacing every chunk of an existing id) and delete ``deletes``; returns once
    the new version is durable and current (or at once, naming the current version, when the change would
    change nothing)."""
    import faiss

    ids_upserted = [d.id for d in upserts]
    if len(set(ids_upserted)) != len(ids_upserted):
        raise ValueError("the same document id appears twice in one change")
    # Chunk and embed before taking the writer lock (the slow part), with the current version's chunking;
    # if another writer changed that meanwhile (a rebuild with other settings), redo it under the lock.
    chunking = ChunkingConfig(**_manifest(current_version_dir(index_dir)).chunking)
    prepared = _prepare(upserts, encoder, cache, chunking)
    with staging(index_dir) as tmp:
        base = current_version_dir(index_dir)
        manifest = _manifest(base)
        if manifest.model_sha256 != encoder.weights_sha256:
            raise IndexLoadError(
                f"index {base} was built with another model; rebuild it before writing to it"
            )
        if _unchanged(base, upserts, deletes):  # an identical upsert, or deletes that lost a race
            return ChangeReport(
                version_dir=base,
                upserted=ids_upserted,
                deleted=[],
                missing=list(deletes),
                embedded=prepared[-1],
            )
        if ChunkingConfig(**manifest.chunking) != chunking:
            prepared = _prepare(upserts, encoder, cache, ChunkingConfig(**manifest.chunking))
        chunks, spans, vectors, span_vectors, embedded = prepared

        shutil.copyfile(base / CHUNKS_FILE, tmp / CHUNKS_FILE)
        with closing(sqlite3.connect(tmp / CHUNKS_FILE)) as db:
            touched = list(dict.fromkeys([*ids_upserted, *deletes]))
            existing, old_ids = set(), []
            for start in range(0, len(touched), SQL_BATCH):
                part = touched[start : start + SQL_BATCH]
                marks = ",".join("?" * len(part))
                existing |= {
                    r[0] for r in db.execute(f"SELECT id FROM documents WHERE id IN ({marks})", part)
                }
                old_ids += [
                    r[0] for r in db.execute(f"SELECT id FROM chunks WHERE document_id IN ({marks})", part)
                ]
                db.execute(
                    f"DELETE FROM spans WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id IN ({marks}))",
                    part,
                )
                db.execute(f"DELETE FROM chunks WHERE document_id IN ({marks})", part)
                db.execute(f"DELETE FROM documents WHERE id IN ({marks})", part)
            insert_rows(db, list(upserts), chunks, spans, span_vectors)
            db.commit()
            rows = db.execute("SELECT id, title, text FROM chunks ORDER BY id").fetchall()
            document_count = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            fingerprint = corpus_fingerprint(db.execute("SELECT id, title, text FROM documents"))

        dense = faiss.read_index(str(base / DENSE_FILE))
        if old_ids:
            try:
                dense.remove_ids(np.array(old_ids, dtype=np.int64))
            except RuntimeError as exc:
                raise UnsupportedChange(
                    f"the FAISS index type {manifest.faiss_factory!r} cannot remove vectors, so documents cannot "
                    "be replaced or deleted; use a flat or IVF index (SEMQA_FAISS_FACTORY) and rebuild"
                ) from exc
        if chunks:
            dense.add_with_ids(vectors, np.array([c.chunk_id for c in chunks], dtype=np.int64))
        faiss.write_index(dense, str(tmp / DENSE_FILE))
        LexicalIndex.build(
            [f"{title}\n{text}" if title else text for _, title, text in rows], [r[0] for r in rows]
        ).save(tmp / LEXICAL_DIR)

        updated = Manifest(
            **{
                **asdict(manifest),
                "document_count": document_count,
                "chunk_count": len(rows),
                "corpus_fingerprint": fingerprint,
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": {},
            }
        )
        version_dir = publish(index_dir, tmp, updated)
    return ChangeReport(
        version_dir=version_dir,
        upserted=ids_upserted,
        deleted=[d for d in deletes if d in existing],
        missing=[d for d in deletes if d not in existing],
        embedded=embedded,
    )
