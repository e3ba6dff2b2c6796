"""Read a corpus: folders (recursively) of .txt, .md, .html, .pdf and .jsonl files into ``Document``s.

A file that cannot be read or parsed is reported with the reason and skipped; the build goes on.
Two documents with the same id are an error that names both sources, because silently keeping one
would make answers depend on file-system order. Parquet files (passages already embedded) are not read
here: they are listed in ``CorpusReadResult.embedded`` for ``indexer.parquet``.

The steps are separate so that the distributed build (``indexer.ray_build``) runs the same ones:
``corpus_files`` lists the files and their document ids, ``read_file`` reads one file (on any machine),
and ``CorpusCollector`` applies the corpus-wide rules (empty documents, duplicate ids) in file order.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.documents import Document, document_problem

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PARQUET_SUFFIX = ".parquet"
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl", PARQUET_SUFFIX}
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
    embedded: list[Path] = field(
        default_factory=list
    )  # Parquet files of embedded passages, for indexer.parquet


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    doc_id: str  # the path relative to the corpus root it was found under

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() == PARQUET_SUFFIX


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


def read_text_file(path: Path, doc_id: str, source: str) -> Document:
    text = _decode(path)
    return Document(id=doc_id, text=text, title=_title_from_text(text, path.stem), source=source)


def _decode_html(path: Path) -> str:
    """UTF-8, or the character set the page declares (``<meta charset>``), as a browser reads it."""
    from bs4 import UnicodeDammit

    try:
        return _decode(path)
    except ReadError:
        raw = path.read_bytes()
        declared = UnicodeDammit(raw, is_html=True).declared_html_encoding
        if declared is None:
            raise
        try:
            return raw.decode(declared)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ReadError(f"not readable in the character set it declares, {declared} ({exc})") from exc


def read_html_file(path: Path, doc_id: str, source: str) -> Document:
    """Visible text only: scripts, styles, templates and the head are dropped; blocks become lines."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode_html(path), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for hidden in soup(["script", "style", "noscript", "template", "head"]):
        hidden.decompose()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return Document(id=doc_id, text=text, title=title or _title_from_text(text, path.stem), source=source)


def read_pdf_file(path: Path, doc_id: str, source: str, skipped: list[Skipped]) -> Document:
    """Text of every page, pages separated by a blank line; ``metadata["pages"]`` maps offsets to pages.
    A page whose text cannot be read is reported (``file page N``) and left out; the others are kept."""
    from pypdf import PdfReader

    # pypdf raises many types on broken files; each means "cannot read this one"
    try:
        reader = PdfReader(path)
        pages_of = list(reader.pages)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:
        raise ReadError(f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
    page_texts: list[str] = []
    unreadable: list[Skipped] = []
    for number, page in enumerate(pages_of, start=1):
        try:
            page_texts.append(page.extract_text() or "")
        except Exception as exc:  # noqa: BLE001
            page_texts.append("")
            unreadable.append(
                Skipped(f"{source} page {number}", f"text not readable ({type(exc).__name__}: {exc})")
            )
    if unreadable and len(unreadable) == len(pages_of):
        raise ReadError(f"not a readable PDF (no page's text could be read: {unreadable[0].reason})")
    skipped.extend(unreadable)
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
    return Document(id=doc_id, text=text, title=title, source=source, pages=pages)


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


def read_jsonl_file(path: Path, source: str, skipped: list[Skipped]) -> Iterator[Document]:
    """Documents of a JSONL file; a bad line is reported (file:line) and skipped, the rest still read."""
    with path.open("rb") as handle:
        if handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):  # read line by line, each line of it would fail
            raise ReadError("UTF-16 text (a byte order mark says so): save it as UTF-8")
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            line_source = f"{source}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                if not line.strip():
                    continue
                doc = parse_jsonl_record(json.loads(line))
            except UnicodeDecodeError as exc:
                skipped.append(Skipped(line_source, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
            except json.JSONDecodeError as exc:
                skipped.append(Skipped(line_source, f"invalid JSON ({exc.msg})"))
            except RecursionError:
                skipped.append(Skipped(line_source, "its JSON nests too deeply to read"))
            except ReadError as exc:
                skipped.append(Skipped(line_source, str(exc)))
            except ValueError:  # Python's bound on integer digits
                skipped.append(Skipped(line_source, "a number has more than 4,300 digits"))
            else:
                yield Document(
                    id=doc.id, text=doc.text, title=doc.title, metadata=doc.metadata, source=line_source
                )


def _files_under(root: Path, skipped: list[Skipped]) -> Iterator[Path]:
    """The regular files under ``root`` (links followed), hidden ones aside; what cannot be read is
    reported in ``skipped``: a folder it may not list, a broken link, a pipe or a device."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file():
            yield path
        elif path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                skipped.append(Skipped(str(path), "cannot read the folder (permission denied)"))
        else:
            skipped.append(Skipped(str(path), "not a regular file (a broken link, a pipe or a device)"))


def _documents_of(path: Path, doc_id: str, source: str, skipped: list[Skipped]) -> Iterable[Document]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl_file(path, source, skipped)
    if suffix in TEXT_SUFFIXES:
        return [read_text_file(path, doc_id, source)]
    if suffix in HTML_SUFFIXES:
        return [read_html_file(path, doc_id, source)]
    if suffix == ".pdf":
        return [read_pdf_file(path, doc_id, source, skipped)]
    raise ReadError(
        f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
    )


def read_file(path: Path, doc_id: str, source: str | None = None) -> tuple[list[Document], list[Skipped]]:
    """The documents of one (non-Parquet) file and what of it was skipped, with the reason. Messages and
    ``Document.source`` name ``source`` (default: ``path`` as given), so a copy of this read on another
    machine, given an absolute path, reports what a local build would."""
    source = str(path) if source is None else source
    skipped: list[Skipped] = []
    try:
        documents = list(_documents_of(path, doc_id, source, skipped))
    except OSError as exc:  # the message without the path, which is in ``source`` already
        skipped.append(Skipped(source, f"cannot read ({exc.strerror or type(exc).__name__})"))
        log.warning("skipped %s: %s", source, skipped[-1].reason)
        return [], skipped
    except ReadError as exc:
        skipped.append(Skipped(source, str(exc)))
        log.warning("skipped %s: %s", source, exc)
        return [], skipped
    return documents, skipped


def corpus_files(paths: Sequence[Path], skipped: list[Skipped] | None = None) -> list[CorpusFile]:
    """Every file under ``paths``, in reading order, with its document id (the path relative to the folder
    given, or the file's name when a file is given); what cannot be read is added to ``skipped``. Raises
    ``CorpusError`` on a missing path."""
    files: list[CorpusFile] = []
    unlisted: list[Skipped] = [] if skipped is None else skipped
    for root in paths:
        if not root.exists():
            raise CorpusError(f"corpus path {root} does not exist")
        base = root.parent if root.is_file() else root
        files.extend(
            CorpusFile(path, path.relative_to(base).as_posix()) for path in _files_under(root, unlisted)
        )
    return files


class CorpusCollector:
    """The corpus-wide rules, applied file by file in reading order: empty documents, and documents the
    documents API would refuse (``document_problem``: an id too long, text that is not Unicode, metadata
    that is not JSON), are skipped; a second document with an id already seen is a ``CorpusError`` naming
    both sources."""

    def __init__(self) -> None:
        self.result = CorpusReadResult()
        self._seen: dict[str, str] = {}

    def add(self, documents: Iterable[Document], skipped: Iterable[Skipped]) -> None:
        self.result.skipped.extend(skipped)
        for doc in documents:
            if not doc.text.strip():
                self.result.skipped.append(Skipped(doc.source, "empty document"))
                continue
            problem = document_problem(doc)
            if problem is not None:
                self.result.skipped.append(Skipped(doc.source, problem))
                continue
            if doc.id in self._seen:
                raise CorpusError(
                    f"duplicate document id {doc.id!r}: in {self._seen[doc.id]} and in {doc.source}"
                )
            self._seen[doc.id] = doc.source
            self.result.documents.append(doc)


def nothing_to_index(paths: Sequence[Path], skipped: Sequence[Skipped], shown: int = 5) -> CorpusError:
    """The error of a build that found no document to index, with why the first ``shown`` were skipped
    (the build stops before its report, which would list them)."""
    reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    found = f" ({len(skipped)} skipped: {reasons}{more})" if skipped else " (no files found)"
    return CorpusError(f"no indexable documents under {', '.join(map(str, paths))}{found}")


def read_corpus(paths: Sequence[Path]) -> CorpusReadResult:
    """Read every document under ``paths``. Raises ``CorpusError`` on a missing path or a duplicate id."""
    collector = CorpusCollector()
    for file in corpus_files(paths, collector.result.skipped):
        if file.is_parquet:
            collector.result.embedded.append(file.path)
        else:
            collector.add(*read_file(file.path, file.doc_id))
    return collector.result
