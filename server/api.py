"""The HTTP API blueprint: ``POST /ask`` and ``GET /health``."""

from __future__ import annotations

import time
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, request

from semqa.settings import Settings
from server.auth import Access
from server.json_body import read_json, require_json
from server.responses import answer_json, health_json, passage_json
from server.retrieval import Searcher, SearchOptions
from server.schemas import AskOut, HealthOut, ReadyOut, ask_schema


def searcher() -> Searcher:
    return current_app.extensions["semqa.searcher"]


def create_api(settings: Settings, access: Access) -> APIBlueprint:
    """The API blueprint, its input limits taken from ``settings``."""
    api = APIBlueprint("api", __name__)

    @api.before_request
    def _require_json_and_key() -> None:
        require_json()
        if request.endpoint == "api.ask":  # the probes stay open
            access.read("asking")
        read_json()

    @api.post("/ask")
    @api.input(ask_schema(settings), location="json", arg_name="body")
    @api.output(AskOut)
    @api.doc(
        summary="Passages that answer a question",
        description="Best first, each with the span that best answers; `answer` quotes the top one.",
    )
    def ask(body: dict[str, Any]) -> Response:
        started = time.perf_counter()
        options = SearchOptions(
            mode=body["mode"],
            documents=body["documents"],
            group_by_document=body["group_by_document"],
            min_score=body["min_score"],
        )
        passages = searcher().search(body["question"], body["top_k"], options)
        # Made JSON here, already in AskOut's shape (the schema documents it): serialising it again through
        # marshmallow was the largest cost of the Flask layer in a profile of /ask.
        return current_app.json.response(
            {
                "question": body["question"],
                "mode": options.mode,
                "answer": answer_json(passages[0]) if passages else None,
                "passages": [passage_json(p) for p in passages],
                "took_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )

    @api.get("/ready")
    @api.output(ReadyOut)
    @api.doc(
        summary="Readiness: this worker serves a loaded, verified index version",
        description="A worker accepts connections only once it has loaded the model and an index version "
        "(until the first one has, connections wait in the listen backlog), so every answer is 200. "
        "`reload_error` says why a newer version on disk was not loaded; the last good one is still served.",
    )
    def ready() -> dict[str, Any]:
        watcher = current_app.extensions.get("semqa.watcher")
        return {
            "status": "ready",
            "index_version": searcher().view.name,
            "reload_error": watcher.error if watcher else None,
        }

    @api.get("/health")
    @api.output(HealthOut)
    @api.doc(summary="Liveness and what is loaded")
    def health() -> dict[str, Any]:
        return health_json(searcher().view)

    return api
