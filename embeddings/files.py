"""File hashing, fsync and cross-process locks, shared by the weights check, the ONNX exports and the index."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_POLL = 0.01  # seconds between attempts at a lock taken with a timeout


class Busy(RuntimeError):
    """A lock someone else holds (a compaction already running)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync(path: Path) -> None:
    """Make a file's (or a directory's entries') contents durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
