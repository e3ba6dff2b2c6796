"""Loading the model and the current index version into a ``Searcher``."""

from __future__ import annotations

from embeddings import Encoder, load_encoder
from indexer import IndexVersion, load_version
from semqa.settings import Settings
from server.retrieval.ranking import Ranker
from server.retrieval.search import RetrievalConfig, Searcher


def load_current(settings: Settings, encoder: Encoder) -> IndexVersion:
    """The current version of the configured index directory, checked against ``encoder``'s model."""
    return load_version(settings.index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)


def load_searcher(settings: Settings, encoder: Encoder | None = None) -> Searcher:
    """Load the model (unless given) and the current index version, checked against each other."""
    import faiss

    # One FAISS thread: a single query is 5-8x slower with OpenMP threads fighting torch's for two cores
    # (bench measured 23 ms vs 3.5 ms for one search over 18k vectors); concurrency comes from requests.
    faiss.omp_set_num_threads(1)
    encoder = encoder or load_encoder(settings.model, settings.model_sha256, settings.torch_threads)
    version = load_current(settings, encoder)
    config = RetrievalConfig(
        fusion=settings.fusion,
        alpha=settings.fusion_alpha,
        highlight_alpha=settings.highlight_alpha,
        candidates=settings.candidates,
        ranker=Ranker.load() if settings.ranking == "model" else None,
    )
    return Searcher(encoder, version, config)
