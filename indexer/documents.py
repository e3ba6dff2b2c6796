"""The records that flow through the pipeline: documents read from the corpus and the chunks cut from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_ID_CHARS = 512  # a document id, in characters (it is a URL path segment of the documents API)
METADATA_DEPTH = 32  # nesting levels of a document's metadata


@dataclass(frozen=True)
class Document:
    """One document. ``id`` is the path relative to the corpus root for files, the given id for JSONL."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was read from, for error messages ("corpus/a.jsonl:12")
    pages: list[tuple[int, int, int]] = field(default_factory=list)  # PDFs: (start, end, page number)


@dataclass(frozen=True)
class Chunk:
    """A passage of a document: ``document.text[start:end] == text`` always holds."""

    chunk_id: int
    document_id: str
    title: str
    start: int
    end: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


# What a document may hold, whatever way it comes in (files, JSONL, Parquet, the documents API). JSON's
# escapes can spell a lone UTF-16 surrogate ("\\ud800"), and a file name that is not UTF-8 becomes one
# too: Python holds it in a ``str`` that is not Unicode text, on which the tokeniser, the lexical index and
# SQLite each fail differently. Python's JSON reads NaN, Infinity and 1e400 (as Infinity), which are not
# JSON: stored, they would be served back to strict clients as invalid JSON.


def not_unicode(value: str) -> str | None:
    """Why ``value`` is not Unicode text, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds {value[exc.start]!r} at {exc.start}, half of a UTF-16 surrogate pair, which is not a character"
    return None


def not_storable(value: Any, depth: int = METADATA_DEPTH, where: str = "") -> str | None:
    """Why ``value`` (metadata) cannot be stored as JSON and read back the same, or None; ``depth``: how
    many more objects and arrays may nest here."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"holds {value} at {where or 'the top'}, which is not a JSON number (NaN, Infinity, or beyond 1e308)"
    if isinstance(value, str):
        problem = not_unicode(value)
        return f"at {where or 'the top'} {problem}" if problem else None
    if not isinstance(value, (dict, list)):
        return None
    if depth == 0:
        return f"nests deeper than {METADATA_DEPTH} levels"
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        place = f"{where}.{key}" if where else str(key)
        problem = (not_unicode(key) if isinstance(key, str) else None) or not_storable(item, depth - 1, place)
        if problem is not None:
            return problem
    return None


def document_problem(doc: Document) -> str | None:
    """Why ``doc`` cannot be indexed as it is, or None: the documents API's rules (server/schemas.py), for
    every other way in."""
    if len(doc.id) > MAX_ID_CHARS:
        return f"its id is {len(doc.id)} characters long, more than {MAX_ID_CHARS}"
    for name, value in (("id", doc.id), ("title", doc.title), ("text", doc.text)):
        problem = not_unicode(value)
        if problem is not None:
            return f"its {name} {problem} (a JSON escape such as \\ud800, or a file name that is not UTF-8)"
    problem = not_storable(doc.metadata)
    return None if problem is None else f"its metadata {problem}"
