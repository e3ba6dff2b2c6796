"""The HTTP service: app factory, API blueprint, search over a loaded index, gunicorn runner."""

from server.app import create_app, load_searcher
from server.search import Passage, Searcher

__all__ = ["Passage", "Searcher", "create_app", "load_searcher"]
