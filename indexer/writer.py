"""Writes: group commit into the store, then the current generation's lexical index, then visible.

Every change goes through ``Writer.submit``, which returns once the change is durable and visible:

1. Under the writer lock (``indexer.layout.writer_lock``, shared by every process), the store takes all
   the changes waiting in this process as one transaction at the next sequence (group commit: writes that
   arrive together share one commit and one fsync); ``commit`` returns only once it is on disk.
2. The same passages are applied to the current generation's tantivy index in one commit.
3. The store records that the lexical index reflects the new sequence: from then on readers' views
   (``indexer/reader.py``) include the write; the dense side comes from the store itself.

A crash after 1 leaves the write durable but not yet visible (and not acknowledged); ``recover``, which
every commit, build and compaction runs first under the lock, and every server start, replays the store's
changes since the recorded sequence into the lexical index (idempotent: deletes, then the rows still live).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embeddings.files import Busy
from indexer.generation import current_name, generations_dir
from indexer.layout import CURRENT, GENERATIONS, STORE, IndexLoadError, writer_lock
from indexer.lexical import LexicalIndex, LexicalRow
from indexer.store import Change, Committed, Store, StoreConfig

log = logging.getLogger(__name__)


class ConfigChanged(RuntimeError):
    """The index was rebuilt with another model or chunking since these passages were made: make them
    again (``prepare``) and resubmit."""


class NotSearchable(RuntimeError):
    """The change is durable (committed at ``seq``) but could not be applied to the lexical index; it
    becomes searchable when ``recover`` next runs (the next write, compaction or server start)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(
            f"the change was committed (index version {seq}) but could not be made searchable yet "
            f"({reason}); the next write or a restart retries"
        )
        self.seq = seq


def apply_lexical(store: Store, index_dir: Path, generation: str, after: int, upto: int) -> None:
    """Make ``generation``'s lexical index reflect the store at ``upto`` (it reflects ``after``)."""
    if upto <= after:
        return
    changes = store.changes(after, upto)
    lexical = LexicalIndex.open(generations_dir(index_dir) / generation / "lexical")
    with lexical.write() as writer:
        writer.delete(changes.removed.tolist())
        writer.add(LexicalRow(*row) for row in changes.added)
    store.set_derived(generation, upto)


def recover(store: Store, index_dir: Path) -> int:
    """Under the writer lock: catch the current generation up with the store. Returns the sequence it
    reflects (the newest commit)."""
    latest = store.latest()
    name = current_name(index_dir)
    if name is None:
        return latest
    reflected = store.derived_seq(name)
    if reflected is None:
        raise IndexLoadError(
            f"{index_dir / CURRENT} names generation {name!r}, which the store does not know: put back the "
            f"name of a generation under {GENERATIONS}/, or move the index directory aside and build a new one "
            "with `semqa index`"
        )
    if reflected < latest:
        log.warning("catching generation %s up from sequence %d to %d", name, reflected, latest)
        apply_lexical(store, index_dir, name, reflected, latest)
    return latest


def recover_index(index_dir: Path) -> int:
    """``recover`` for a whole index directory, taking the writer lock: what a server runs at start."""
    store = Store(index_dir / STORE)
    with writer_lock(index_dir):
        return recover(store, index_dir)


@dataclass
class _Pending:
    changes: Sequence[Change]
    config: StoreConfig
    done: bool = False
    result: Committed | None = None
    error: BaseException | None = None
    outcomes: list[str] = field(default_factory=list)


class Writer:
    """Group commit for one process. ``submit`` from any number of threads: one of them (the leader)
    commits everything waiting, the others wait for it."""

    def __init__(
        self,
        index_dir: Path,
        store: Store,
        *,
        lock_timeout: float | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.index_dir = index_dir
        self.store = store
        self.lock_timeout = lock_timeout  # then ``embeddings.files.Busy`` (a rebuild holds the lock)
        self.on_commit = on_commit
        self._pending: list[_Pending] = []
        self._leading = False
        self._cond = threading.Condition()

    def submit(self, changes: Sequence[Change], config: StoreConfig) -> Committed:
        """Commit ``changes`` (made with ``config``); returns once durable and visible, with the outcome
        of each change. Raises ``ConfigChanged`` or ``NotSearchable`` as documented, or the error of a
        failed commit (nothing of it is then stored)."""
        item = _Pending(changes, config)
        with self._cond:
            self._pending.append(item)
            while not item.done and self._leading:
                self._cond.wait()
            if item.done:
                return self._result(item)
            self._leading = True
            batch, self._pending = self._pending, []
        try:
            self._commit(batch)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return self._result(item)

    @staticmethod
    def _result(item: _Pending) -> Committed:
        if item.error is not None:
            raise item.error
        if item.result is None:
            raise RuntimeError("the commit was interrupted; nothing of this change was stored")
        return item.result

    def _store(self, ready: list[_Pending]) -> int | None:
        """Commit the writes in one transaction and give each its result; the new sequence, if any. When that
        fails and they are several, each is committed alone, so that a write that cannot be stored fails
        itself only, not the writes that arrived beside it."""
        try:
            committed = self.store.commit([c for item in ready for c in item.changes])
        except Exception:
            if len(ready) == 1:
                raise
            log.exception("a commit of %d writes failed: committing each alone", len(ready))
            seq = None
            for item in ready:
                try:
                    item.result = self.store.commit(item.changes)
                    seq = item.result.seq if item.result.seq is not None else seq
                except Exception as exc:
                    log.exception("a write failed; nothing of it was stored")
                    item.error = exc
            return seq
        at = 0
        for item in ready:
            outcomes = committed.outcomes[at : at + len(item.changes)]
            at += len(item.changes)
            item.result = Committed(committed.seq, outcomes)
        return committed.seq

    def _commit(self, batch: list[_Pending]) -> None:
        seq = None
        try:
            with writer_lock(self.index_dir, timeout=self.lock_timeout):
                config = self.store.read_config()
                ready = [item for item in batch if item.config == config]
                for item in batch:
                    if item.config != config:
                        item.error = ConfigChanged("the index was rebuilt with other settings meanwhile")
                previous = recover(self.store, self.index_dir)
                seq = self._store(ready)
                if seq is not None:
                    name = current_name(self.index_dir)
                    try:
                        if name is not None:
                            apply_lexical(self.store, self.index_dir, name, previous, seq)
                    except Exception as exc:  # durable already: say so, do not call it failed
                        log.exception("commit %d not applied to the lexical index", seq)
                        for item in ready:
                            if item.error is None:  # not for a write that failed alone (never stored)
                                stored = item.result.seq if item.result is not None else None
                                item.error = NotSearchable(stored or seq, str(exc))
        except Exception as exc:
            if isinstance(exc, Busy):  # a rebuild holds the index: the writes answer 503, as documented
                log.info("writes not committed: %s", exc)
            else:
                log.exception("commit failed; nothing of it was stored")
            for item in batch:
                if item.result is None and item.error is None:
                    item.error = exc
        finally:
            for item in batch:
                item.done = True
        if seq is not None and self.on_commit is not None:
            self.on_commit(seq)
