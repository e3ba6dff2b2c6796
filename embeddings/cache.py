"""A persistent embedding cache keyed by (model weights, encoder backend, text) hash.

Embedding is by far the most expensive step (about 20 passages/s on two cores), so every vector the
indexer computes is kept in a SQLite file and reused whenever the same text is embedded again by the
same weights: rebuilding an index after a small change, or re-running an evaluation, re-embeds only new
text. A text's span vectors (see ``Encoder.encode_spans``) are kept with it, keyed by the spans too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embeddings.backends import vector_family
from embeddings.encoder import Encoder
from embeddings.onnx_export import INT8_FORMAT

BLOCK = 512  # texts encoded and committed together

Spans = Sequence[tuple[int, int]]


def cache_key(text: str, spans: Spans) -> bytes:
    spans_part = ";".join(f"{s},{e}" for s, e in spans)
    return hashlib.sha256(f"{text}\x00{spans_part}".encode()).digest()


def cache_file(weights_sha256: str, backend: str) -> str:
    """One file per model and family of interchangeable backends: torch and onnx agree to 2.5e-7 and
    share one (the name it had before there were other backends), so switching between them embeds
    nothing again; each int8 model computes other vectors and keeps its own."""
    family = vector_family(backend)
    # int8 files are "-v<INT8_FORMAT>": each int8 export recipe is another model (each text's vector is
    # computed alone, Encoder._passes, with the MatMuls of onnx_export.float32_matmuls left in float32), so
    # the files of earlier recipes hold other models' vectors and are left unread.
    suffix = "" if family == vector_family("torch") else f"-{backend}-v{INT8_FORMAT}"
    return f"embeddings-{weights_sha256[:16]}{suffix}.sqlite"


class EmbeddingCache:
    """Vectors of one model and backend family, in ``<cache_dir>/embeddings-<weights sha256[:16]>[-<int8 backend>].sqlite``."""

    def __init__(self, cache_dir: Path, encoder: Encoder) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / cache_file(encoder.weights_sha256, encoder.backend)
        self._encoder = encoder
        self._dimension = encoder.dimension
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            # One row per (text, spans): the text's vector first, then one vector per span, float32.
            db.execute("CREATE TABLE IF NOT EXISTS vectors_v2 (key BLOB PRIMARY KEY, vectors BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _lookup(self, keys: list[bytes], rows: list[int]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with closing(self._connect()) as db, db:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, blob in db.execute(
                    f"SELECT key, vectors FROM vectors_v2 WHERE key IN ({marks})", part
                ):
                    found[key] = np.frombuffer(blob, dtype=np.float32).reshape(-1, self._dimension)
        wanted = dict(zip(keys, rows, strict=True))
        return {k: v for k, v in found.items() if len(v) == wanted[k]}  # a stale shape is a miss

    def encode(
        self,
        texts: Sequence[str],
        spans: Sequence[Spans] | None = None,
        *,
        batch_size: int = 32,
        progress: bool = False,
    ) -> tuple[np.ndarray, list[np.ndarray], int]:
        """Vectors of ``texts``, the vectors of their ``spans`` (empty when none are asked for), and how
        many texts had to be computed."""
        spans = spans if spans is not None else [() for _ in texts]
        keys = [cache_key(t, s) for t, s in zip(texts, spans, strict=True)]
        found = self._lookup(keys, [1 + len(s) for s in spans])
        missing = {k: (t, s) for k, t, s in zip(keys, texts, spans, strict=True) if k not in found}
        with tqdm(total=len(missing), disable=not progress, unit="chunk", desc="embedding") as bar:
            # Stored block by block, so an interrupted build keeps what it already paid for; sorted by
            # length so that each block pads little (the model sorts too, but only within one call).
            pending = sorted(missing.items(), key=lambda item: len(item[1][0]))
            for start in range(0, len(pending), BLOCK):
                block = pending[start : start + BLOCK]
                vectors, span_vectors = self._encoder.encode_spans(
                    [t for _, (t, _) in block], [s for _, (_, s) in block], batch_size=batch_size
                )
                computed = {
                    key: np.vstack([vector[None, :], spans_of]).astype(np.float32)
                    for (key, _), vector, spans_of in zip(block, vectors, span_vectors, strict=True)
                }
                with closing(self._connect()) as db, db:
                    db.executemany(
                        "INSERT OR REPLACE INTO vectors_v2 (key, vectors) VALUES (?, ?)",
                        [(key, value.tobytes()) for key, value in computed.items()],
                    )
                found.update(computed)
                bar.update(len(block))
        vectors = (
            np.stack([found[k][0] for k in keys]) if keys else np.zeros((0, self._dimension), np.float32)
        )
        return np.ascontiguousarray(vectors), [found[k][1:] for k in keys], len(missing)
