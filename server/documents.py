"""The documents blueprint: upsert, delete, list and read documents of the live index.

A write makes its passages (chunked and embedded with the worker's own write encoder, so questions never
wait behind a write's embedding), then joins the group commit of ``indexer.writer.Writer``: it is answered
once it is durable and searchable, and this worker serves it from the very next request (the others from
theirs). Passages written since the last compaction past ``SEMQA_COMPACT_AFTER`` start a compaction in
the background (``semqa compact``, its own process).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from apiflask import APIBlueprint, abort
from flask import request
from marshmallow import RAISE
from werkzeug.routing import PathConverter

from embeddings import EmbeddingCache, Encoder
from embeddings.backends import incompatibility
from embeddings.files import Busy, file_lock
from indexer import API_SOURCE, Document, IndexLoadError
from indexer.chunking import ChunkingConfig
from indexer.layout import COMPACT_LOCK
from indexer.passages import prepare_upserts
from indexer.store import Change, Committed, Delete
from indexer.writer import ConfigChanged, NotSearchable, Writer
from semqa.settings import Settings
from server.auth import Access
from server.json_body import read_json, require_json
from server.retrieval import Searcher, configured_encoder
from server.schemas import DeleteOut, DocumentList, DocumentOut, PageQuery, UpsertOut, upsert_schema

log = logging.getLogger(__name__)


class DocumentWrites:
    """This worker's write path: a write encoder (loaded at the first write), the embedding cache, the
    group-commit writer, and the automatic compaction trigger."""

    def __init__(self, settings: Settings, searcher: Searcher) -> None:
        self.settings = settings
        self.searcher = searcher
        self.writer = Writer(
            settings.index_dir,
            searcher.reader.store,
            lock_timeout=settings.write_wait,
            on_commit=self._committed,
        )
        # A write holds its thread while it embeds and waits for its commit, and so does a write waiting
        # for a slot: a quarter of the worker's threads may write, and half of the rest may wait for a slot
        # (``write_wait``); a write beyond those is answered 503 + Retry-After at once, so that the other
        # half stays for questions whatever the number of writers. (Each refused write frees its thread in
        # microseconds; before, with threads - 1 slots and every further write waiting, 32 writing clients
        # kept questions queued behind them in gunicorn's thread pool for 7.5 s at p50.) As
        # Elasticsearch's bounded write queue answers 429, writes are refused rather than reads starved.
        writing = max(1, settings.threads // 4)
        self.slots = threading.BoundedSemaphore(writing)
        self.waiting_room = threading.BoundedSemaphore((settings.threads - writing) // 2)
        self._encoder: Encoder | None = None
        self._cache: EmbeddingCache | None = None
        self._load = threading.Lock()

    def encoder(self) -> tuple[Encoder, EmbeddingCache]:
        with self._load:
            if self._encoder is None:
                s = self.settings
                self._encoder = configured_encoder(s, s.index_dir)
                self._cache = EmbeddingCache(s.cache_dir, self._encoder)
            assert self._cache is not None
            return self._encoder, self._cache

    def commit(
        self, documents: Sequence[Document] = (), deletes: Sequence[str] = ()
    ) -> tuple[Committed, int]:
        """Upsert ``documents`` and delete ``deletes``; returns once durable and visible here, with how many
        passages had to be embedded."""
        if not self._take_slot():
            abort(503, "every write slot of this worker is busy; retry shortly", headers={"Retry-After": "1"})
        try:
            committed, embedded = self._submit(documents, deletes)
        except Busy:
            abort(
                503,
                "the index is being rebuilt and takes no writes for now; retry shortly",
                headers={"Retry-After": "5"},
            )
        except NotSearchable as exc:
            abort(503, str(exc), headers={"Retry-After": "1"})
        finally:
            self.slots.release()
        try:  # this worker serves its own write from the next request on
            self.searcher.reader.refresh()
        except Exception:  # durable, so acknowledged all the same: the next request retries
            log.exception("commit %s is durable but this worker could not load it yet", committed.seq)
        return committed, embedded

    def _take_slot(self) -> bool:
        """A write slot: free now, or within ``write_wait`` if the waiting room has a place; False if not."""
        if self.slots.acquire(blocking=False):
            return True
        if not self.waiting_room.acquire(blocking=False):
            return False
        try:
            return self.slots.acquire(timeout=self.settings.write_wait)
        finally:
            self.waiting_room.release()

    def _submit(self, documents: Sequence[Document], deletes: Sequence[str]) -> tuple[Committed, int]:
        store = self.searcher.reader.store
        for _ in range(2):  # again if a rebuild changed the chunking or the model meanwhile
            config = store.config
            changes: list[Change] = []
            embedded = 0
            if documents:
                encoder, cache = self.encoder()
                if encoder.weights_sha256 != config.model_sha256:
                    raise IndexLoadError("the index was built with another model; rebuild it before writing")
                problem = incompatibility(config.backend, encoder.backend)
                if problem is not None:  # its vectors would not match the index's
                    raise IndexLoadError(problem)
                upserts, embedded = prepare_upserts(
                    documents, encoder, cache, ChunkingConfig(**config.chunking)
                )
                changes += upserts
            changes += [Delete(d) for d in deletes]
            try:
                return self.writer.submit(changes, config), embedded
            except ConfigChanged:
                store.read_config()
        raise IndexLoadError("the index keeps being rebuilt with other settings; retry the write")

    def _committed(self, seq: int) -> None:
        """After a commit: start a compaction when enough was written since the last one."""
        threshold = self.settings.compact_after
        if not threshold or self.searcher.reader.view.dense.written < threshold:
            return
        try:
            with file_lock(self.settings.index_dir / COMPACT_LOCK, wait=False):
                pass
        except Busy:
            return  # one is running
        log.info(
            "%d passages written since the last compaction: compacting",
            self.searcher.reader.view.dense.written,
        )
        subprocess.Popen(  # its own process: a compaction at a million passages takes minutes of CPU
            [sys.executable, "-m", "semqa.cli", "compact", "--quiet"],
            env={**os.environ, **self.settings.environment()},
            stdout=subprocess.DEVNULL,
            stderr=None,
            start_new_session=True,
        )


class DocumentIdConverter(PathConverter):
    """Any document id the API takes, as the rest of the path: slashes inside or first, and any character
    (werkzeug's ``path`` stops at a newline and must not start with a slash)."""

    regex = r"[\s\S]+"
    part_isolating = False  # it matches slashes (werkzeug infers this from a "/" in the regex)


def create_documents_api(settings: Settings, searcher: Searcher, access: Access) -> APIBlueprint:
    api = APIBlueprint("documents", __name__)
    api.record_once(lambda state: state.app.url_map.converters.setdefault("document_id", DocumentIdConverter))
    writes = DocumentWrites(settings, searcher)
    api.record_once(lambda state: state.app.extensions.setdefault("semqa.writes", writes))

    @api.before_request
    def _limits_and_auth() -> None:
        if request.method in ("POST", "DELETE"):
            request.max_content_length = settings.max_write_body_bytes
            access.write("writing documents")
            require_json()
            read_json()
        else:
            access.read("reading")

    @api.post("/documents")
    @api.input(upsert_schema(settings), location="json", arg_name="body")
    @api.output(UpsertOut)
    @api.doc(summary="Add or replace documents", security="ApiKey", responses=[401, 403, 413])
    def upsert(body: dict[str, Any]) -> dict[str, Any]:
        # Applied in order, like separate requests: when an id comes twice, the last one stands.
        latest = {d["id"]: d for d in body["documents"]}
        documents = [
            Document(
                id=d["id"],
                text=d["text"],
                title=d["title"].strip(),
                metadata=d["metadata"],
                source=API_SOURCE,
            )
            for d in latest.values()
        ]
        committed, embedded = writes.commit(documents=documents)
        return {
            "upserted": [d.id for d in documents],
            "embedded": embedded,
            "index_version": searcher.view.name if committed.seq is None else f"{committed.seq:010d}",
        }

    @api.delete("/documents/<document_id:document_id>")
    @api.output(DeleteOut)
    @api.doc(summary="Remove a document", security="ApiKey", responses=[401, 403, 404])
    def delete(document_id: str) -> dict[str, Any]:
        if searcher.view.store.document(document_id) is None:
            abort(404, f"no document with id {document_id!r}")
        committed, _ = writes.commit(deletes=[document_id])
        if committed.outcomes == ["missing"]:  # deleted by another request in between
            abort(404, f"no document with id {document_id!r}")
        return {"deleted": document_id, "index_version": f"{committed.seq:010d}"}

    @api.get("/documents")
    # unknown parameters are refused (400), not ignored: ?document_id=x would list every document
    @api.input(PageQuery, location="query", arg_name="page", unknown=RAISE)
    @api.output(DocumentList)
    @api.doc(summary="Document ids with titles and chunk counts, by id, paged")
    def list_documents(page: dict[str, Any]) -> dict[str, Any]:
        store = searcher.view.store
        return {
            "total": store.document_count,
            "offset": page["offset"],
            "limit": page["limit"],
            "documents": store.list_documents(page["offset"], page["limit"]),
        }

    @api.get("/documents/<document_id:document_id>")
    @api.output(DocumentOut)
    @api.doc(summary="One document with its text", responses=[404])
    def get_document(document_id: str) -> dict[str, Any]:
        document = searcher.view.store.document(document_id)
        if document is None:
            abort(404, f"no document with id {document_id!r}")
        return document

    return api
