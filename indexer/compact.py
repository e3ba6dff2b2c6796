"""Compaction: fold the passages written since the current generation into a new one, while the service
keeps answering questions and taking writes (Lucene's merges, at the level of a whole generation).

1. Holding the compaction lock (one compaction or build at a time, across processes), and the writer lock
   for a moment: catch the current generation up and note the newest sequence S.
2. Without the writer lock: build a generation of every passage live at S into ``generations/.tmp-*``:
   a new dense base (the written passages folded in, the deleted ones gone) and a new tantivy index
   (one set of merged segments, no deleted documents).
3. Under the writer lock: apply the commits made after S to the new lexical index, record the sequence
   it reflects, make it current. Readers switch at their next refresh.
4. Purge the store rows deleted before the replaced generation's base (no view reads them any more) and
   remove older generations.

A crash at any point loses nothing: until 3 the new generation is a temporary directory that is never
served (removed by the next compaction), and the store is only appended to until 4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from embeddings.files import file_lock
from indexer.dense import AUTO
from indexer.generation import (
    base_seq_of,
    build_generation,
    current_name,
    generations_dir,
    make_current,
    place,
    prune,
    read_manifest,
)
from indexer.layout import COMPACT_LOCK, STORE, writer_lock
from indexer.store import Store
from indexer.writer import apply_lexical, recover


@dataclass(frozen=True)
class CompactReport:
    generation: str
    base_seq: int  # the sequence the new base was built at
    seq: int  # the sequence it reflected when it was made current
    passages: int
    folded: int  # passages that were written after the previous base and are now in the new one
    purged: int  # store rows of deleted passages dropped
    seconds: float


def install(index_dir: Path, store: Store, tmp: Path, base_seq: int) -> tuple[str, int]:
    """Under the writer lock: serve the generation built in ``tmp`` at ``base_seq``, caught up with every
    commit since. Returns its name and the sequence it reflects."""
    latest = store.latest()
    name = place(index_dir, tmp)
    store.set_derived(name, base_seq)
    apply_lexical(store, index_dir, name, base_seq, latest)
    make_current(index_dir, name)
    return name, latest


def finish(index_dir: Path, store: Store, replaced: str | None) -> int:
    """After a new generation became current: purge what only ``replaced`` (or older) needed and remove old
    generations. Returns the passage rows purged."""
    purged = 0
    base = None if replaced is None else base_seq_of(generations_dir(index_dir) / replaced)
    if base is not None:
        purged = store.purge(before=base)
    kept = prune(index_dir)
    store.forget_derived(set(kept))
    return purged


def compact(index_dir: Path, factory: str = AUTO) -> CompactReport:
    """Compact ``index_dir`` now; ``embeddings.files.Busy`` if a compaction or build is already running."""
    started = time.perf_counter()
    with file_lock(index_dir / COMPACT_LOCK, wait=False):
        store = Store(index_dir / STORE)
        with writer_lock(index_dir):
            seq = recover(store, index_dir)
            replaced = current_name(index_dir)
        previous = None if replaced is None else base_seq_of(generations_dir(index_dir) / replaced)
        folded = 0 if previous is None else store.written_since(previous, seq)
        tmp = build_generation(index_dir, store, seq, factory)
        with writer_lock(index_dir):
            name, reflected = install(index_dir, store, tmp, seq)
        purged = finish(index_dir, store, replaced)
        return CompactReport(
            generation=name,
            base_seq=seq,
            seq=reflected,
            passages=read_manifest(generations_dir(index_dir) / name, verify=False).passages,
            folded=folded,
            purged=purged,
            seconds=time.perf_counter() - started,
        )
