"""A persistent embedding cache keyed by (model weights, text) hash.

Embedding is by far the most expensive step (about 20 passages/s on two cores), so every vector the
indexer computes is kept in a SQLite file and reused whenever the same text is embedded again by the
same weights: rebuilding an index after a small change, or re-running an evaluation, re-embeds only new text.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embeddings.encoder import Encoder

BLOCK = 512  # texts encoded and committed together


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors of one model, stored in ``<cache_dir>/embeddings-<weights sha256[:16]>.sqlite``."""

    def __init__(self, cache_dir: Path, encoder: Encoder) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"embeddings-{encoder.weights_sha256[:16]}.sqlite"
        self._encoder = encoder
        self._dimension = encoder.dimension
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False
    ) -> tuple[np.ndarray, int]:
        """Vectors of ``texts`` (as ``Encoder.encode``) and how many had to be computed."""
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._connect() as db:
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                rows = db.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
                ).fetchall()
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self._dimension,):
                        found[key] = vector
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
        with tqdm(total=len(missing), disable=not progress, unit="chunk", desc="embedding") as bar:
            # Stored block by block, so an interrupted build keeps what it already paid for; sorted by
            # length so that each block pads little (the model sorts too, but only within one call).
            pending = sorted(missing.items(), key=lambda item: len(item[1]))
            for start in range(0, len(pending), BLOCK):
                block = pending[start : start + BLOCK]
                computed = self._encoder.encode([text for _, text in block], batch_size=batch_size)
                with self._connect() as db:
                    db.executemany(
                        "INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)",
                        [(key, vector.tobytes()) for (key, _), vector in zip(block, computed, strict=True)],
                    )
                found.update((key, vector) for (key, _), vector in zip(block, computed, strict=True))
                bar.update(len(block))
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = found[key]
        return out, len(missing)
