"""Chunking: exact offsets, the model's token limit, sentence packing, word windows for unpunctuated text."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import pytest

from indexer import ChunkingConfig, Document, chunking, read_corpus
from indexer.chunking import chunk_document, chunk_spans, embedding_inputs, sections
from tests.conftest import CORPUS


@pytest.fixture(scope="module")
def corpus_docs():
    return read_corpus([CORPUS]).documents


@pytest.mark.parametrize("size", [64, 128, 256, 10_000])
def test_real_corpus_offsets_are_exact_and_chunks_fit_the_model(encoder, corpus_docs, size):
    config = ChunkingConfig(chunk_tokens=size, overlap=32)
    for doc in corpus_docs:
        chunks = chunk_document(doc, encoder, config)
        assert chunks, doc.id
        for chunk in chunks:
            assert doc.text[chunk.start : chunk.end] == chunk.text
            assert chunk.document_id == doc.id and chunk.title == doc.title
        counts = encoder.count_tokens([c.text for c in chunks])  # special tokens included
        assert max(counts) <= encoder.max_seq_length
        # Every non-space character of the document is in some chunk: nothing is dropped.
        covered = [False] * len(doc.text)
        for chunk in chunks:
            covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
        assert all(covered[i] for i, ch in enumerate(doc.text) if not ch.isspace())


def test_a_long_text_is_chunked_a_section_at_a_time(encoder, corpus_docs, monkeypatch):
    # found by probing: a 50 MB one-line file took 11 GB to chunk (objects per token of the whole text);
    # sections bound that, and change nothing in a text shorter than one
    white_paper = next(d for d in corpus_docs if d.id.startswith("004_"))  # one line, unpunctuated
    prose = "\n".join(d.text for d in corpus_docs if not d.id.startswith("004_"))
    config = ChunkingConfig()
    for text in (white_paper.text, prose):
        whole = chunk_spans(text, encoder, config)
        monkeypatch.setattr(chunking, "SECTION_CHARS", 5000)
        bounds = sections(text, 5000)
        assert len(bounds) >= 3 and bounds[0][0] == 0 and bounds[-1][1] == len(text)
        assert all(a[1] == b[0] and b[0] - a[0] <= 5000 for a, b in itertools.pairwise(bounds))
        assert all(text[end - 1].isspace() for _, end in bounds[:-1])  # cut after a line break or a space
        parts = chunk_spans(text, encoder, config)
        monkeypatch.undo()
        assert parts == sorted(parts) and not any(s < cut < e for s, e in parts for _, cut in bounds)
        covered = [False] * len(text)
        for s, e in parts:
            covered[s:e] = [True] * (e - s)
        assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
        assert max(encoder.count_tokens([text[s:e] for s, e in parts])) <= encoder.max_seq_length
        # before the first section's last chunk (which ends at the cut), the same chunks as in one piece;
        # after it, the packing starts afresh
        first = [c for c in parts if c[1] <= bounds[0][1]][:-1]
        assert first and first == [c for c in whole if c[1] <= first[-1][1]]
    assert sections("short text", 5000) == [(0, 10)]


def test_prose_chunks_end_at_sentence_boundaries(encoder, corpus_docs):
    doc = next(d for d in corpus_docs if d.id.startswith("000_"))
    chunks = chunk_document(doc, encoder, ChunkingConfig(chunk_tokens=64, overlap=0))
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        following = doc.text[chunk.end : chunk.end + 1]
        assert re.search(r"[.!?”’\"')\]]$", chunk.text) or following == "\n", chunk.text[-40:]


def test_unpunctuated_text_becomes_overlapping_word_windows(encoder):
    words = [f"stem{i} launch satellit orbit" for i in range(300)]
    text = " ".join(words)
    spans = chunk_spans(text, encoder, ChunkingConfig(chunk_tokens=100, overlap=20))
    assert len(spans) > 5
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s2 < e1, "consecutive windows overlap"
        assert text[s1 - 1 : s1].strip() == "" and text[e1 : e1 + 1].strip() == "", (
            "windows cut at word boundaries"
        )
    counts = encoder.count_tokens([text[s:e] for s, e in spans])
    assert max(counts) <= 100 + 2
    assert min(counts[:-1]) >= 60  # windows are filled, not fragments


def test_pathological_tokens_still_fit(encoder):
    # A very long "word" (a URL, base64) is cut inside the word rather than truncated by the model.
    text = "See " + "x9Q" * 2000 + " and " + "漢字" * 800 + ". End."
    doc = Document(id="weird", text=text)
    chunks = chunk_document(doc, encoder, ChunkingConfig(chunk_tokens=256, overlap=32))
    assert max(encoder.count_tokens([c.text for c in chunks])) <= encoder.max_seq_length
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_chunk_ids_are_stable_and_distinct(encoder, corpus_docs):
    config = ChunkingConfig()
    first = [c.chunk_id for d in corpus_docs for c in chunk_document(d, encoder, config)]
    again = [c.chunk_id for d in corpus_docs for c in chunk_document(d, encoder, config)]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(0 <= i < 2**63 for i in first)


def test_pdf_chunks_carry_their_page(encoder):
    text = "Page one sentence.\n\nPage two sentence."
    doc = Document(id="p.pdf", text=text, pages=[(0, 18, 1), (20, 38, 2)])
    chunks = chunk_document(doc, encoder, ChunkingConfig(chunk_tokens=5, overlap=0))
    assert [c.metadata for c in chunks] == [{"page": 1}, {"page": 2}]
    (whole,) = chunk_document(doc, encoder, ChunkingConfig(chunk_tokens=64, overlap=0))
    assert whole.metadata == {"page": 1, "page_end": 2}


def test_the_model_reads_the_title_before_each_passage(encoder):
    doc = Document(id="d", title="Lunar relay satellites", text="Queqiao relays signals. It orbits L2.")
    chunk = chunk_document(doc, encoder, ChunkingConfig())[0]
    spans = [[(0, 23), (24, 37)]]
    texts, moved = embedding_inputs([chunk], spans, encoder, ChunkingConfig())
    assert texts == ["Lunar relay satellites\nQueqiao relays signals. It orbits L2."]
    assert [texts[0][s:e] for s, e in moved[0]] == ["Queqiao relays signals.", "It orbits L2."]
    assert embedding_inputs([chunk], spans, encoder, ChunkingConfig(embed_title=False)) == (
        [chunk.text],
        spans,
    )
    titled = replace(
        chunk, text="Lunar relay satellites\nQueqiao relays signals."
    )  # the passage starts with it
    assert embedding_inputs([titled], [[]], encoder, ChunkingConfig())[0] == [titled.text]
    # a title that would not fit the model whole with the passage is left out, never truncated
    long_title = replace(chunk, title="relay " * encoder.max_seq_length)
    assert embedding_inputs([long_title], spans, encoder, ChunkingConfig()) == ([chunk.text], spans)
