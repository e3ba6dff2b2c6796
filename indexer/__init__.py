"""Indexing and the index engine: read documents, cut them into passages, embed them, keep them in the
store, and derive the dense and lexical indexes that answer questions."""

from indexer.build import API_SOURCE, BuildReport, build_index
from indexer.chunking import ChunkingConfig
from indexer.documents import Chunk, Document
from indexer.layout import IndexLoadError, has_index
from indexer.reader import IndexReader, IndexView, check_index, indexed_backend
from indexer.readers import CorpusError, read_corpus

__all__ = [
    "API_SOURCE",
    "BuildReport",
    "Chunk",
    "ChunkingConfig",
    "CorpusError",
    "Document",
    "IndexLoadError",
    "IndexReader",
    "IndexView",
    "build_index",
    "check_index",
    "has_index",
    "indexed_backend",
    "read_corpus",
]
