"""Indexing: read documents, cut them into passages, embed them and write an index directory."""

from indexer.build import BuildReport, build_index
from indexer.chunking import ChunkingConfig
from indexer.documents import Chunk, Document
from indexer.readers import CorpusError, read_corpus
from indexer.store import IndexLoadError, IndexVersion, has_index, load_version

__all__ = [
    "BuildReport",
    "Chunk",
    "ChunkingConfig",
    "CorpusError",
    "Document",
    "IndexLoadError",
    "IndexVersion",
    "build_index",
    "has_index",
    "load_version",
    "read_corpus",
]
