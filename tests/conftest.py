"""Shared fixtures: one real model per session, one real index of the real corpus per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from embeddings import EmbeddingCache, Encoder, load_encoder
from indexer import BuildReport, ChunkingConfig, IndexReader, build_index
from semqa.settings import Settings
from server.app import create_app
from server.retrieval import Searcher

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def corpus_settings(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Settings:
    return Settings(
        index_dir=tmp_path_factory.mktemp("index"),
        cache_dir=cache_dir,
        corpus=CORPUS,
        quiet=True,
        reload_interval=0,
    )


@pytest.fixture(scope="session")
def corpus_build(corpus_settings: Settings, encoder: Encoder) -> BuildReport:
    """The real corpus indexed with the real model and the default settings."""
    return build_index(
        [CORPUS],
        index_dir=corpus_settings.index_dir,
        encoder=encoder,
        chunking=ChunkingConfig(corpus_settings.chunk_tokens, corpus_settings.chunk_overlap),
        cache=EmbeddingCache(corpus_settings.cache_dir, encoder),
    )


@pytest.fixture(scope="session")
def searcher(corpus_build: BuildReport, corpus_settings: Settings, encoder: Encoder) -> Searcher:
    reader = IndexReader(
        corpus_settings.index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension
    )
    return Searcher(encoder, reader)


@pytest.fixture()
def app(corpus_settings: Settings, searcher: Searcher):
    app = create_app(corpus_settings, searcher=searcher)
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def client(app):
    return app.test_client()
