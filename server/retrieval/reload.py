"""Live refresh: each process serves every commit as soon as it is visible, without a restart or a failed
request.

Before each request the worker applies the commits made since its view (``IndexReader.refresh`` with
``switch=False``: a few milliseconds, so a write acknowledged by any worker is seen by the next request on
every worker), and a background thread polls every ``SEMQA_RELOAD_INTERVAL`` seconds, which also opens a
new generation after a compaction or a rebuild (verifying its files, off the request path). A refresh
that fails (a damaged generation, a file vanishing under a concurrent compaction) never fails the request
that triggered it: the last good view keeps being served, the reason is logged and shown by ``/ready``,
and the refresh is tried again after a pause that grows to ``MAX_BACKOFF`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from indexer import IndexLoadError, IndexReader
from semqa.settings import Settings

log = logging.getLogger(__name__)
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0  # seconds between attempts after a failed refresh


class VersionWatcher:
    def __init__(self, reader: IndexReader, interval: float = 0.5) -> None:
        self.reader = reader
        self.interval = interval
        self.error: str | None = None  # why the newest state could not be loaded, while it cannot
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF
        self._stop = threading.Event()

    def refresh(self, *, switch: bool = False) -> bool:
        """Bring the reader up to date if it can be; never raises. True when the view changed."""
        if self.error is not None and time.monotonic() < self._retry_at:
            return False
        try:
            changed = self.reader.refresh(switch=switch)
            recovered = self.error is not None and not self.reader.stale()
        except Exception as exc:  # a refresh must fail neither a request nor this thread
            if not isinstance(exc, IndexLoadError):
                log.exception("unexpected error while refreshing the index")
            self._failed(str(exc) or type(exc).__name__)
            return False
        if recovered:
            log.info("index loaded again: serving version %s", self.reader.view.name)
            self.error, self._backoff = None, FIRST_BACKOFF
        return changed

    def _failed(self, reason: str) -> None:
        if reason != self.error:
            log.error("index state not loaded, still serving version %s: %s", self.reader.view.name, reason)
        self.error = reason
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    def before_request(self) -> None:
        self.refresh(switch=False)

    def start(self) -> None:
        threading.Thread(target=self._run, name="semqa-index-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh(switch=True)


def start_watcher(settings: Settings, reader: IndexReader) -> VersionWatcher | None:
    """A started watcher of ``reader``; None when reloading is off (``reload_interval`` 0)."""
    if settings.reload_interval <= 0:
        return None
    watcher = VersionWatcher(reader, settings.reload_interval)
    watcher.start()
    return watcher
