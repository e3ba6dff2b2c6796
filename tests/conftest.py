"""Shared fixtures: one real model per session, one real index of the real corpus per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask

from embeddings import EmbeddingCache, Encoder, load_encoder
from indexer import BuildReport, ChunkingConfig, IndexReader, build_index
from semqa.settings import Settings
from server.app import create_app
from server.retrieval import Searcher, load_searcher

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
DATA = Path(__file__).resolve().parent / "data"


def copy_index(source: Path, target: Path) -> Path:
    """A private copy of an index directory, without the lock files of the processes using the original."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock", ".compact.lock"))
    return target


def private_app(index_dir: Path, settings: Settings, encoder: Encoder, **updates: Any) -> APIFlask:
    """An app over a private copy (at ``index_dir``) of the index of ``settings``, with ``updates``."""
    copy_index(settings.index_dir, index_dir)
    private = settings.model_copy(update={"index_dir": index_dir, **updates})
    return create_app(private, searcher=load_searcher(private, encoder))


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session's ONNX exports (each is made once, a few seconds)."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx_encoder(onnx_cache: Path) -> Encoder:
    return load_encoder(backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def int8_encoder(onnx_cache: Path) -> Encoder:
    """The default backend of a new index."""
    return load_encoder(backend="onnx-int8", cache_dir=onnx_cache)


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


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """One local Ray instance with 2 CPUs for the whole session (starting one takes ~10 s); the Ray build's
    in-process calls use this connection, command-line runs get its address."""
    import logging

    import ray

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
