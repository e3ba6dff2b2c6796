"""Embedding models: loading (with weight verification), tokenisation for chunk budgets, batch encoding."""

from embeddings.cache import EmbeddingCache
from embeddings.encoder import Encoder
from embeddings.model import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256, ModelError, load_encoder

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_SHA256",
    "EmbeddingCache",
    "Encoder",
    "ModelError",
    "load_encoder",
]
