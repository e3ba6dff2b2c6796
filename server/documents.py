"""The documents blueprint: upsert, delete, list and read documents of the live index."""

from __future__ import annotations

import logging
import threading
from typing import Any

from apiflask import APIBlueprint, abort
from flask import request

from embeddings import EmbeddingCache
from indexer import Document, IndexLoadError
from indexer.update import API_SOURCE, UnsupportedChange, apply_changes
from semqa.settings import Settings
from server.api import require_json
from server.auth import Access
from server.retrieval import Searcher, load_current
from server.schemas import DeleteOut, DocumentList, DocumentOut, PageQuery, UpsertOut, upsert_schema

log = logging.getLogger(__name__)


def create_documents_api(settings: Settings, searcher: Searcher, access: Access) -> APIBlueprint:
    api = APIBlueprint("documents", __name__)
    cache = EmbeddingCache(settings.cache_dir, searcher.encoder)
    # A write can wait on the writer lock (held by another worker's write or a build) for as long as that
    # takes, holding its thread meanwhile: at most threads - 1 writes run per worker, so one thread always
    # stays free for questions; a write beyond that answers 503 with Retry-After at once.
    writers = threading.BoundedSemaphore(max(1, settings.threads - 1))

    def publish_changes(**changes: Any) -> Any:
        if not writers.acquire(blocking=False):
            abort(
                503,
                "every write slot of this worker is busy (writes are applied one at a time); retry shortly",
                headers={"Retry-After": "1"},
            )
        try:
            report = apply_changes(settings.index_dir, encoder=searcher.encoder, cache=cache, **changes)
        except UnsupportedChange as exc:
            abort(409, str(exc))
        finally:
            writers.release()
        # This worker serves its own write at once; the others swap before their next request. A write that
        # changed nothing (or was overtaken by a newer one served here) has nothing to load: loading checks
        # every file's hash. The write is durable already: a failure to load it must not report it failed.
        if report.version_dir.name > searcher.version.name:
            try:
                searcher.install(load_current(settings, searcher.encoder))
            except IndexLoadError:
                log.exception("version %s was written but not loaded here", report.version_dir.name)
        return report

    @api.before_request
    def _limits_and_auth() -> None:
        if request.method in ("POST", "DELETE"):
            request.max_content_length = settings.max_write_body_bytes
            access.write("writing documents")
            require_json()
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
        report = publish_changes(upserts=documents)
        return {
            "upserted": report.upserted,
            "embedded": report.embedded,
            "index_version": report.version_dir.name,
        }

    @api.delete("/documents/<path:document_id>")
    @api.output(DeleteOut)
    @api.doc(summary="Remove a document", security="ApiKey", responses=[401, 403, 404])
    def delete(document_id: str) -> dict[str, Any]:
        if searcher.version.store.document(document_id) is None:
            abort(404, f"no document with id {document_id!r}")
        report = publish_changes(deletes=[document_id])
        if report.missing:  # deleted by another request in between
            abort(404, f"no document with id {document_id!r}")
        return {"deleted": document_id, "index_version": report.version_dir.name}

    @api.get("/documents")
    @api.input(PageQuery, location="query", arg_name="page")
    @api.output(DocumentList)
    @api.doc(summary="Document ids with titles and chunk counts, by id, paged")
    def list_documents(page: dict[str, Any]) -> dict[str, Any]:
        store = searcher.version.store
        return {
            "total": store.document_count(),
            "offset": page["offset"],
            "limit": page["limit"],
            "documents": store.list_documents(page["offset"], page["limit"]),
        }

    @api.get("/documents/<path:document_id>")
    @api.output(DocumentOut)
    @api.doc(summary="One document with its text", responses=[404])
    def get_document(document_id: str) -> dict[str, Any]:
        document = searcher.version.store.document(document_id)
        if document is None:
            abort(404, f"no document with id {document_id!r}")
        return document

    return api
