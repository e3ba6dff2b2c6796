"""``semqa index``: read files, make passages, commit them to the store, build and serve a new generation.

What a rebuild keeps: the index holds the documents of the files given to the last ``semqa index`` plus
every document written through the documents API. A rebuild upserts every document it reads (one that
did not change is left as it is, its passages not even made again), deletes the documents of earlier
builds that it no longer finds, and keeps the API's documents, except where a file brings the same id:
then the file's version is the newer write and replaces it. When the model, its backend or the chunking
changed, every passage is made again, the API's documents too (from their stored text).

The rebuild commits its changes and builds the new generation holding the writer lock, so writes
through the API wait for it (and answer 503 with Retry-After after ``SEMQA_WRITE_WAIT`` seconds);
questions are answered from the previous generation until the new one is current.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embeddings import EmbeddingCache, Encoder
from embeddings.backends import compatible
from embeddings.files import file_lock
from embeddings.onnx_export import vectors_recipe
from indexer.chunking import ChunkingConfig
from indexer.compact import finish, install
from indexer.dense import AUTO
from indexer.documents import Document
from indexer.generation import build_generation, current_name, current_path
from indexer.layout import COMPACT_LOCK, STORE, writer_lock
from indexer.parquet import EmbeddedPassages, read_passages
from indexer.passages import prepare_upserts
from indexer.readers import Skipped, nothing_to_index, read_corpus
from indexer.store import Change, Delete, Passage, Store, StoreConfig, Upsert
from indexer.writer import recover

API_SOURCE = "api"  # documents.source of documents written through the HTTP API


@dataclass(frozen=True)
class BuildReport:
    generation_dir: Path
    documents: int  # documents read from the files
    chunks: int  # passages made from them
    skipped: list[Skipped]
    embedded: int  # passages whose vectors were computed (the rest came from the cache or from Parquet)
    unchanged: int  # documents already indexed as they are (nothing made again)
    seconds: float
    embed_seconds: float
    imported: int = 0  # passages read embedded from Parquet files
    backend: str = "torch"  # the encoder backend the index's vectors were made with
    # documents written through the API whose passages were made again (a rebuild with other chunking or
    # another model remakes every passage, theirs from their stored text), and those passages; they count
    # in ``embedded`` but not in ``documents`` or ``chunks``
    api_documents: int = 0
    api_chunks: int = 0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


def store_config(encoder: Encoder, chunking: ChunkingConfig) -> StoreConfig:
    return StoreConfig(
        model_name=encoder.name,
        model_sha256=encoder.weights_sha256,
        dimension=encoder.dimension,
        chunking=chunking.as_dict(),
        backend=encoder.backend,
        int8_format=vectors_recipe(encoder.backend),
    )


def needs_remake(stored: StoreConfig, wanted: StoreConfig) -> bool:
    """Whether passages made with ``stored`` must all be made again to serve ``wanted``: another model,
    dimension or chunking, vectors of an incompatible backend (torch and onnx are interchangeable), or of
    another int8 recipe (close, but not the model that encodes the questions)."""
    made = (stored.model_sha256, stored.dimension, stored.chunking, stored.int8_format)
    wants = (wanted.model_sha256, wanted.dimension, wanted.chunking, wanted.int8_format)
    return made != wants or not compatible(stored.backend, wanted.backend)


def imported_upserts(imported: EmbeddedPassages, skip: set[str], force: bool) -> list[Upsert]:
    """The documents of Parquet files as upserts, with the passages and vectors they arrived with."""
    passages: dict[str, list[Passage]] = {}
    for at, chunk in enumerate(imported.chunks):
        passages.setdefault(chunk.document_id, []).append(
            Passage(chunk, imported.vectors[at], imported.spans[at], imported.span_vectors[at])
        )
    return [Upsert(d, passages.get(d.id, []), force=force) for d in imported.documents if d.id not in skip]


def _open_store(index_dir: Path, config: StoreConfig) -> Store:
    path = index_dir / STORE
    return Store(path) if path.exists() else Store.create(path, config)


def build_index(
    paths: Sequence[Path],
    *,
    index_dir: Path,
    encoder: Encoder,
    chunking: ChunkingConfig,
    faiss_factory: str = AUTO,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> BuildReport:
    """Index every document under ``paths`` into ``index_dir`` (created if new) and serve the result."""
    started = time.perf_counter()
    corpus = read_corpus(paths)
    # Passages that arrive embedded (Parquet files): indexed with their vectors, never embedded again.
    imported = read_passages(
        corpus.embedded,
        model_sha256=encoder.weights_sha256,
        dimension=encoder.dimension,
        backend=encoder.backend,
        taken={d.id: d.source for d in corpus.documents},
    )
    if not corpus.documents and not imported.documents:
        raise nothing_to_index(paths, corpus.skipped)
    config = store_config(encoder, chunking)
    with file_lock(index_dir / COMPACT_LOCK):  # one build or compaction at a time
        store = _open_store(index_dir, config)
        remake = needs_remake(store.read_config(), config) or current_name(index_dir) is None
        imported_ids = {d.id for d in imported.documents}
        read_ids = imported_ids | {d.id for d in corpus.documents}
        latest = store.latest()

        def api_documents(seq: int) -> list[Document]:
            """The API's documents at ``seq``, whose passages a remake makes again from their stored text."""
            return [d for d in store.live_documents(seq, source=API_SOURCE) if d.id not in read_ids]

        def gone(seq: int) -> list[Change]:
            """Documents of files that left the corpus."""
            live = store.live_documents(seq)
            return [Delete(d.id) for d in live if d.source != API_SOURCE and d.id not in read_ids]

        def prepare(documents: list[Document]) -> tuple[list[Upsert], int]:
            return prepare_upserts(
                documents, encoder, cache, chunking, force=remake, batch_size=batch_size, progress=progress
            )

        unchanged: set[str] = set()
        if not remake:
            unchanged = store.unchanged([*corpus.documents, *imported.documents])
        embed_started = time.perf_counter()
        upserts, embedded = prepare(
            [
                d
                for d in [*corpus.documents, *(api_documents(latest) if remake else [])]
                if d.id not in unchanged
            ]
        )
        embed_seconds = time.perf_counter() - embed_started
        upserts += imported_upserts(imported, unchanged, force=remake)
        with writer_lock(index_dir):
            recover(store, index_dir)
            replaced = current_name(index_dir)
            now = store.latest()
            if remake and now != latest:
                # The API wrote while this build embedded, its passages made with the recipe still recorded:
                # its documents are taken as they are now (a write kept, a delete not undone) and made again.
                # Their texts embedded above come from the cache.
                upserts = [u for u in upserts if u.document.id in read_ids]
                again, more = prepare(api_documents(now))
                upserts, embedded = upserts + again, embedded + more
            store.commit([*upserts, *gone(now)], config=config if remake else None)
            seq = store.latest()
            tmp = build_generation(index_dir, store, seq, faiss_factory)
            install(index_dir, store, tmp, seq)
        finish(index_dir, store, replaced)
    return BuildReport(
        generation_dir=current_path(index_dir),
        documents=len(corpus.documents) + len(imported.documents),
        chunks=sum(len(u.passages) for u in upserts if u.document.id in read_ids),
        skipped=corpus.skipped,
        embedded=embedded,
        unchanged=len(unchanged),
        seconds=time.perf_counter() - started,
        embed_seconds=embed_seconds,
        imported=sum(len(u.passages) for u in upserts if u.document.id in imported_ids),
        backend=store.config.backend,
        api_documents=sum(1 for u in upserts if u.document.id not in read_ids),
        api_chunks=sum(len(u.passages) for u in upserts if u.document.id not in read_ids),
    )
