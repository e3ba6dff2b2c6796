"""One error shape for every failure: ``{"error": {"code": <slug>, "message": <what to do>}}``."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask
from apiflask.exceptions import HTTPError
from flask import request

from indexer import IndexLoadError
from server.responses import error_body
from server.stalls import BodyTimedOut

log = logging.getLogger(__name__)


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """Marshmallow's nested error dict as readable lines: ``top_k: Must be between 1 and 50.``"""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = "" if key in ("json", "_schema") else str(key)
            lines += _flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name)
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
# What any endpoint may answer besides its own success: published in /openapi.json so clients (and the
# schema-driven fuzz test) know every status they can get.
COMMON_ERRORS = {
    400: "Invalid request",
    401: "Missing or wrong API key",
    403: "No API key with the scope needed is configured, or the key has the read scope only",
    404: "Not found",
    405: "Method not allowed",
    408: "The request body stopped arriving (SEMQA_CLIENT_TIMEOUT); send it again",
    409: "The index cannot take this change",
    413: "Body too large",
    415: "Body is not JSON",
    429: "Rate limited (see Retry-After)",
    500: "Internal error",
    503: "Index unavailable, or every write slot busy (see Retry-After)",
}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Every operation documents the common errors with the one error shape, and a body it reads is
    required (APIFlask leaves both out)."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
            for status, description in COMMON_ERRORS.items():
                operation["responses"][str(status)] = {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
    for unused in ("ValidationError", "HTTPError"):
        spec["components"]["schemas"].pop(unused, None)
    return spec


def register_error_handlers(app: APIFlask) -> None:
    app.spec_processor(document_errors)

    @app.error_processor
    def _api_error(error: HTTPError) -> tuple[dict[str, Any], int, Any]:
        message = error.message
        if error.status_code == 400 and error.detail:
            message = "invalid request: " + "; ".join(_flatten(error.detail))
        elif error.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see GET /openapi.json for the API"
        elif error.status_code == 413:
            message = f"request body too large; the limit here is {request.max_content_length} bytes"
        elif error.status_code == 429:
            message = "rate limit exceeded; retry after the number of seconds in the Retry-After header"
        elif error.status_code == 405:
            message = "method not allowed on this endpoint; see GET /openapi.json"
        return error_body(error.status_code, message), error.status_code, error.headers

    @app.errorhandler(BodyTimedOut)
    def _body_timed_out(exc: BodyTimedOut) -> Any:
        return error_body(408, str(exc)), 408

    @app.errorhandler(IndexLoadError)
    def _index_unavailable(exc: IndexLoadError) -> Any:
        log.error("index unavailable: %s", exc)
        return error_body(503, f"the index cannot be used: {exc}"), 503

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception) -> Any:
        log.exception("unhandled error")
        return error_body(500, "internal error; the server log has the details"), 500
