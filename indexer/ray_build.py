"""The distributed build (``semqa index --engine ray``): Ray Data reads, chunks and embeds the documents on a
cluster, the embedded passages come back as Parquet shards, and the index is built from those on this machine
through the Parquet path (``indexer.parquet``), so that it equals a single-process build.

1. This machine lists the input files with the ids a normal build gives them (``readers.corpus_files``).
2. Ray Data reads them: tasks run ``readers.read_file`` (the same code, so the same documents and the same
   messages for what cannot be read) on any node, which opens each file at its absolute path. The results
   come back here and ``readers.CorpusCollector`` applies the corpus rules in file order: empty documents are
   skipped, a duplicate id is refused, as in ``read_corpus``.
3. The documents are cut into shards: runs of consecutive documents in reading order, each ended (once it
   holds ``shard_chars`` of text) after a document whose id hashes to a cut point. Cuts depend only on the
   documents near them, so adding or changing a document changes the shards around it, not all the
   following ones. A shard is named by the hash of everything that goes into it (``shard_key``): the format,
   the model's weights, dimension and backend, the chunking, and each document's id, title, text, metadata
   and source. A shard already in the staging folder is finished work and is not sent out again.
4. ``map_batches`` on an actor pool embeds the other shards, one shard per call: each actor loads the model
   once through ``embeddings.load_encoder`` (which verifies the weights) and checks they are the weights this
   machine has, chunks the documents with the model's tokenizer, embeds the passages and their sentences
   (through the embedding cache where the actor's machine has the cache folder), and returns the shard as
   Parquet bytes with every extension column. This machine writes each shard under a temporary name, fsyncs
   and renames it, so a shard on disk is always whole: the staging folder is local, no shared output
   filesystem is needed.
5. ``build_index`` over the shards in order (and any Parquet inputs given): the Parquet path, which publishes
   the version atomically. Nothing is published before that, so a job killed at any point leaves the served
   index as it was; a re-run finds the finished shards, and the actors find what they embedded in their
   machines' embedding caches.

Shards live in ``<cache_dir>/ray-shards/<run>/``, ``<run>`` a hash of the input paths, model and chunking;
after a successful build the shards this build did not use are removed from that folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embeddings import EmbeddingCache, Encoder, ModelError
from embeddings.onnx_export import vectors_recipe
from indexer.build import BuildReport, build_index
from indexer.chunking import ChunkingConfig
from indexer.dense import AUTO
from indexer.documents import Chunk, Document
from indexer.parquet import Provenance, write_passages
from indexer.passages import prepare_upserts
from indexer.readers import CorpusCollector, CorpusError, Skipped, corpus_files, nothing_to_index, read_file

log = logging.getLogger(__name__)

SHARD_FORMAT = 1  # part of every shard's key: bump when what a shard holds changes
SHARDS_DIR = "ray-shards"
CUT_ONE_IN = 4  # once a shard is full, a document ends it when its id hash is 0 modulo this
READ_BLOCKS_PER_CPU = 4  # file-reading tasks per CPU of the cluster (small files: tasks are cheap)

EncoderLoader = Callable[[], Encoder]


class RayBuildError(RuntimeError):
    """The cluster part of the build failed; the message carries what Ray reported."""


def _cluster_error(exc: Exception) -> Exception:
    """Our own error when a task or actor raised one (Ray wraps it with its traceback), else a short one."""
    text = str(exc)
    for kind in (ModelError, CorpusError):
        found = re.search(rf"{kind.__name__}: (.+)", text)
        if found:
            return kind(found.group(1).strip())
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return RayBuildError(
        f"the Ray job failed: {last} (Ray's logs: /tmp/ray/session_latest/logs on each node)"
    )


@dataclass(frozen=True)
class RayOptions:
    address: str = ""  # empty: start a local Ray instance with this machine's cores
    num_gpus: int = 0  # 0: CPU actors; N > 0: N GPU actors with one GPU each
    workers: int = 0  # CPU actors; 0: one per CPU of the cluster
    shard_chars: int = 65_536


@dataclass(frozen=True)
class RayBuildReport:
    build: BuildReport  # as a single-process build reports it; ``embedded`` counts what the actors embedded
    shards: int
    shards_reused: int  # shards found finished in the staging folder
    shards_dir: Path
    actor_seconds: float  # time the actors spent on shards (chunking, embedding, writing), summed
    final_seconds: float  # the build from the shards on this machine (reading them, FAISS, BM25, publishing)


@dataclass(frozen=True)
class Shard:
    key: str
    documents: list[Document]

    @property
    def file_name(self) -> str:
        return f"{self.key[:32]}.parquet"


def _backend(encoder: Encoder) -> str:
    """The encoder's backend where it records one, torch otherwise (the only backend that records none)."""
    return str(getattr(encoder, "backend", "torch"))


def provenance(encoder: Encoder, chunking: ChunkingConfig) -> Provenance:
    backend = _backend(encoder)
    return Provenance(
        encoder.name,
        encoder.weights_sha256,
        encoder.dimension,
        backend,
        chunking.as_dict(),
        int8_format=vectors_recipe(backend),
    )


def shard_key(documents: Sequence[Document], made_by: Provenance) -> str:
    """The hash of everything a shard's rows depend on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": SHARD_FORMAT, **made_by.as_metadata()}, sort_keys=True).encode())
    for doc in documents:
        fields = [
            doc.id,
            doc.title,
            doc.source,
            json.dumps(doc.metadata),
            json.dumps(doc.pages),
        ]
        digest.update(json.dumps(fields).encode())
        digest.update(hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()


def _cut_point(document_id: str) -> bool:
    digest = hashlib.blake2b(document_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % CUT_ONE_IN == 0


def plan_shards(documents: Sequence[Document], made_by: Provenance, shard_chars: int) -> list[Shard]:
    """Consecutive runs of ``documents``: a run ends after a document that is a cut point once it holds
    ``shard_chars`` characters of text, and in any case at four times that."""
    shards: list[Shard] = []
    current: list[Document] = []
    size = 0
    for doc in documents:
        current.append(doc)
        size += len(doc.text)
        if size >= 4 * shard_chars or (size >= shard_chars and _cut_point(doc.id)):
            shards.append(Shard(shard_key(current, made_by), current))
            current, size = [], 0
    if current:
        shards.append(Shard(shard_key(current, made_by), current))
    return shards


def embed_documents(
    documents: Sequence[Document],
    encoder: Encoder,
    chunking: ChunkingConfig,
    cache: EmbeddingCache | None,
    batch_size: int,
) -> tuple[list[Chunk], list[list[tuple[int, int]]], np.ndarray, list[np.ndarray], int]:
    """The chunks of ``documents`` with their sentence spans, vectors, span vectors, and how many passages
    had to be embedded: made by ``indexer.passages``, as a single-process build makes them."""
    upserts, embedded = prepare_upserts(documents, encoder, cache, chunking, batch_size=batch_size)
    passages = [p for u in upserts for p in u.passages]
    vectors = (
        np.stack([p.vector for p in passages]) if passages else np.zeros((0, encoder.dimension), np.float32)
    )
    return (
        [p.chunk for p in passages],
        [list(p.spans) for p in passages],
        vectors,
        [p.span_vectors for p in passages],
        embedded,
    )


class ShardEmbedder:
    """A Ray Data actor: one encoder, loaded once; each call turns shards of documents into Parquet bytes."""

    def __init__(
        self,
        load: EncoderLoader,
        weights_sha256: str,
        chunking: ChunkingConfig,
        cache_dir: str,
        batch_size: int,
    ) -> None:
        self.encoder = load()
        if self.encoder.weights_sha256 != weights_sha256:
            raise ModelError(
                f"the model on node {os.uname().nodename} has weights {self.encoder.weights_sha256[:12]}, "
                f"the machine that runs the build has {weights_sha256[:12]}: install the same model on every node"
            )
        self.chunking = chunking
        self.batch_size = batch_size
        self.cache = None
        if cache_dir and Path(cache_dir).is_dir():
            self.cache = EmbeddingCache(Path(cache_dir), self.encoder)
        self.node = "" if self.cache is not None or not cache_dir else os.uname().nodename  # has no cache
        self.provenance = provenance(self.encoder, chunking)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "shard": [],
            "parquet": [],
            "embedded": [],
            "uncached_node": [],
            "seconds": [],
        }
        for name, blob in zip(batch["shard"], batch["documents"], strict=True):
            started = time.perf_counter()
            documents = pickle.loads(blob)
            chunks, spans, vectors, span_vectors, embedded = embed_documents(
                documents, self.encoder, self.chunking, self.cache, self.batch_size
            )
            buffer = io.BytesIO()
            write_passages(buffer, documents, chunks, vectors, spans, span_vectors, self.provenance)
            out["shard"].append(name)
            out["parquet"].append(buffer.getvalue())
            out["embedded"].append(embedded)
            out["uncached_node"].append(self.node)
            out["seconds"].append(time.perf_counter() - started)
        return out


def read_files(batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    """A Ray Data task: read each file of the batch with the normal reader, on whichever node runs it."""
    results = []
    for path, doc_id, source in zip(batch["path"], batch["doc_id"], batch["source"], strict=True):
        results.append(pickle.dumps(read_file(Path(path), str(doc_id), str(source))))
    return {"index": list(batch["index"]), "result": results}


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Ray, connected: to ``address`` (``auto``: the cluster this node joined), or a new local instance with
    this machine's cores and no dashboard. A connection the caller already holds is used as it is. Workers' logs stay in Ray's
    session folder: what goes wrong in them comes back here as exceptions."""
    import ray

    if ray.is_initialized():
        yield
        return
    # Ray's own default for a new local instance is token authentication, and it says so with a warning.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(
            address=address or None,
            num_cpus=None if address else os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayBuildError(
            f"could not connect to {where} ({exc}); start a cluster with `ray start --head`, or leave "
            "--ray-address empty to start a local instance"
        ) from exc
    try:
        yield
    finally:
        ray.shutdown()


def _quiet_ray_data(progress: bool) -> None:
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _read_corpus(files: Sequence[Any], cpus: int) -> CorpusCollector:
    import ray

    items = [
        {"index": i, "path": str(f.path.resolve()), "doc_id": f.doc_id, "source": str(f.path)}
        for i, f in enumerate(files)
    ]
    collector = CorpusCollector()
    if not items:
        return collector
    blocks = min(len(items), READ_BLOCKS_PER_CPU * cpus)
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(read_files, batch_size=None)
    results = sorted((int(row["index"]), row["result"]) for row in dataset.iter_rows())
    for _, blob in results:
        collector.add(*pickle.loads(blob))
    return collector


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finished(path: Path) -> bool:
    """A shard file that is there and whole (its footer reads); a damaged one is removed, to be redone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        path.unlink(missing_ok=True)
        return False
    return True


def staging_dir(cache_dir: Path, paths: Sequence[Path], made_by: Provenance, shard_chars: int) -> Path:
    run = hashlib.sha256(
        json.dumps(
            [sorted(str(p.resolve()) for p in paths), made_by.as_metadata(), shard_chars], sort_keys=True
        ).encode()
    ).hexdigest()
    return cache_dir / SHARDS_DIR / run[:16]


def _actor_options(options: RayOptions, shards: int) -> dict[str, Any]:
    import ray

    if options.num_gpus > 0:
        actors, resources = options.num_gpus, {"num_gpus": 1}
    else:
        actors = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        resources = {"num_cpus": 1}
    return {"compute": ray.data.ActorPoolStrategy(size=max(1, min(actors, shards))), **resources}


def build_index_with_ray(
    paths: Sequence[Path],
    *,
    index_dir: Path,
    encoder: Encoder,
    load_encoder: EncoderLoader,
    chunking: ChunkingConfig,
    options: RayOptions,
    cache_dir: Path,
    use_cache: bool = True,
    faiss_factory: str = AUTO,
    batch_size: int = 32,
    progress: bool = False,
) -> RayBuildReport:
    """Index ``paths`` as ``build_index`` does, reading, chunking and embedding on Ray (see the module
    docstring). ``encoder`` is this machine's copy of the model (for the shard keys and the final build),
    ``load_encoder`` loads it in each actor. Shards are staged under ``cache_dir``; with ``use_cache`` the
    actors use the embedding cache in ``cache_dir`` where their machine has that folder."""
    import ray

    started = time.perf_counter()
    unlisted: list[Skipped] = []
    files = corpus_files(paths, unlisted)
    parquet_inputs = [f.path for f in files if f.is_parquet]
    made_by = provenance(encoder, chunking)
    shards_dir = staging_dir(cache_dir, paths, made_by, options.shard_chars)
    with ray_session(options.address):
        try:
            _quiet_ray_data(progress)
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            collector = _read_corpus([f for f in files if not f.is_parquet], cpus)
            collector.result.skipped[:0] = unlisted
            documents = collector.result.documents
            if not documents and not parquet_inputs:
                raise nothing_to_index(paths, collector.result.skipped)
            shards = plan_shards(documents, made_by, options.shard_chars)
            shards_dir.mkdir(parents=True, exist_ok=True)
            todo = [s for s in shards if not _finished(shards_dir / s.file_name)]
            embed_started = time.perf_counter()
            embedded, actor_seconds = 0, 0.0
            if todo:
                items = [{"shard": s.file_name, "documents": pickle.dumps(s.documents)} for s in todo]
                dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                    ShardEmbedder,
                    batch_size=1,
                    fn_constructor_kwargs={
                        "load": load_encoder,
                        "weights_sha256": encoder.weights_sha256,
                        "chunking": chunking,
                        "cache_dir": str(cache_dir.resolve()) if use_cache else "",
                        "batch_size": batch_size,
                    },
                    **_actor_options(options, len(todo)),
                )
                uncached = set()
                for row in dataset.iter_rows():
                    _write_atomically(shards_dir / str(row["shard"]), row["parquet"])
                    embedded += int(row["embedded"])
                    actor_seconds += float(row["seconds"])
                    uncached.add(str(row["uncached_node"]))
                for node in sorted(uncached - {""}):
                    log.warning(
                        "node %s has no embedding cache folder %s: its actors embedded everything",
                        node,
                        cache_dir,
                    )
        except ray.exceptions.RayError as exc:  # a task or actor failed: say what, not Ray's traceback
            raise _cluster_error(exc) from exc
        embed_seconds = time.perf_counter() - embed_started
    final_started = time.perf_counter()
    report = build_index(
        [*(shards_dir / s.file_name for s in shards), *parquet_inputs],
        index_dir=index_dir,
        encoder=encoder,
        chunking=chunking,
        faiss_factory=faiss_factory,
        batch_size=batch_size,
        progress=progress,
    )
    final_seconds = time.perf_counter() - final_started
    used = {s.file_name for s in shards}
    for stale in [*shards_dir.glob("*.parquet"), *shards_dir.glob(".*.tmp")]:  # tmp: a killed run's
        if stale.name not in used:
            stale.unlink(missing_ok=True)
    build = replace(
        report,
        skipped=[*collector.result.skipped, *report.skipped],
        embedded=embedded,
        imported=_rows(parquet_inputs),
        seconds=time.perf_counter() - started,
        embed_seconds=embed_seconds,
    )
    return RayBuildReport(
        build, len(shards), len(shards) - len(todo), shards_dir, actor_seconds, final_seconds
    )


def _rows(paths: Sequence[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in paths)
