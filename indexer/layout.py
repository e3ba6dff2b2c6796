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

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from embeddings.files import fsync

STORE = "store.sqlite"
CURRENT = "CURRENT"
GENERATIONS = "generations"
LOCK = ".lock"
COMPACT_LOCK = ".compact.lock"
LOCK_POLL = 0.01  # seconds between attempts at a lock taken with a timeout


class IndexLoadError(RuntimeError):
    """The index directory cannot be served: missing, corrupt, or built with another model."""


class Busy(RuntimeError):
    """A lock someone else holds (a compaction already running)."""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves either the old or the new content, durably."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(text)
    fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)


@contextmanager
def file_lock(path: Path, *, wait: bool = True, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock across processes (``flock``: released by the OS if the holder dies). With
    ``wait=False``, ``Busy`` at once when another process holds it; with a ``timeout``, after that long."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                blocking = wait and deadline is None
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise Busy(f"{path} is held by another process") from None
                time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_lock(index_dir: Path, timeout: float | None = None) -> AbstractContextManager[None]:
    """Held for every commit to the store and every change of CURRENT (builds, writes, compactions)."""
    return file_lock(index_dir / LOCK, timeout=timeout)


def has_index(index_dir: Path) -> bool:
    return (index_dir / STORE).is_file() and (index_dir / CURRENT).is_file()
