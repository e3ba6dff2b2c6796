"""Cut documents into passages that the model reads whole.

Units are sentences where the text has sentence punctuation (or line breaks), and words inside any
sentence too long for one chunk, so unpunctuated text (like the stemmed white paper) becomes word
windows. Units are packed greedily up to ``chunk_tokens`` model tokens, and each chunk after the first
starts with up to ``overlap`` tokens of whole units from the end of the previous one, so that an
answer spanning a boundary is still whole in some chunk.

Token counts come from the model's own tokenizer, and every chunk is re-checked with it (special
tokens included) against ``max_seq_length``: nothing is truncated at embedding time.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from indexer.documents import Chunk, Document

# A sentence ends at . ! ? (possibly followed by closing quotes or brackets) when the next word starts with
# a capital letter (or an opening quote or bracket then one), and not after a common abbreviation
# ("Dr. Wang", "Sept. 18" already fails the capital test); CJK full stops end a sentence as they are.
# A line break always ends a unit (headings, list items, table rows).
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z])|[。！？]+|\n")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "no",
        "vs",
        "al",
        "cf",
        "ca",
        "fig",
        "vol",
        "gen",
        "col",
        "rev",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "univ",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "e.g",
        "i.e",
        "etc",
        "approx",
    ]
)
_WORD_BEFORE = re.compile(r"(\S+)$")
_WORD = re.compile(r"\S+")
VERIFY_MARGIN = 16  # tokens; chunks closer than this to the model's limit are re-tokenised on their own
# A longer text is chunked a section at a time, so that memory stays bounded whatever a document's length:
# chunking holds a few objects per token (offsets, units), about 125 bytes per character of text, and a
# 50 MB one-line file took 11 GB. Sections end at a line break in their second half, else at a space, so
# that no unit and (almost never) no word is cut; a chunk never crosses a section's end, and the first
# chunk of a section repeats nothing of the one before.
SECTION_CHARS = 200_000
# A "sentence" longer than this (unpunctuated text) is not quoted whole: highlights use word windows there.
LONG_SENTENCE_WORDS = 40


class TokenCounter(Protocol):
    """What chunking needs from a model (``embeddings.Encoder`` is one)."""

    max_content_tokens: int

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 128
    overlap: int = 32
    embed_title: bool = True  # the model reads the document title before each passage (embedding_inputs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


def chunk_id(document_id: str, start: int, end: int) -> int:
    """A stable 63-bit id (FAISS ids are signed 64-bit) from the document id and the chunk's span."""
    digest = hashlib.blake2b(f"{document_id}\x00{start}\x00{end}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class _TokenIndex:
    """Counts the document's model tokens inside any character span, from one tokenisation of the text."""

    def __init__(self, offsets: list[tuple[int, int]]) -> None:
        self.offsets = offsets
        self._starts = [s for s, _ in offsets]

    def count(self, start: int, end: int) -> int:
        return bisect.bisect_left(self._starts, end) - bisect.bisect_left(self._starts, start)

    def spans(self, start: int, end: int) -> list[tuple[int, int]]:
        lo, hi = bisect.bisect_left(self._starts, start), bisect.bisect_left(self._starts, end)
        return self.offsets[lo:hi]


def _after_abbreviation(text: str, dot: int) -> bool:
    if text[dot] != ".":
        return False
    before = _WORD_BEFORE.search(text, max(0, dot - 12), dot)
    if before is None:
        return False
    word = before.group(1).lstrip("(\"'“")
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())  # an initial: "A. Smith"


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence (or line) of ``text[start:end]``, white space trimmed."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    ends = [
        m.end() for m in _SENTENCE_END.finditer(text, start, end) if not _after_abbreviation(text, m.start())
    ]
    for bound in [*ends, end]:
        s, e = _strip_span(text, cursor, bound)
        cursor = bound
        if s < e:
            spans.append((s, e))
    return spans


def word_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each white-space separated word of ``text[start:end]``."""
    return [m.span() for m in _WORD.finditer(text, start, len(text) if end is None else end)]


def quotable_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text`` short enough to quote whole as a highlight."""
    return [(s, e) for s, e in sentence_spans(text) if len(word_spans(text, s, e)) <= LONG_SENTENCE_WORDS]


def _units(text: str, start: int, end: int, tokens: _TokenIndex, budget: int) -> list[_Unit]:
    """Sentences of ``text[start:end]``; a sentence over ``budget`` becomes words, a word over it tokens."""
    units: list[_Unit] = []
    for s, e in sentence_spans(text, start, end):
        n = tokens.count(s, e)
        if n <= budget:
            units.append(_Unit(s, e, n))
            continue
        for ws, we in word_spans(text, s, e):
            wn = tokens.count(ws, we)
            if wn <= budget:
                units.append(_Unit(ws, we, wn))
            else:
                units.extend(_Unit(ts, te, 1) for ts, te in tokens.spans(ws, we))
    return units


def _pack(units: list[_Unit], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing of units into spans of at most ``budget`` tokens, with up to ``overlap`` tokens repeated."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(units)
    while i < n:
        j, total = i, 0
        while j < n and total + units[j].tokens <= budget:
            total += units[j].tokens
            j += 1
        j = max(j, i + 1)
        spans.append((units[i].start, units[j - 1].end))
        if j >= n:
            break
        k, repeated = j, 0
        while k - 1 > i and repeated + units[k - 1].tokens <= overlap:
            k -= 1
            repeated += units[k].tokens
        i = k
    return spans


def chunk_spans(text: str, counter: TokenCounter, config: ChunkingConfig) -> list[tuple[int, int]]:
    """Character spans of the chunks of ``text``, each verified to fit the model, in order."""
    spans: list[tuple[int, int]] = []
    for start, end in sections(text, SECTION_CHARS):
        spans.extend(_section_chunk_spans(text, start, end, counter, config))
    return spans


def sections(text: str, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the sections of ``text`` chunked one at a time, each at most ``size`` long."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while len(text) - start > size:
        half, end = start + size // 2, start + size
        cut = text.rfind("\n", half, end)
        if cut < 0:
            cut = max(text.rfind(" ", half, end), text.rfind("\t", half, end))
        cut = end if cut < 0 else cut + 1
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(text)))
    return bounds


def _section_chunk_spans(
    text: str, start: int, end: int, counter: TokenCounter, config: ChunkingConfig
) -> list[tuple[int, int]]:
    """The chunks of ``text[start:end]``, from one tokenisation of that section."""
    budget = min(config.chunk_tokens, counter.max_content_tokens)
    overlap = min(config.overlap, budget // 2)
    tokens = _TokenIndex([(s + start, e + start) for s, e in counter.token_offsets(text[start:end])])
    pending = _pack(_units(text, start, end, tokens, budget), budget, overlap)
    specials = counter.count_tokens([""])[0]
    limit = counter.max_content_tokens + specials  # max_seq_length
    spans: list[tuple[int, int]] = []
    # Tokenising a chunk on its own can differ slightly from counting inside the whole document (only
    # where a cut falls inside a word: a few tokens). Chunks within VERIFY_MARGIN of the limit are
    # tokenised again and any the model would truncate is cut again with a smaller budget until it fits.
    near_limit = [tokens.count(s, e) + specials > limit - VERIFY_MARGIN for s, e in pending]
    spans.extend(span for span, near in zip(pending, near_limit, strict=True) if not near)
    pending = [span for span, near in zip(pending, near_limit, strict=True) if near]
    while pending:
        counts = counter.count_tokens([text[s:e] for s, e in pending])
        retry: list[tuple[int, int]] = []
        for (s, e), count in zip(pending, counts, strict=True):
            if count <= limit:
                spans.append((s, e))
                continue
            smaller = max(1, tokens.count(s, e) - (count - limit) - 1)
            retry.extend(_pack(_units(text, s, e, tokens, smaller), smaller, min(overlap, smaller // 2)))
        pending = retry
    return sorted(set(spans))  # re-split pieces can coincide with a neighbour


def chunk_document(doc: Document, counter: TokenCounter, config: ChunkingConfig) -> list[Chunk]:
    """The chunks of one document, with offsets, title and (for PDFs) the page the chunk starts on."""
    pages = doc.pages
    chunks: list[Chunk] = []
    for start, end in chunk_spans(doc.text, counter, config):
        metadata: dict[str, Any] = {}
        if pages:
            starts = [p[0] for p in pages]
            first = pages[max(0, bisect.bisect_right(starts, start) - 1)][2]
            last = pages[max(0, bisect.bisect_right(starts, end - 1) - 1)][2]
            metadata = {"page": first} if first == last else {"page": first, "page_end": last}
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc.id, start, end),
                document_id=doc.id,
                title=doc.title,
                start=start,
                end=end,
                text=doc.text[start:end],
                metadata=metadata,
            )
        )
    return chunks


def embedding_inputs(
    chunks: Sequence[Chunk],
    spans: Sequence[Sequence[tuple[int, int]]],
    counter: TokenCounter,
    config: ChunkingConfig,
) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """What the model reads for each chunk, and each chunk's ``spans`` moved to match: with
    ``config.embed_title``, the document's title on a line of its own before the passage (as BEIR's dense
    baselines embed title + text), unless the passage already starts with it or the pair would not fit the
    model whole; otherwise the passage alone. Span offsets stay relative to the chunk text in the store."""
    texts = [c.text for c in chunks]
    moved = [list(s) for s in spans]
    if not config.embed_title:
        return texts, moved
    titled = [i for i, c in enumerate(chunks) if c.title.strip() and not c.text.startswith(c.title.strip())]
    candidates = [f"{chunks[i].title.strip()}\n{texts[i]}" for i in titled]
    limit = counter.max_content_tokens + counter.count_tokens([""])[0]  # max_seq_length
    for i, text, tokens in zip(titled, candidates, counter.count_tokens(candidates), strict=True):
        if tokens <= limit:
            shift = len(text) - len(texts[i])
            texts[i] = text
            moved[i] = [(s + shift, e + shift) for s, e in moved[i]]
    return texts, moved
