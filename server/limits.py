"""Per-client rate limits (flask-limiter) and CORS (flask-cors), both from settings.

Two limits, both checked before anything else looks at the request (so a refused key counts too):
``rate_limit``, one budget per client address for every route but the probes, metrics and docs; and
``write_rate_limit``, one more budget per client for upserts and deletes together. A write counts
against both.

Limits count per client address in each worker's memory: with N workers a client gets up to N times
the limit in the worst case. Behind a reverse proxy, have the proxy set the client address (gunicorn's
``forwarded_allow_ips``), or every client shares the proxy's budget.
"""

from __future__ import annotations

from apiflask import APIFlask
from flask import Response, request
from flask_cors import CORS
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address

from semqa.settings import Settings
from server.limit_storage import STORAGE_URI

UNLIMITED_PATHS = ("/health", "/ready", "/metrics", "/openapi.json", "/docs")
WRITE_BLUEPRINT = "documents"
WRITE_METHODS = ["POST", "DELETE"]
# flask-limiter puts Retry-After on every answer, replacing the app's own (a busy write slot's 1 s becomes
# the limit's window): it writes it under this name instead, moved to Retry-After on a 429 only.
LIMIT_RETRY_AFTER = "X-RateLimit-Retry-After"


def register_limits(app: APIFlask, settings: Settings) -> None:
    """Call after the blueprints are registered."""

    @app.after_request  # registered before the limiter's hook, so it runs after it
    def _retry_after_only_when_limited(response: Response) -> Response:
        retry = response.headers.pop(LIMIT_RETRY_AFTER, None)
        if response.status_code == 429 and retry is not None:
            response.headers["Retry-After"] = retry
        return response

    limiter = Limiter(
        get_remote_address,
        app=app,
        # Application limits are one counter per client across routes (default limits would keep one
        # per route), and are checked in the limiter's before_request hook like blueprint limits.
        application_limits=[settings.rate_limit] if settings.rate_limit else [],
        storage_uri=STORAGE_URI,  # limits' memory storage, without its thread per request
        headers_enabled=True,  # X-RateLimit-* on every answer, Retry-After on a 429
        header_name_mapping={HeaderNames.RETRY_AFTER: LIMIT_RETRY_AFTER},
    )

    @limiter.request_filter
    def _probes_are_free() -> bool:
        return request.method == "OPTIONS" or request.path.startswith(UNLIMITED_PATHS)

    if settings.write_rate_limit:
        # A blueprint limit, not a decorator: a decorated view is checked only when it runs, after the
        # blueprint's own hooks (keys, content type), and only if the decorated function is the one
        # registered. This one is checked before those hooks, one counter for both write routes.
        limiter.shared_limit(
            settings.write_rate_limit, scope="writes", methods=WRITE_METHODS, override_defaults=False
        )(app.blueprints[WRITE_BLUEPRINT])
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        CORS(app, origins=origins, expose_headers=["X-Request-ID", "Retry-After"])
