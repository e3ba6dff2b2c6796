"""Generations: the derived indexes of the store at one sequence, built together and served together.

Layout of ``<index_dir>/generations/<name>/`` (``name``: a zero-padded generation number, then the base
sequence)::

    manifest.json   base sequence, model, dense factory and kind, passages, and the size + sha256 of every
                    dense and evidence file (the lexical files change after the build, so they are not listed)
    dense/          the FAISS base of every passage live at the base sequence (indexer/dense.py)
    evidence/       the same passages' terms and sentence offsets and vectors, as the store holds them, in
                    the base's order (indexer/evidence.py; absent from generations built before it)
    lexical/        the tantivy index (indexer/lexical.py): built at the base sequence, then it takes every
                    later commit; the sequence it reflects is recorded in the store (``derived``)

A generation is built into ``generations/.tmp-*`` without holding the writer lock (it reads rows live at
its base sequence, which later commits never change), fsynced, renamed into place and only then named by
``CURRENT``, under the writer lock: a crash at any point leaves the previous generation current.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.files import fsync
from embeddings.model import file_sha256
from indexer.dense import DEFAULT_EFFORT, DenseIndex, SearchEffort
from indexer.evidence import EVIDENCE_DIR, PassageEvidence, write_evidence
from indexer.layout import CURRENT, GENERATIONS, IndexLoadError, write_atomically
from indexer.lexical import LexicalIndex, LexicalRow
from indexer.store import Store

MANIFEST = "manifest.json"
DENSE_DIR = "dense"
LEXICAL_DIR = "lexical"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GenerationManifest:
    base_seq: int
    model_sha256: str
    dimension: int
    factory: str  # the resolved FAISS factory string of the dense base
    kind: str  # exact, hnsw, ivf
    passages: int  # in the dense base
    built_at: str
    seconds: float
    format_version: int = FORMAT_VERSION
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def generations_dir(index_dir: Path) -> Path:
    return index_dir / GENERATIONS


def current_name(index_dir: Path) -> str | None:
    """The name in CURRENT, or None when there is no generation yet."""
    try:
        return (index_dir / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def current_path(index_dir: Path) -> Path:
    name = current_name(index_dir)
    if name is None:
        raise IndexLoadError(f"no index in {index_dir}: run `semqa index` to build one")
    path = generations_dir(index_dir) / name
    if "/" in name or not path.is_dir():
        raise IndexLoadError(
            f"{index_dir / CURRENT} names {name!r}, which does not exist; rebuild with `semqa index`"
        )
    return path


def read_manifest(path: Path, *, verify: bool = True) -> GenerationManifest:
    """A generation's manifest once every file it lists has its recorded size (and, with ``verify``,
    sha256); ``IndexLoadError`` naming the file otherwise."""
    manifest_path = path / MANIFEST
    try:
        manifest = GenerationManifest(**json.loads(manifest_path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexLoadError(
            f"{manifest_path} is unreadable or corrupt ({exc}); rebuild with `semqa index`"
        ) from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IndexLoadError(
            f"{manifest_path} has format {manifest.format_version}; rebuild with `semqa index`"
        )
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected["bytes"]:
            raise IndexLoadError(f"{file} is missing or truncated; rebuild with `semqa index`")
        if verify and file_sha256(file) != expected["sha256"]:
            raise IndexLoadError(f"{file} is corrupt (sha256 mismatch); rebuild with `semqa index`")
    return manifest


def base_seq_of(path: Path) -> int | None:
    """The base sequence a generation's manifest records, without checking its files (None if unreadable)."""
    try:
        return int(json.loads((path / MANIFEST).read_text())["base_seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Generation:
    path: Path
    manifest: GenerationManifest
    dense: DenseIndex
    lexical: LexicalIndex
    evidence: PassageEvidence | None  # None for a generation built before evidence files

    @property
    def name(self) -> str:
        return self.path.name


def open_generation(path: Path, *, effort: SearchEffort = DEFAULT_EFFORT, verify: bool = True) -> Generation:
    manifest = read_manifest(path, verify=verify)
    try:
        dense = DenseIndex.open(path / DENSE_DIR, effort=effort)
    except (RuntimeError, ValueError, OSError) as exc:
        raise IndexLoadError(
            f"{path / DENSE_DIR} cannot be read ({exc}); rebuild with `semqa index`"
        ) from exc
    try:
        lexical = LexicalIndex.open(path / LEXICAL_DIR)
    except (ValueError, OSError) as exc:
        raise IndexLoadError(
            f"{path / LEXICAL_DIR} cannot be read ({exc}); rebuild with `semqa index`"
        ) from exc
    evidence = None
    if any(name.startswith(f"{EVIDENCE_DIR}/") for name in manifest.files):
        try:
            evidence = PassageEvidence(path / EVIDENCE_DIR, manifest.dimension, dense.base.count)
        except (ValueError, OSError) as exc:
            raise IndexLoadError(
                f"{path / EVIDENCE_DIR} cannot be read ({exc}); rebuild with `semqa index`"
            ) from exc
    return Generation(path, manifest, dense, lexical, evidence)


def _live_vectors(store: Store, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and vectors of every passage live at ``seq``, as one matrix (FAISS builds from one)."""
    ids, vectors = [], []
    for batch_ids, batch_vectors in store.live_vectors(seq):
        ids.append(batch_ids)
        vectors.append(batch_vectors)
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, store.config.dimension), np.float32)
    return np.concatenate(ids), np.concatenate(vectors)


def build_generation(index_dir: Path, store: Store, seq: int, factory: str) -> Path:
    """Build the derived indexes of every passage live at ``seq`` into a new temporary directory (not
    served until ``publish``). Needs no lock."""
    started = time.perf_counter()
    root = generations_dir(index_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        ids, vectors = _live_vectors(store, seq)
        dense = DenseIndex.build(vectors, ids, factory)
        del vectors
        listed = dense.base.save(tmp / DENSE_DIR)
        listed += write_evidence(
            tmp / EVIDENCE_DIR, store.live_evidence(seq), dense.base.ids, store.config.dimension
        )
        LexicalIndex.build(tmp / LEXICAL_DIR, (LexicalRow(*row) for row in store.live_texts(seq)))
        manifest = GenerationManifest(
            base_seq=seq,
            model_sha256=store.config.model_sha256,
            dimension=store.config.dimension,
            factory=dense.base.factory,
            kind=dense.base.kind,
            passages=len(ids),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            seconds=round(time.perf_counter() - started, 3),
            files={
                p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                for p in listed
            },
        )
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
        for path in [
            *sorted(p for p in tmp.rglob("*") if p.is_file()),
            *(p for p in tmp.rglob("*") if p.is_dir()),
            tmp,
        ]:
            fsync(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def place(index_dir: Path, tmp: Path) -> str:
    """Move a built generation into place (not yet served); call under the writer lock. Returns its name.
    The store must then record the sequence its lexical index reflects, and ``make_current`` serve it."""
    manifest = read_manifest(tmp, verify=False)
    root = generations_dir(index_dir)
    numbers = [int(p.name.split("-", 1)[0]) for p in root.iterdir() if p.name.split("-", 1)[0].isdigit()]
    name = f"{max(numbers, default=0) + 1:08d}-{manifest.base_seq}"  # sorts by when it was made
    os.rename(tmp, root / name)
    fsync(root)
    return name


def make_current(index_dir: Path, name: str) -> None:
    write_atomically(index_dir / CURRENT, name + "\n")


def prune(index_dir: Path) -> list[str]:
    """Remove leftovers of builds that never finished, generations placed but never made current, and all
    generations but the current one and the one before it (a worker may still read it for a moment).
    Call holding the compaction lock, which every generation build holds, so no build in progress is
    removed. Returns the names kept."""
    root = generations_dir(index_dir)
    current = current_name(index_dir)
    if current is None or not root.is_dir():
        return []
    published = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    keep = {current, *[name for name in published if name < current][-1:]}
    for stale in [*root.glob(".tmp-*"), *(root / name for name in published if name not in keep)]:
        shutil.rmtree(stale, ignore_errors=True)
    return sorted(keep)
