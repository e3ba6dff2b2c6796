"""The HTTP service: app factory, API blueprint, search over a loaded index, gunicorn runner."""

from semqa.settings import MODES
from server.app import create_app, load_searcher
from server.search import Passage, RetrievalConfig, Searcher, SearchOptions

__all__ = ["MODES", "Passage", "RetrievalConfig", "SearchOptions", "Searcher", "create_app", "load_searcher"]
