"""Loading the model and the current view of the index into a ``Searcher``."""

from __future__ import annotations

from pathlib import Path

from embeddings import Encoder, load_encoder
from embeddings.backends import NEW_INDEX_BACKEND, resolve_backend
from indexer import IndexReader, indexed_backend
from indexer.dense import SearchEffort
from semqa.settings import Settings
from server.retrieval.ranking import Ranker
from server.retrieval.search import RetrievalConfig, Searcher


def configured_backend(settings: Settings, index_dir: Path | None, new_index: str | None = None) -> str:
    """The backend setting to run for the index in ``index_dir`` (None: a new, scratch index), where the
    setting is ``auto``: see ``embeddings.backends.resolve_backend`` (``new_index``: what a new index is
    built with, if not its default)."""
    stored = indexed_backend(index_dir) if index_dir else None
    return resolve_backend(settings.backend, stored, new_index or NEW_INDEX_BACKEND)


def configured_encoder(settings: Settings, index_dir: Path | None, backend: str | None = None) -> Encoder:
    """The configured model on ``backend``, or on the backend for the index in ``index_dir`` (None: a new,
    scratch index), its weights verified."""
    return load_encoder(
        settings.model,
        settings.model_sha256,
        settings.torch_threads,
        backend=backend or configured_backend(settings, index_dir),
        cache_dir=settings.cache_dir,
    )


def open_reader(settings: Settings, encoder: Encoder) -> IndexReader:
    """The configured index directory, checked against ``encoder``'s model and backend."""
    return IndexReader(
        settings.index_dir,
        model_sha256=encoder.weights_sha256,
        dimension=encoder.dimension,
        backend=encoder.backend,
        effort=SearchEffort(ef_search=settings.ef_search, nprobe=settings.nprobe),
    )


def load_searcher(settings: Settings, encoder: Encoder | None = None) -> Searcher:
    """Load the model (unless given) and the current view of the index, checked against each other."""
    encoder = encoder or configured_encoder(settings, settings.index_dir)
    config = RetrievalConfig(
        fusion=settings.fusion,
        alpha=settings.fusion_alpha,
        highlight_alpha=settings.highlight_alpha,
        candidates=settings.candidates,
        ranker=Ranker.load() if settings.ranking == "model" else None,
    )
    return Searcher(encoder, open_reader(settings, encoder), config)
