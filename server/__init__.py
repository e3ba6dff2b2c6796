"""The HTTP service: app factory, API blueprint, search over a loaded index, gunicorn runner."""

from server.app import create_app, load_searcher
from server.search import MODES, Passage, RetrievalConfig, Searcher, SearchOptions

__all__ = ["MODES", "Passage", "RetrievalConfig", "SearchOptions", "Searcher", "create_app", "load_searcher"]
