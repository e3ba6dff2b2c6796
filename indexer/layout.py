"""Where things live in an index directory, the locks that guard them, and durable small-file writes.

Layout::

    <index_dir>/store.sqlite          the source of truth: documents, passages, vectors, commits (store.py)
    <index_dir>/CURRENT               name of the generation served (replaced atomically)
    <index_dir>/generations/<name>/   derived indexes built from the store at one sequence (generation.py)
    <index_dir>/generations/.tmp-*    a generation being built (never served; removed by the next build)
    <index_dir>/.lock                 the writer lock: one commit at a time, across processes
    <index_dir>/.compact.lock         held while a compaction runs
"""

from __future__ import annotations

import os
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

from embeddings.files import file_lock, fsync

STORE = "store.sqlite"
CURRENT = "CURRENT"
GENERATIONS = "generations"
LOCK = ".lock"
COMPACT_LOCK = ".compact.lock"


class IndexLoadError(RuntimeError):
    """The index directory cannot be served: missing, corrupt, or built with another model."""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves either the old or the new content, durably."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(text)
    fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)


def writer_lock(index_dir: Path, timeout: float | None = None) -> AbstractContextManager[None]:
    """Held for every commit to the store and every change of CURRENT (builds, writes, compactions)."""
    return file_lock(index_dir / LOCK, timeout=timeout)


def has_index(index_dir: Path) -> bool:
    return (index_dir / STORE).is_file() and (index_dir / CURRENT).is_file()
