"""Live index swaps: each worker polls the index directory and serves a newer version as soon as it is
published (by `semqa index`, or by a write through the API), without a restart or a failed request.

Versions are immutable directories and the ``CURRENT`` pointer is replaced atomically, so a worker only
has to notice that the pointer changed, load the new version next to the old one, and swap one
reference; requests already running keep the version they started with. A new version that cannot be
loaded (corrupt, other model) is logged and skipped: the worker keeps serving the last good one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from indexer import IndexLoadError, IndexVersion
from indexer.store import CURRENT
from semqa.settings import Settings
from server.retrieval.load import load_current
from server.retrieval.search import Searcher

log = logging.getLogger(__name__)
REFRESH_WAIT = 10.0  # seconds a request waits for a newer version another thread is loading


class VersionWatcher:
    def __init__(
        self, searcher: Searcher, index_dir: Path, load: Callable[[], IndexVersion], interval: float = 0.5
    ) -> None:
        self.searcher = searcher
        self.index_dir = index_dir
        self.interval = interval
        self.error: str | None = None  # why the newest version could not be loaded, if it could not
        self._load = load
        self._failed: str | None = None  # the version name that failed, so it is not retried in a loop
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _pointer(self) -> str | None:
        try:
            return (self.index_dir / CURRENT).read_text().strip()
        except OSError:
            return None

    def _newer(self, name: str | None) -> bool:
        return name is not None and name > self.searcher.version.name and name != self._failed

    def refresh(self) -> None:
        """Called before each request: if CURRENT moved on, swap now rather than at the next poll, so a
        write acknowledged by any worker is visible to the next request on every worker. If another
        thread is already loading it, wait for that (at most REFRESH_WAIT seconds)."""
        if not self._newer(self._pointer()):
            return
        if self._lock.acquire(timeout=REFRESH_WAIT):
            try:
                name = self._pointer()
                if self._newer(name):
                    self._swap(name)  # type: ignore[arg-type]
            finally:
                self._lock.release()

    def check(self) -> bool:
        """Load and swap in the current version if it is newer; True when a swap happened."""
        with self._lock:
            name = self._pointer()
            return self._newer(name) and self._swap(name)  # type: ignore[arg-type]

    def _swap(self, name: str) -> bool:
        try:
            version = self._load()
        except IndexLoadError as exc:
            self._failed, self.error = name, str(exc)
            log.error(
                "index version %s not loaded, still serving %s: %s", name, self.searcher.version.name, exc
            )
            return False
        self._failed = self.error = None
        if not self.searcher.install(version):
            return False
        log.info("now serving index version %s", version.name)
        return True

    def start(self) -> None:
        threading.Thread(target=self._run, name="semqa-version-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("version check failed")


def start_watcher(settings: Settings, searcher: Searcher) -> VersionWatcher | None:
    """A started watcher of ``settings.index_dir`` for ``searcher``; None when reloading is off."""
    if settings.reload_interval <= 0:
        return None
    watcher = VersionWatcher(
        searcher,
        settings.index_dir,
        lambda: load_current(settings, searcher.encoder),
        settings.reload_interval,
    )
    watcher.start()
    return watcher
