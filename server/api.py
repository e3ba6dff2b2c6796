"""The HTTP API blueprint: ``POST /ask`` and ``GET /health``."""

from __future__ import annotations

import time
from typing import Any

from apiflask import APIBlueprint, abort
from flask import current_app, request

from semqa.settings import Settings
from server.schemas import AskOut, HealthOut, ask_schema
from server.search import Searcher


def searcher() -> Searcher:
    return current_app.extensions["semqa.searcher"]


def create_api(settings: Settings) -> APIBlueprint:
    """The API blueprint, its input limits taken from ``settings``."""
    api = APIBlueprint("api", __name__)

    @api.before_request
    def _require_json() -> None:
        if request.method in ("POST", "PUT", "PATCH") and not request.is_json:
            abort(415, "send the body as JSON with Content-Type: application/json")

    @api.post("/ask")
    @api.input(ask_schema(settings), location="json", arg_name="body")
    @api.output(AskOut)
    @api.doc(
        summary="Passages that answer a question", description="Best first; scores are cosine similarities."
    )
    def ask(body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        passages = searcher().search(body["question"], body["top_k"])
        return {
            "question": body["question"],
            "passages": [
                {
                    "text": p.chunk.text,
                    "score": p.score,
                    "document_id": p.chunk.document_id,
                    "title": p.chunk.title,
                    "chunk_id": str(p.chunk.chunk_id),
                    "start": p.chunk.start,
                    "end": p.chunk.end,
                }
                for p in passages
            ],
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    @api.get("/health")
    @api.output(HealthOut)
    @api.doc(summary="Liveness and what is loaded")
    def health() -> dict[str, Any]:
        version = searcher().version
        return {
            "status": "ok",
            "model": version.manifest.model_name,
            "documents": version.manifest.document_count,
            "chunks": version.manifest.chunk_count,
            "index_version": version.name,
        }

    return api
