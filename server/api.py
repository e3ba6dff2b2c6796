"""The HTTP API blueprint: ``POST /ask`` and ``GET /health``."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from apiflask import APIBlueprint, abort
from flask import Response, current_app, request

from semqa.settings import Settings
from server.auth import Access
from server.drain import body_framing
from server.responses import answer_json, health_json, passage_json
from server.retrieval import Searcher, SearchOptions
from server.schemas import AskOut, HealthOut, ReadyOut, ask_schema


def require_json() -> None:
    """A request with a body sends JSON: declared so (415), within the route's limit (413; one sent chunked
    is read whole here), and readable as JSON (400, saying why, before the schema's checks)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if not request.is_json:
        abort(415, "send the body as JSON with Content-Type: application/json")
    _read_chunked_body()
    _check_json(request.get_data(cache=True))


def _check_json(body: bytes) -> None:
    """The body parses as UTF-8 JSON. webargs answers a body that does not with a bare "Bad Request", and
    one nested past the interpreter's recursion limit, or holding an integer of more than 4,300 digits,
    with a 500 (a ``RecursionError`` or ``ValueError`` it does not catch); parsed here first (microseconds
    for a question), each is a 400 that says what is wrong."""
    try:
        json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        abort(
            400, f"invalid request: the body is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON"
        )
    except RecursionError:
        abort(400, "invalid request: the JSON nests too deeply to read")
    except ValueError as exc:  # json.JSONDecodeError, or too many digits
        abort(400, f"invalid request: the body is not JSON that can be read: {exc}")


def _read_chunked_body() -> None:
    """A body sent chunked (no declared length), read now and handed on as a declared one; 413 beyond the
    limit. werkzeug stops reading such a body at the limit without looking for more, so one longer than
    the limit was parsed cut short (400, "Bad Request") instead of refused as a declared one is. A
    refused body's rest is left to the unread-body discard (server.drain)."""
    environ = request.environ
    if body_framing(environ) != (0, True):
        return
    limit = request.max_content_length
    body = environ["wsgi.input"].read(-1 if limit is None else limit + 1)
    if limit is not None and len(body) > limit:
        abort(413)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    del environ["HTTP_TRANSFER_ENCODING"]


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
