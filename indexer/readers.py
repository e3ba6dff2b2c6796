"""Read a corpus: folders (recursively) of .txt, .md, .html, .pdf and .jsonl files into ``Document``s.

A file that cannot be read or parsed is reported with the reason and skipped; the build goes on.
Two documents with the same id are an error that names both sources, because silently keeping one
would make answers depend on file-system order.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.documents import Document

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl"}
MAX_TITLE_CHARS = 200


class CorpusError(ValueError):
    """The corpus as a whole cannot be indexed (missing path, duplicate document ids)."""


class ReadError(ValueError):
    """One file (or JSONL line) cannot be read; the reason is the message."""


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class CorpusReadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _title_from_text(text: str, fallback: str) -> str:
    """The first non-empty line when it is short enough to be a heading, else ``fallback``."""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= MAX_TITLE_CHARS else fallback
    return fallback


def _decode(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def read_text_file(path: Path, doc_id: str) -> Document:
    text = _decode(path)
    return Document(id=doc_id, text=text, title=_title_from_text(text, path.stem), source=str(path))


def read_html_file(path: Path, doc_id: str) -> Document:
    """Visible text only: scripts, styles, templates and the head are dropped; blocks become lines."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for hidden in soup(["script", "style", "noscript", "template", "head"]):
        hidden.decompose()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return Document(id=doc_id, text=text, title=title or _title_from_text(text, path.stem), source=str(path))


def read_pdf_file(path: Path, doc_id: str) -> Document:
    """Text of every page, pages separated by a blank line; ``metadata["pages"]`` maps offsets to pages."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        page_texts = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:  # pypdf raises many types on broken files; each means "cannot read this one"
        raise ReadError(f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
    parts: list[str] = []
    pages: list[tuple[int, int, int]] = []  # (start, end, page number from 1)
    offset = 0
    for number, page_text in enumerate(page_texts, start=1):
        page_text = page_text.strip()
        if not page_text:
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        pages.append((offset, offset + len(page_text), number))
        parts.append(page_text)
        offset += len(page_text)
    text = "".join(parts)
    title = str(meta_title).strip() or _title_from_text(text, path.stem)
    return Document(id=doc_id, text=text, title=title, source=str(path), pages=pages)


def parse_jsonl_record(record: Any) -> Document:
    """One BEIR-style record ``{"id"|"_id", "title"?, "text", "metadata"?}``; raises ``ReadError``."""
    if not isinstance(record, dict):
        raise ReadError("a line must be a JSON object")
    doc_id = record.get("id", record.get("_id"))
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise ReadError('needs a non-empty string "id" (or "_id")')
    text, title, metadata = record.get("text"), record.get("title") or "", record.get("metadata") or {}
    if not isinstance(text, str):
        raise ReadError(f'document {doc_id!r}: "text" must be a string')
    if not isinstance(title, str):
        raise ReadError(f'document {doc_id!r}: "title" must be a string')
    if not isinstance(metadata, dict):
        raise ReadError(f'document {doc_id!r}: "metadata" must be an object')
    return Document(id=doc_id, text=text, title=title.strip(), metadata=metadata)


def read_jsonl_file(path: Path, result: CorpusReadResult) -> Iterator[Document]:
    """Documents of a JSONL file; a bad line is reported (file:line) and skipped, the rest still read."""
    try:
        with path.open("r", encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                source = f"{path}:{number}"
                try:
                    doc = parse_jsonl_record(json.loads(line))
                except json.JSONDecodeError as exc:
                    result.skipped.append(Skipped(source, f"invalid JSON ({exc.msg})"))
                    continue
                except ReadError as exc:
                    result.skipped.append(Skipped(source, str(exc)))
                    continue
                yield Document(
                    id=doc.id, text=doc.text, title=doc.title, metadata=doc.metadata, source=source
                )
    except UnicodeDecodeError as exc:
        result.skipped.append(Skipped(str(path), f"not UTF-8 text ({exc.reason})"))


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def _read_file(path: Path, doc_id: str, result: CorpusReadResult) -> Iterable[Document]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl_file(path, result)
    if suffix in TEXT_SUFFIXES:
        return [read_text_file(path, doc_id)]
    if suffix in HTML_SUFFIXES:
        return [read_html_file(path, doc_id)]
    if suffix == ".pdf":
        return [read_pdf_file(path, doc_id)]
    raise ReadError(
        f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
    )


def read_corpus(paths: Sequence[Path]) -> CorpusReadResult:
    """Read every document under ``paths``. Raises ``CorpusError`` on a missing path or a duplicate id."""
    result = CorpusReadResult()
    seen: dict[str, str] = {}
    for root in paths:
        if not root.exists():
            raise CorpusError(f"corpus path {root} does not exist")
        base = root.parent if root.is_file() else root
        for path in _files_under(root):
            doc_id = path.relative_to(base).as_posix()
            try:
                documents = list(_read_file(path, doc_id, result))
            except (ReadError, OSError) as exc:
                result.skipped.append(Skipped(str(path), str(exc)))
                log.warning("skipped %s: %s", path, exc)
                continue
            for doc in documents:
                if not doc.text.strip():
                    result.skipped.append(Skipped(doc.source, "empty document"))
                    continue
                if doc.id in seen:
                    raise CorpusError(
                        f"duplicate document id {doc.id!r}: in {seen[doc.id]} and in {doc.source}"
                    )
                seen[doc.id] = doc.source
                result.documents.append(doc)
    return result
