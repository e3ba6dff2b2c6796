"""Reading an index directory: immutable views at one sequence, refreshed as writers commit.

A view is a generation's derived indexes plus what was committed after its base: the dense base with the
passages written since as in-memory segments and the deleted ones masked (``DenseIndex``), the tantivy
searcher, and the store read at the view's sequence. The sequence of a view is the one the generation's
lexical index reflects (recorded in the store after each lexical commit), so a view never holds a write
half-applied: a write is seen by both retrievers, or by neither.

``IndexReader.refresh`` brings the view up to date at the cost of the change: it reads the passages
committed between the view's sequence and the newest one from the store (by index), applies them to the
dense side and reloads the tantivy searcher; when ``CURRENT`` names a new generation (after a compaction or
a rebuild), it opens that one instead. Each request reads ``reader.view`` once and keeps it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.backends import incompatibility
from embeddings.onnx_export import recipe_mismatch
from indexer.dense import DEFAULT_EFFORT, DenseIndex, SearchEffort
from indexer.evidence import Evidence
from indexer.generation import (
    Generation,
    GenerationManifest,
    current_name,
    current_path,
    open_generation,
    read_manifest,
)
from indexer.layout import STORE, IndexLoadError
from indexer.lexical import LexicalSearcher
from indexer.store import Store, StoreView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexView:
    generation: Generation
    seq: int
    dense: DenseIndex
    lexical: LexicalSearcher
    store: StoreView

    @property
    def name(self) -> str:
        """The index version served: the commit sequence, zero-padded so that versions sort as strings."""
        return f"{self.seq:010d}"

    @property
    def manifest(self) -> GenerationManifest:
        return self.generation.manifest

    def evidence(self, ids: np.ndarray) -> Evidence:
        """What ranking and highlights read of each passage (``StoreView.evidence``'s answer), from the
        generation's evidence files where they hold it: the store gives the passages written since the base,
        and every passage of a generation built before evidence files."""
        ids = np.asarray(ids, dtype=np.int64)
        files = self.generation.evidence
        if files is None:
            return self.store.evidence(ids)
        rows = self.dense.base_rows(ids)
        held, rest = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
        if not len(held):
            return self.store.evidence(ids)
        terms = dict(zip(ids[held].tolist(), files.terms(rows[held]), strict=True))
        counts, spans, halves = files.sentences(rows[held])
        owners, vectors = np.repeat(held, counts), halves.astype(np.float32)
        if len(rest):
            more = self.store.evidence(ids[rest])
            terms.update(more.terms)
            owners = np.concatenate([owners, rest[more.owners]])
            spans = np.concatenate([spans, more.spans])
            vectors = np.concatenate([vectors, more.vectors])
        return Evidence(ids, terms, owners, spans, vectors)


def _check_model(store: Store, model_sha256: str, dimension: int) -> None:
    config = store.config
    if config.model_sha256 != model_sha256 or config.dimension != dimension:
        raise IndexLoadError(
            f"index {store.path.parent} was built with model {config.model_name} (weights "
            f"{config.model_sha256[:12]}, dimension {config.dimension}) but the configured model has weights "
            f"{model_sha256[:12]}, dimension {dimension}; rebuild with `semqa index` or configure the model "
            "it was built with"
        )


def indexed_backend(index_dir: Path) -> str | None:
    """The encoder backend that made the vectors of the index in ``index_dir`` (its store's record), or
    None where there is no index yet."""
    return Store(index_dir / STORE).config.backend if (index_dir / STORE).is_file() else None


def check_index(index_dir: Path, *, verify: bool = True) -> GenerationManifest:
    """Check, cheaply (no model, no FAISS load), that ``index_dir`` can be served: a store of this
    format and a current generation whose files are intact (with ``verify``, by sha256). Returns the
    generation's manifest; ``IndexLoadError`` naming what is wrong otherwise."""
    store = Store(index_dir / STORE)
    path = current_path(index_dir)
    manifest = read_manifest(path, verify=verify)
    if store.derived_seq(path.name) is None:
        raise IndexLoadError(
            f"the store records no state for generation {path.name}; rebuild with `semqa index`"
        )
    return manifest


class IndexReader:
    """The current view of an index directory for one process; ``refresh`` is thread-safe."""

    def __init__(
        self,
        index_dir: Path,
        *,
        model_sha256: str,
        dimension: int,
        backend: str = "torch",
        effort: SearchEffort = DEFAULT_EFFORT,
        verify: bool = True,
    ) -> None:
        self.index_dir = index_dir
        self.effort = effort
        self.verify = verify
        self.store = Store(index_dir / STORE)
        self._serves = (model_sha256, dimension, backend)
        self._check_config()
        stale = recipe_mismatch(self.store.config.int8_format, backend)
        if stale is not None:
            log.warning("%s: %s", index_dir, stale)
        self._lock = threading.Lock()
        self.view = self._open(current_path(index_dir))

    def _check_config(self) -> None:
        """The store's passages were made by the model and backend this process encodes questions with."""
        model_sha256, dimension, backend = self._serves
        _check_model(self.store, model_sha256, dimension)
        problem = incompatibility(self.store.config.backend, backend)
        if problem is not None:
            raise IndexLoadError(problem)

    def _open(self, path: Path) -> IndexView:
        generation = open_generation(path, effort=self.effort, verify=self.verify)
        seq = self._reflected(generation)
        return self._advance(generation, generation.manifest.base_seq, generation.dense, seq)

    def _reflected(self, generation: Generation) -> int:
        seq = self.store.derived_seq(generation.name)
        if seq is None:
            raise IndexLoadError(f"the store records no state for generation {generation.name}; rebuild")
        return seq

    def _advance(self, generation: Generation, seq: int, dense: DenseIndex, target: int) -> IndexView:
        """A view of ``generation`` at ``target``, from ``dense`` as it was at ``seq``."""
        if target > seq:
            changes = self.store.changes(seq, target)
            dense = dense.delete(changes.removed).add(changes.added_ids, changes.added_vectors)
        generation.lexical.reload()
        return IndexView(generation, target, dense, generation.lexical.searcher(), self.store.view(target))

    def stale(self, *, switch: bool = True) -> bool:
        """Whether a newer view is available: new commits on this generation (one indexed row), or, with
        ``switch``, a new generation (one small file)."""
        view = self.view
        if switch and current_name(self.index_dir) != view.generation.name:
            return True
        seq = self.store.derived_seq(view.generation.name)
        return seq is not None and seq > view.seq

    def refresh(self, *, switch: bool = True) -> bool:
        """Serve the newest committed state; True when the view changed. ``switch=False`` only applies new
        commits to the current generation (milliseconds) and leaves opening a new generation (which
        verifies its files) to a caller off the request path. A failure leaves the current view (and
        raises ``IndexLoadError``)."""
        try:  # the freshness check reads the store and CURRENT too: its failures are load failures
            if not self.stale(switch=switch):
                return False
            with self._lock:
                view = self.view
                if current_name(self.index_dir) != view.generation.name:
                    if not switch:
                        return False
                    self.store.read_config()  # a rebuild may have made it with another model or backend
                    self._check_config()
                    new = self._open(current_path(self.index_dir))
                else:
                    target = self._reflected(view.generation)
                    if target <= view.seq:
                        return False
                    new = self._advance(view.generation, view.seq, view.dense, target)
                if new.seq < view.seq:  # a rebuild's generation is never older than what was served
                    return False
                self.view = new
                return True
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise IndexLoadError(
                f"the index in {self.index_dir} could not be read ({exc}); retrying"
            ) from exc
