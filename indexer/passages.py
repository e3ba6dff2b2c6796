"""Documents to embedded passages: chunk, find the quotable sentences, embed (through the cache).

One path for every writer of the store: ``semqa index`` builds, the documents API and the distributed
build all make passages here, so a passage is the same whoever made it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embeddings import EmbeddingCache, Encoder
from indexer.chunking import ChunkingConfig, chunk_document, embedding_inputs, quotable_sentences
from indexer.documents import Chunk, Document
from indexer.readers import CorpusError
from indexer.store import Passage, Upsert


def embed_chunks(
    chunks: Sequence[Chunk],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    chunking: ChunkingConfig,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[Passage], int]:
    """The chunks with their vectors and their sentences' vectors, and how many had to be embedded (the
    rest came from the cache). What the model reads is ``embedding_inputs``' (the title before the text);
    the sentences' offsets stay those in the chunk text."""
    spans = [quotable_sentences(c.text) for c in chunks]
    texts, embed_spans = embedding_inputs(chunks, spans, encoder, chunking)
    if cache is not None:
        vectors, span_vectors, embedded = cache.encode(
            texts, embed_spans, batch_size=batch_size, progress=progress
        )
    else:
        vectors, span_vectors = encoder.encode_spans(texts, embed_spans, batch_size=batch_size)
        embedded = len(texts)
    passages = [
        Passage(chunk, vector, spans_of, np.asarray(vectors_of, dtype=np.float32))
        for chunk, vector, spans_of, vectors_of in zip(chunks, vectors, spans, span_vectors, strict=True)
    ]
    return passages, embedded


def prepare_upserts(
    documents: Sequence[Document],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    chunking: ChunkingConfig,
    *,
    force: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[Upsert], int]:
    """One upsert per document with its embedded passages, and how many passages had to be embedded."""
    chunks = [[*chunk_document(d, encoder, chunking)] for d in documents]
    flat = [c for per_document in chunks for c in per_document]
    ids = [c.chunk_id for c in flat]
    if len(set(ids)) != len(ids):  # 63-bit hashes: astronomically unlikely, but never silently merge chunks
        raise CorpusError("two chunks hashed to the same id; rename one of the documents and rebuild")
    passages, embedded = embed_chunks(
        flat, encoder, cache, chunking, batch_size=batch_size, progress=progress
    )
    upserts, at = [], 0
    for document, per_document in zip(documents, chunks, strict=True):
        upserts.append(Upsert(document, passages[at : at + len(per_document)], force=force))
        at += len(per_document)
    return upserts, embedded
