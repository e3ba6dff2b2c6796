"""Per-client rate limits (flask-limiter) and CORS (flask-cors), both from settings.

Limits count per client address in each worker's memory: with N workers a client gets up to N times
the limit in the worst case. Behind a reverse proxy, have the proxy set the client address (gunicorn's
``forwarded_allow_ips``), or every client shares the proxy's budget.
"""

from __future__ import annotations

from apiflask import APIFlask
from flask import request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from semqa.settings import Settings

UNLIMITED_PATHS = ("/health", "/ready", "/metrics", "/openapi.json", "/docs")
WRITE_ENDPOINTS = ("documents.upsert", "documents.delete")


def register_limits(app: APIFlask, settings: Settings) -> None:
    """Call after the blueprints are registered: write endpoints get their own, lower limit."""
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=[settings.rate_limit] if settings.rate_limit else [],
        storage_uri="memory://",
        headers_enabled=True,  # X-RateLimit-* on every answer, Retry-After on a 429
    )

    @limiter.request_filter
    def _probes_are_free() -> bool:
        return request.method == "OPTIONS" or request.path.startswith(UNLIMITED_PATHS)

    for endpoint in WRITE_ENDPOINTS:
        view = app.view_functions[endpoint]
        if settings.write_rate_limit:
            limiter.limit(settings.write_rate_limit)(view)
        else:
            limiter.exempt(view)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        CORS(app, origins=origins, expose_headers=["X-Request-ID", "Retry-After"])
