"""The Flask application factory."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from apiflask import APIFlask, abort
from flask import request
from werkzeug.routing import Map

from semqa import __version__
from semqa.settings import Settings
from server.admission import TakeTurns, turns_for
from server.api import create_api
from server.auth import Access
from server.batch import create_batch_api
from server.documents import create_documents_api
from server.drain import DiscardUnreadBody
from server.errors import register_error_handlers
from server.keys import KeyRing
from server.limits import UNLIMITED_PATHS, register_limits
from server.observability import register_observability
from server.retrieval import Searcher, load_searcher
from server.retrieval.reload import start_watcher
from server.slack import create_slack_api
from server.stalls import AnswerStalledBodies
from server.web import create_web


class _RoutesAsSent(Map):
    """Paths routed as sent: werkzeug's default merges repeated slashes with a redirect (an HTML 308), which
    sent ``DELETE /documents/%2Fvictim`` to the document ``victim``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "merge_slashes": False})


class _App(APIFlask):
    url_map_class = _RoutesAsSent


def _refuse_undecodable_path() -> None:
    """A path whose %-escapes are not UTF-8 is refused (400): werkzeug reads it with U+FFFD in place of the
    bytes, so ``DELETE /documents/%FF`` deleted the document whose id is "\ufffd". Judged on the path as
    sent (``RAW_URI``, which gunicorn and werkzeug both give), before anything decoded it."""
    environ = request.environ
    try:
        if "RAW_URI" in environ:  # the request target, as Latin-1 characters of its bytes
            urllib.parse.unquote_to_bytes(environ["RAW_URI"].split("?", 1)[0].encode("latin-1")).decode(
                "utf-8"
            )
        else:  # a server that gives no RAW_URI: the path it decoded, as Latin-1 characters of its bytes
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        abort(400, "the path is not UTF-8 once its %-escapes are decoded: percent-encode an id's UTF-8 bytes")


def create_app(settings: Settings | None = None, searcher: Searcher | None = None) -> APIFlask:
    """Build the app. The model and index are loaded here, once per process, unless ``searcher`` is given
    (tests share one across apps)."""
    settings = settings or Settings()
    # No app-level static folder: the page's files are the web blueprint's, served at /static.
    app = _App("semqa", title="semqa", version=__version__, docs_ui="redoc", static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        VALIDATION_ERROR_STATUS_CODE=400,
        VALIDATION_ERROR_DESCRIPTION="Invalid request",
    )
    app.json.sort_keys = False
    searcher = searcher or load_searcher(settings)
    app.extensions["semqa.searcher"] = searcher
    watcher = start_watcher(settings, searcher.reader)
    if watcher is not None:
        app.extensions["semqa.watcher"] = watcher
        app.before_request(watcher.before_request)
    register_error_handlers(app)
    access = Access(KeyRing.from_settings(settings), settings.read_requires_key)
    app.register_blueprint(create_api(settings, access))
    app.register_blueprint(create_documents_api(settings, searcher, access))
    app.register_blueprint(create_batch_api(settings, searcher, access))
    app.register_blueprint(create_slack_api(settings, searcher))
    app.register_blueprint(create_web(settings))
    register_observability(app, searcher, access)  # first, so even a refused request gets its id and log line
    register_limits(app, settings)
    app.before_request(_refuse_undecodable_path)  # after the request id and the limits, before any view
    app.security_schemes = {"ApiKey": {"type": "http", "scheme": "bearer"}}
    app.wsgi_app = TakeTurns(  # type: ignore[method-assign]
        app.wsgi_app,
        turns_for(settings),
        (*UNLIMITED_PATHS, "/documents"),
        settings.max_body_bytes,
    )
    app.wsgi_app = DiscardUnreadBody(  # type: ignore[method-assign]
        app.wsgi_app, settings.max_discard_bytes, settings.max_discard_seconds
    )
    app.wsgi_app = AnswerStalledBodies(app.wsgi_app, settings.client_timeout)  # type: ignore[method-assign]
    logging.getLogger(__name__).info("semqa ready: index %s", searcher.view.name)
    return app
