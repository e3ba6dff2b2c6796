"""The records that flow through the pipeline: documents read from the corpus and the chunks cut from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
