"""The encoder: a batch function from texts to L2-normalised float32 vectors, plus the model's tokenizer.

``encode`` is deliberately a pure batch function (texts in, vectors out, no I/O) so that it can later run
on a distributed engine unchanged. Single texts go through it too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from embeddings.onnx_forward import OnnxForward

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class Encoder:
    """A loaded sentence-transformers model with what the indexer needs to know about it."""

    def __init__(
        self,
        model: SentenceTransformer,
        *,
        name: str,
        weights_sha256: str,
        backend: str = "torch",
        threads: int = 0,
    ) -> None:
        self._model = model
        self.name = name
        self.weights_sha256 = weights_sha256
        self.backend = backend  # what computes the vectors: see embeddings.backends
        self.dimension: int = int(model.get_embedding_dimension() or 0)
        self.max_seq_length: int = int(model.max_seq_length)
        # A private copy of the fast tokenizer with truncation and padding off, used to measure text in
        # model tokens (the Rust tokenizer's encode is safe from several threads). The model's own HF
        # tokenizer changes its settings per call, so calls into the model are serialised by the lock.
        backend: Tokenizer = model.tokenizer.backend_tokenizer
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.special_tokens: int = (
            self._tokenizer.post_processor.num_special_tokens_to_add(False)
            if (self._tokenizer.post_processor is not None)
            else 0
        )
        self._lock = threading.Lock()
        # The ONNX backends run straight on their onnxruntime session (embeddings.onnx_forward), without
        # the lock; torch, and a pipeline the direct pass does not reproduce, go through sentence-transformers.
        self._onnx = OnnxForward.of(model) if backend != "torch" else None
        # The ONNX backends run each text alone on a single-threaded session, ``threads`` texts at a time
        # (0 = one per core); torch runs batches on its own threads.
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def max_content_tokens(self) -> int:
        """How many content tokens fit in one model input once special tokens are added."""
        return self.max_seq_length - self.special_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` of every model token of ``text`` (no special tokens, no truncation)."""
        return [tuple(o) for o in self._tokenizer.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text, special tokens included: what the model would read without truncation."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Embed ``texts`` into an ``(n, dimension)`` float32 array of unit vectors, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._onnx is not None:
            return self._encode_direct(texts, batch_size)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_spans(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *, batch_size: int = 32
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Vectors of ``texts`` (as ``encode``) and, from the same forward pass, one unit vector per span of
        each text: the mean of the text's contextual token embeddings inside the span ("late chunking").

        A sentence read in its passage's context is represented better than the sentence alone, and it
        costs no extra model call: this is what the highlighter compares questions against.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        span_vectors: list[np.ndarray] = [np.zeros((0, self.dimension), np.float32)] * len(texts)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        for rows, tokens, pooled in self._passes(texts, encodings, batch_size):
            for row, token_rows, vector in zip(rows, tokens, pooled, strict=True):
                vectors[row] = vector
                span_vectors[row] = _pool_spans(spans[row], encodings[row], token_rows, vector)
        return np.ascontiguousarray(vectors), span_vectors

    def _encode_direct(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """``encode`` on the ONNX session directly (see ``embeddings.onnx_forward``)."""
        assert self._onnx is not None
        if len(texts) == 1:  # a question: on the caller's thread
            return self._onnx(texts)[1]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for rows, _, pooled in self._passes(texts, None, batch_size):
            vectors[rows] = pooled
        return vectors

    def _passes(
        self, texts: Sequence[str], encodings: Sequence[Any] | None, batch_size: int
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """Forward passes over ``texts``, in input order: ``(rows, padded token embeddings, unit vectors)``.

        ONNX: every text alone, ``threads`` at once on a single-threaded session. Measured on this 2-core
        machine (400 SciFact passages, BENCHMARKS.md "Encoder backends"), that embeds 1.5x as many passages
        a second as batches of 32 on a session with two threads (float32 60 against 39 passages/s, int8
        126 against 88): a text alone pads nothing, its activations stay in cache, and no operator waits for
        a second thread. It also makes a text's vector independent of the texts beside it, which int8 needs
        (its activations are quantised per call, over the whole batch). Torch: batches longest first, as
        sentence-transformers' ``encode`` does, so each pads little."""
        if self._onnx is None:
            encodings = encodings or self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
            order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
            for first in range(0, len(order), batch_size):
                rows = order[first : first + batch_size]
                yield (rows, *self._forward([texts[i] for i in rows]))
            return
        onnx = self._onnx

        def alone(row: int) -> tuple[list[int], np.ndarray, np.ndarray]:
            return ([row], *onnx([texts[row]]))

        if self.threads == 1 or len(texts) == 1:
            yield from map(alone, range(len(texts)))
            return
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="semqa-encode")
        yield from self._pool.map(alone, range(len(texts)))

    def _forward(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass of the model's module pipeline: padded token embeddings and unit text vectors.

        The modules are called directly (not through ``encode``) because ``encode`` does not return the
        token embeddings and the text vector of one pass together in every sentence-transformers release."""
        if self._onnx is not None:
            return self._onnx(texts)
        import torch

        with self._lock, torch.inference_mode():
            features = self._model.preprocess(list(texts))
            device = self._model.device
            output = self._model({k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()})
            tokens = output["token_embeddings"].float().cpu().numpy()
            pooled = output["sentence_embedding"].float().cpu().numpy()
        # Normalised here whatever the model's own modules do: cosine is the inner product.
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return tokens, pooled.astype(np.float32)


def _pool_spans(
    text_spans: Sequence[tuple[int, int]], encoding: Any, tokens: np.ndarray, vector: np.ndarray
) -> np.ndarray:
    """One unit vector per span: the mean of the contextual embeddings of the tokens that start inside it
    (the text's own vector where a span holds no token)."""
    n = min(len(encoding.ids), len(tokens))  # rows past n are padding (or cut by max_seq_length)
    starts = np.array([start for start, _ in encoding.offsets[:n]])
    content = np.array(encoding.special_tokens_mask[:n]) == 0
    bounds = np.array(text_spans, dtype=np.int64).reshape(-1, 2)
    # members[s, t]: token t lies in span s; one matrix product pools every span of the text.
    members = content & (starts >= bounds[:, :1]) & (starts < bounds[:, 1:])
    counts = members.sum(axis=1, keepdims=True)
    pooled = np.where(counts > 0, members @ tokens[:n] / np.maximum(counts, 1), vector)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32)
