"""The JSON shapes of passages, answers, health and errors, shared by the HTTP API and MCP (no web framework)."""

from __future__ import annotations

from typing import Any

from indexer import IndexView
from server.retrieval import Passage


def passage_json(p: Passage) -> dict[str, Any]:
    chunk = p.chunk
    return {
        "text": chunk.text,
        "score": p.score,
        "scores": {"dense": p.dense_score, "lexical": p.lexical_score},
        "document_id": chunk.document_id,
        "title": chunk.title,
        "chunk_id": str(chunk.chunk_id),
        "start": chunk.start,
        "end": chunk.end,
        "highlight": None
        if p.highlight is None
        else {
            "text": p.highlight.text,
            "start": p.highlight.start,
            "end": p.highlight.end,
        },
        "metadata": chunk.metadata,
    }


def answer_json(p: Passage) -> dict[str, Any]:
    """The top passage's highlight (or the passage itself), with offsets in its document."""
    chunk = p.chunk
    start, end = (p.highlight.start, p.highlight.end) if p.highlight else (0, len(chunk.text))
    return {
        "text": chunk.text[start:end],
        "document_id": chunk.document_id,
        "title": chunk.title,
        "chunk_id": str(chunk.chunk_id),
        "start": chunk.start + start,
        "end": chunk.start + end,
    }


def health_json(view: IndexView) -> dict[str, Any]:
    """Liveness and what is served: the body of ``GET /health``."""
    return {
        "status": "ok",
        "model": view.store.store.config.model_name,
        "documents": view.store.document_count,
        "chunks": view.store.chunk_count,
        "index_version": view.name,
    }


ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    421: "misdirected_request",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code": <slug>, "message": <what to do>}}``."""
    return {"error": {"code": ERROR_CODES.get(status, "error"), "message": message}}
