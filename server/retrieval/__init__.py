"""The retrieval core: search over the current view of the index (candidates, fusion, highlights) and its
live refresh.

Nothing here imports Flask: ``semqa ask``, ``semqa mcp``, ``semqa eval`` and the benchmarks use it without
loading the web app.
"""

from server.retrieval.load import configured_encoder, load_searcher, open_reader
from server.retrieval.search import Passage, RetrievalConfig, Searcher, SearchOptions

__all__ = [
    "Passage",
    "RetrievalConfig",
    "SearchOptions",
    "Searcher",
    "configured_encoder",
    "load_searcher",
    "open_reader",
]
