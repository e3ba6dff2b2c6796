"""Request ids, one structured JSON log line per request, and Prometheus metrics.

``GET /metrics`` needs a key (either scope) exactly when reads do: it names routes and counts documents.

Under several gunicorn workers the metrics are aggregated across processes with prometheus-client's
multiprocess mode: `semqa serve` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the
workers start, so ``GET /metrics`` on any worker reports the whole server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from apiflask import APIFlask
from flask import Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from server.admission import ARRIVED
from server.auth import Access

# the method label of the request counter: any other is counted as "other", so that a client sending made-up
# methods cannot add series without end (the route label is "unmatched" for any path not routed)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter("semqa_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "semqa_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INDEX_VERSION = Gauge(
    "semqa_index_version", "Sequence number of the index version served", multiprocess_mode="livemax"
)
DOCUMENTS = Gauge("semqa_documents", "Documents in the index served", multiprocess_mode="livemax")
CHUNKS = Gauge("semqa_chunks", "Passages in the index served", multiprocess_mode="livemax")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("semqa.access")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (gunicorn and test runners replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _json_handler() -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def register_observability(app: APIFlask, searcher: Any, access: Access) -> None:
    if not access_log.handlers:
        access_log.addHandler(_json_handler())
        access_log.setLevel(logging.INFO)
        access_log.propagate = False

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = (
            given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        )  # a bad id is replaced, not echoed
        g.started = request.environ.get(ARRIVED) or time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        """The request id goes on the answer; the request is counted and logged once the answer has been
        sent (the WSGI server closes an answer after writing it, as gunicorn writes its own access log
        then), so no client waits for the bookkeeping, and ``ms`` covers sending the answer too. A file
        answer (static files) is handed to the server as the file itself, which closes only the file: it is
        counted and logged here, before it is sent."""
        started = g.get("started", time.perf_counter())
        request_id = g.get("request_id")
        response.headers["X-Request-ID"] = request_id or ""
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method, path, client, status = request.method, request.path, request.remote_addr, response.status_code

        def record() -> None:
            seconds = time.perf_counter() - started
            REQUESTS.labels(route, method if method in METHODS else "other", str(status)).inc()
            LATENCY.labels(route).observe(seconds)
            line = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 2),
                "client": client,
            }
            access_log.info(json.dumps(line))

        if response.direct_passthrough:
            record()
        else:
            response.call_on_close(record)
        return response

    @app.get("/metrics")
    @app.doc(
        summary="Prometheus metrics",
        description="Needs a key (read or write scope) when reads need one.",
        responses={200: {"content": {"text/plain": {}}}},
    )
    def metrics() -> Response:
        access.read("reading metrics")
        view = searcher.view
        INDEX_VERSION.set(view.seq)
        DOCUMENTS.set(view.store.document_count)
        CHUNKS.set(view.store.chunk_count)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest()
        return Response(body, content_type=CONTENT_TYPE_LATEST)  # as is: it names its charset already
