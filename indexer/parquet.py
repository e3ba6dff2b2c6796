"""The Parquet passage format: passages embedded elsewhere (a GPU job, the Ray build) indexed as they are.

One row per passage; rows with the same ``document_id`` are the passages of one document, in file order.

Required columns:

- ``document_id`` (string), ``text`` (string): the passage and the document it belongs to.
- ``vector`` (list<float32>, the model's dimension): the passage's embedding (other float widths are cast).

Optional columns:

- ``title`` (string): the document's title (the document's first row wins).
- ``start``, ``end`` (int64, both or neither): the passage's offsets in the document text. Without them the
  document's text is its passages joined by a blank line (``"\\n\\n"``) in file order, and the offsets follow
  from that. With them but without ``document_text``, the text is rebuilt from the passages at their offsets
  (gaps become spaces; passages that overlap must agree on the characters they share).
- ``metadata`` (string): the document's metadata, a JSON object (the document's first row wins).

semqa's own extension columns, written by the Ray build (``indexer.ray_build``) so that an index built from
its shards equals a normal build exactly:

- ``document_text`` (string): the document's full text, on at least its first row (read there only). Needs
  ``start``/``end``, and ``document_text[start:end] == text`` must hold on every row of the document.
- ``document_source`` (string): where the document was read from (``corpus/a.jsonl:12``), as a normal build
  records it; default ``<file> row <first row>``.
- ``passage_metadata`` (string): the passage's own metadata, a JSON object (a PDF page: ``{"page": 3}``).
- ``span_starts``, ``span_ends`` (list<int32>) and ``span_vectors`` (list<list<float32>>), all three or none:
  the passage's quotable sentences (offsets in the passage text) and their late-chunked vectors, which the
  highlighter compares the question with. Without them highlights use lexical evidence only.

File-level key/value metadata may record provenance: ``semqa.model_name``, ``semqa.model_sha256``,
``semqa.dimension``, ``semqa.backend``, ``semqa.chunking`` (JSON), and for int8 vectors ``semqa.int8_format``
(the int8 export's recipe, ``embeddings.onnx_export.vectors_recipe``). A file whose provenance names other
weights or another dimension than the configured model is refused, and so is one whose vectors another
encoder backend family made (``embeddings.backends.compatible``: an int8 file in a float32 index, or the
reverse), or, in an int8 build, another int8 recipe than this semqa's or none recorded (files written before
semqa recorded it): the recipes' vectors differ a little, and an index records one recipe for all of its.
Without provenance the vectors are taken as made by the configured model with sentence-transformers (backend
``torch``, as ``SentenceTransformer.encode`` makes them): nothing can check that, so only index files
embedded with it.

Everything else that is wrong (a missing required column, a wrong type, null or empty ids or texts, a vector
of another dimension, with a NaN or infinity, or not of unit length, metadata that is not a JSON object or
holds what JSON cannot (NaN, 1e400), a document the documents API would refuse (an id over 512 characters,
text that is not Unicode), offsets or spans that do not fit the text) refuses the file with a
``CorpusError`` naming it and the row (rows count from 0, as in pyarrow and pandas). Files are read in
record batches and vectors go straight into numpy.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embeddings.backends import compatible, compatible_setting
from embeddings.onnx_export import vectors_recipe
from indexer.chunking import chunk_id
from indexer.documents import Chunk, Document, document_problem, not_storable
from indexer.readers import CorpusError, corpus_files

REQUIRED = ("document_id", "text", "vector")
OPTIONAL = ("title", "start", "end", "metadata")
# how far a vector's length may be from 1 (float16-stored span vectors are off by up to about 1e-3)
UNIT_TOLERANCE = 1e-2
EXTENSIONS = (
    "document_text",
    "document_source",
    "passage_metadata",
    "span_starts",
    "span_ends",
    "span_vectors",
)
SPAN_COLUMNS = ("span_starts", "span_ends", "span_vectors")
JOIN = "\n\n"  # between passages, when the document text is rebuilt from passages without offsets
BATCH_ROWS = 65_536  # rows per record batch read, and per row group written
PROVENANCE_PREFIX = "semqa."
INT8_FORMAT_KEY = "semqa.int8_format"
UNRECORDED_BACKEND = "torch"  # the vectors of a file that names no backend: sentence-transformers' own

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Provenance:
    """What made the vectors, recorded in the file's key/value metadata."""

    model_name: str
    model_sha256: str
    dimension: int
    backend: str = "torch"
    chunking: Mapping[str, Any] = field(default_factory=dict)
    int8_format: int | None = None  # the int8 export's recipe (``vectors_recipe``); None for float32

    def as_metadata(self) -> dict[str, str]:
        recipe = {} if self.int8_format is None else {INT8_FORMAT_KEY: str(self.int8_format)}
        return {
            "semqa.model_name": self.model_name,
            "semqa.model_sha256": self.model_sha256,
            "semqa.dimension": str(self.dimension),
            "semqa.backend": self.backend,
            "semqa.chunking": json.dumps(dict(self.chunking), sort_keys=True),
            **recipe,
        }


@dataclass
class EmbeddedPassages:
    """Documents with their passages, passage vectors and sentence spans, as a build indexes them."""

    documents: list[Document] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    spans: list[Spans] = field(default_factory=list)
    span_vectors: list[np.ndarray] = field(default_factory=list)


def file_backend(path: Path) -> str:
    """The encoder backend that made the vectors of the Parquet file ``path``, as its provenance says."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from exc
    return metadata.get(b"semqa.backend", UNRECORDED_BACKEND.encode()).decode(errors="replace")


def embedded_backend(paths: Sequence[Path]) -> str | None:
    """The backend setting a new index of ``paths`` needs for the Parquet files under them (the fastest one
    whose vectors mix with theirs), None when there is none; files of two vector families are refused."""
    parquet = [f.path for f in corpus_files(paths) if f.is_parquet]
    if not parquet:
        return None
    first, made_by = parquet[0], file_backend(parquet[0])
    for path in parquet[1:]:
        if not compatible(other := file_backend(path), made_by):
            raise CorpusError(
                f"{first} holds vectors of encoder backend {made_by} and {path} of {other}, which differ: "
                "one index takes one of them; index them apart"
            )
    return compatible_setting(made_by)


def read_passages(
    paths: Sequence[Path],
    *,
    model_sha256: str,
    dimension: int,
    backend: str,
    taken: Mapping[str, str] | None = None,
) -> EmbeddedPassages:
    """The passages of every Parquet file in ``paths``, checked against the configured model's weights
    (``model_sha256``), ``dimension`` and the build's encoder ``backend``. ``taken`` maps document ids
    already in the build to their source: a document id seen twice (there, or in two files) is refused
    naming both sources."""
    seen = dict(taken or {})
    documents: list[Document] = []
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    spans: list[Spans] = []
    span_vectors: list[np.ndarray] = []
    for path in paths:
        with _no_gc():  # millions of small objects: the cyclic collector would rescan them all, often
            part = _FileReader(path, model_sha256, dimension, backend).read()
        for doc in part.documents:
            if doc.id in seen:
                raise CorpusError(f"duplicate document id {doc.id!r}: in {seen[doc.id]} and in {doc.source}")
            seen[doc.id] = doc.source
        documents += part.documents
        chunks += part.chunks
        vectors.append(part.vectors)
        spans += part.spans
        span_vectors += part.span_vectors
    if len(vectors) == 1:
        matrix = vectors[0]
    else:
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, dimension), np.float32)
    return EmbeddedPassages(documents, chunks, np.ascontiguousarray(matrix), spans, span_vectors)


@dataclass
class _Document:
    first_row: int
    title: str
    metadata: str | None
    text: str | None
    source: str | None
    rows: list[int] = field(default_factory=list)  # passages, in file order


class _FileReader:
    """One Parquet file, read batch by batch into per-passage columns, then assembled document by document.
    Passage ``i`` is file row ``i``."""

    def __init__(self, path: Path, model_sha256: str, dimension: int, backend: str) -> None:
        self.path = path
        self.model_sha256 = model_sha256
        self.dimension = dimension
        self.backend = backend
        self.documents: dict[str, _Document] = {}
        self.texts: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.passage_metadata: list[str | None] = []
        self.vectors = np.zeros((0, dimension), np.float32)  # every passage's, filled batch by batch
        self.spans: list[Spans] = []
        self.span_vectors: list[np.ndarray] = []

    def fail(self, row: int | None, message: str) -> CorpusError:
        where = f"{self.path}" if row is None else f"{self.path} row {row}"
        return CorpusError(f"{where}: {message}")

    def read(self) -> EmbeddedPassages:
        try:
            file = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise self.fail(None, f"not a readable Parquet file ({exc})") from exc
        schema = file.schema_arrow
        self.vectors = np.empty((file.metadata.num_rows, self.dimension), np.float32)
        self._check_provenance(schema.metadata or {})
        columns = self._check_columns(set(schema.names))
        row = 0
        try:
            for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                self._add_batch(batch, row)
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise self.fail(row, f"cannot be read ({exc})") from exc
        if not self.texts:
            raise self.fail(None, "has no rows")
        return self._assemble("start" in columns)

    def _check_provenance(self, metadata: Mapping[bytes, bytes]) -> None:
        meta = {
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in metadata.items()
            if k.startswith(PROVENANCE_PREFIX.encode())
        }
        name = meta.get("semqa.model_name", "?")
        made_by = meta.get("semqa.backend", UNRECORDED_BACKEND)
        if not compatible(made_by, self.backend):
            said = (
                "its provenance" if "semqa.backend" in meta else "none recorded: sentence-transformers' own"
            )
            raise self.fail(
                None,
                f"its vectors were made by encoder backend {made_by} ({said}) but this build encodes with "
                f"{self.backend}, and their vectors differ: index it into a fresh index directory with "
                f"--backend {compatible_setting(made_by)}, or with the default (auto), which follows the files",
            )
        wanted = vectors_recipe(self.backend)
        if wanted is not None and meta.get(INT8_FORMAT_KEY) != str(wanted):
            recorded = meta.get(INT8_FORMAT_KEY)
            made = (
                f"format {recorded}" if recorded else "a format it does not record (written before semqa did)"
            )
            raise self.fail(
                None,
                f"its int8 vectors were made by the int8 export of {made} and this semqa encodes with format "
                f"{wanted}: their vectors differ a little and an index holds one recipe's, so embed its "
                "passages again with this semqa (a Ray build makes its shards again by itself)",
            )
        sha = meta.get("semqa.model_sha256", "")
        if sha and self.model_sha256 and sha.lower() != self.model_sha256.lower():
            raise self.fail(
                None,
                f"its vectors were made by model {name} (weights {sha[:12]}) but the configured model has "
                f"weights {self.model_sha256[:12]}: index it with the model that embedded it (SEMQA_MODEL, "
                "SEMQA_MODEL_SHA256) or embed its passages again with this one",
            )
        if "semqa.dimension" in meta:
            try:
                dimension = int(meta["semqa.dimension"])
            except ValueError:
                raise self.fail(
                    None, f"semqa.dimension is {meta['semqa.dimension']!r}, not a number"
                ) from None
            if dimension != self.dimension:
                raise self.fail(
                    None,
                    f"its vectors have dimension {dimension} (model {name}), the configured model's is "
                    f"{self.dimension}",
                )

    def _check_columns(self, names: set[str]) -> list[str]:
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise self.fail(
                None,
                f"has no column {', '.join(missing)}; a passage file needs {', '.join(REQUIRED)} "
                "(see indexer/parquet.py or the README)",
            )
        if ("start" in names) != ("end" in names):
            raise self.fail(None, "has only one of the columns start and end: give both or neither")
        if "document_text" in names and "start" not in names:
            raise self.fail(None, "has document_text but no start/end: the passages' offsets are needed")
        present = [c for c in SPAN_COLUMNS if c in names]
        if present and len(present) != len(SPAN_COLUMNS):
            raise self.fail(None, f"has {', '.join(present)} but not all of {', '.join(SPAN_COLUMNS)}")
        return [c for c in (*REQUIRED, *OPTIONAL, *EXTENSIONS) if c in names]

    # --- one record batch -------------------------------------------------------------------------------

    def _string_column(self, batch: pa.RecordBatch, name: str) -> pa.Array:
        column = batch.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise self.fail(None, f"column {name} must be string, not {column.type}")
        return column

    def _strings(self, batch: pa.RecordBatch, name: str, row: int) -> list[str]:
        """A required string column: no nulls, nothing empty."""
        column = self._string_column(batch, name)
        if column.null_count:
            raise self.fail(row + _first(column.is_null()), f"{name} is null")
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
        if pc.any(blank).as_py():
            raise self.fail(row + _first(blank), f"{name} is empty")
        return column.to_pylist()

    def _integers(self, batch: pa.RecordBatch, name: str, row: int) -> np.ndarray:
        column = batch.column(name)
        if not pa.types.is_integer(column.type):
            raise self.fail(None, f"column {name} must be an integer type (int64), not {column.type}")
        if column.null_count:
            raise self.fail(row + _first(column.is_null()), f"{name} is null")
        return column.to_numpy().astype(np.int64)

    def _matrix(self, column: pa.Array, name: str, rows_of: np.ndarray) -> np.ndarray:
        """A list<float> column as an ``(n, dimension)`` float32 matrix; ``rows_of[i]`` is the file row of
        list ``i`` (for messages)."""
        kind = column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            raise self.fail(None, f"column {name} must be list<float32>, not {kind}")
        if not pa.types.is_floating(kind.value_type):
            raise self.fail(None, f"column {name} must be list<float32>, not {kind}")
        if column.null_count:
            raise self.fail(int(rows_of[_first(column.is_null())]), f"{name} is null")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != self.dimension)
        if wrong.size:
            i = int(wrong[0])
            raise self.fail(
                int(rows_of[i]),
                f"{name} has {lengths[i]} values, the configured model's dimension is {self.dimension}",
            )
        values = column.flatten().to_numpy(zero_copy_only=False)  # nulls inside become NaN
        matrix = values.astype(np.float32, copy=False).reshape(-1, self.dimension)
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if bad.size:
            raise self.fail(int(rows_of[int(bad[0])]), f"{name} holds a NaN, an infinity or a missing value")
        # The model's vectors are of unit length (cosine = inner product); others rank wrongly, and huge
        # ones overflow to NaN scores, which are not JSON.
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
        off = np.flatnonzero(np.abs(norms - 1.0) > UNIT_TOLERANCE)
        if off.size:
            i = int(off[0])
            raise self.fail(
                int(rows_of[i]),
                f"{name} has length {norms[i]:.6g}, not 1: write the model's normalised vectors "
                "(sentence-transformers: normalize_embeddings=True)",
            )
        return matrix

    def _add_batch(self, batch: pa.RecordBatch, row: int) -> None:
        n = batch.num_rows
        names = set(batch.schema.names)
        rows = np.arange(row, row + n)
        ids = self._strings(batch, "document_id", row)
        texts = self._strings(batch, "text", row)
        vectors = self._matrix(batch.column("vector"), "vector", rows)
        # Per-document columns are read on a document's first row only: a writer may repeat a long
        # document_text on every row, which must not become a Python string per row.
        per_document = [
            self._string_column(batch, c) if c in names else None
            for c in ("title", "metadata", "document_text", "document_source")
        ]
        any_per_document, absent = any(c is not None for c in per_document), [None] * len(per_document)
        passage_metadata = (
            self._string_column(batch, "passage_metadata").to_pylist()
            if "passage_metadata" in names
            else [None] * n
        )
        if "start" in names:
            starts, ends = self._integers(batch, "start", row), self._integers(batch, "end", row)
            lengths = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero((starts < 0) | (ends - starts != lengths))
            if bad.size:
                i = int(bad[0])
                raise self.fail(
                    row + i,
                    f"start {starts[i]} and end {ends[i]} do not fit the passage text "
                    f"({lengths[i]} characters): end - start must be its length",
                )
            self.starts += starts.tolist()
            self.ends += ends.tolist()
        if "span_starts" in names:
            self._add_spans(batch, row)
        else:
            empty = np.zeros((0, self.dimension), np.float32)
            self.spans += [[] for _ in range(n)]
            self.span_vectors += [empty] * n
        for i in range(n):
            doc = self.documents.get(ids[i])
            if doc is None:
                title, metadata, text, source = (
                    [None if c is None else c[i].as_py() for c in per_document]
                    if any_per_document
                    else absent
                )
                doc = self.documents[ids[i]] = _Document(row + i, title or "", metadata, text, source)
            doc.rows.append(len(self.texts) + i)
        self.texts += texts
        self.passage_metadata += passage_metadata
        self.vectors[row : row + n] = vectors

    def _add_spans(self, batch: pa.RecordBatch, row: int) -> None:
        counts = []
        flat = []
        for name in ("span_starts", "span_ends"):
            column = batch.column(name)
            if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or not (
                pa.types.is_integer(column.type.value_type)
            ):
                raise self.fail(None, f"column {name} must be list<int32>, not {column.type}")
            counts.append(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False))
            values = column.flatten()
            if values.null_count:
                raise self.fail(None, f"{name} holds a null offset")
            flat.append(values.to_numpy().astype(np.int64))
        outer = batch.column("span_vectors")
        if not (pa.types.is_list(outer.type) or pa.types.is_large_list(outer.type)):
            raise self.fail(None, f"column span_vectors must be list<list<float32>>, not {outer.type}")
        counts.append(pc.fill_null(pc.list_value_length(outer), 0).to_numpy(zero_copy_only=False))
        mismatch = np.flatnonzero((counts[0] != counts[1]) | (counts[0] != counts[2]))
        if mismatch.size:
            raise self.fail(
                row + int(mismatch[0]), "span_starts, span_ends and span_vectors have different lengths"
            )
        span_row = np.repeat(np.arange(row, row + batch.num_rows), counts[0])
        vectors = self._matrix(outer.flatten(), "span_vectors", span_row)
        starts, ends = flat
        lengths = np.repeat(pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False), counts[0])
        bad = np.flatnonzero((starts < 0) | (ends <= starts) | (ends > lengths))
        if bad.size:
            i = int(bad[0])
            raise self.fail(
                int(span_row[i]),
                f"span ({starts[i]}, {ends[i]}) does not fit the passage text ({lengths[i]} characters)",
            )
        bounds = np.concatenate([[0], np.cumsum(counts[0])])
        pairs = list(zip(starts.tolist(), ends.tolist(), strict=True))
        for i in range(batch.num_rows):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            self.spans.append(pairs[lo:hi])
            self.span_vectors.append(vectors[lo:hi])

    # --- documents ----------------------------------------------------------------------------------------

    def _json_object(self, value: str | None, row: int, name: str) -> dict[str, Any]:
        if value is None:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise self.fail(row, f"{name} is not valid JSON ({exc.msg} at character {exc.pos})") from None
        except RecursionError:
            raise self.fail(row, f"{name} nests too deeply to read") from None
        except ValueError:  # Python's bound on integer digits
            raise self.fail(row, f"{name} holds a number of more than 4,300 digits") from None
        if not isinstance(parsed, dict):
            raise self.fail(row, f"{name} must be a JSON object, not {type(parsed).__name__}")
        problem = not_storable(parsed)
        if problem is not None:
            raise self.fail(row, f"{name} {problem}")
        return parsed

    def _offsets(self, doc_id: str, doc: _Document, with_offsets: bool) -> tuple[str, list[tuple[int, int]]]:
        """The document's text and each of its passages' ``(start, end)``, in file order."""
        rows = doc.rows
        if not with_offsets:
            texts = [self.texts[i] for i in rows]
            bounds, cursor = [], 0
            for text in texts:
                bounds.append((cursor, cursor + len(text)))
                cursor += len(text) + len(JOIN)
            return JOIN.join(texts), bounds
        bounds = [(self.starts[i], self.ends[i]) for i in rows]
        if doc.text is not None:
            text = doc.text
            for i, (start, end) in zip(rows, bounds, strict=True):
                if text[start:end] != self.texts[i]:
                    raise self.fail(
                        i,
                        f"document_text[{start}:{end}] of document {doc_id!r} is not the passage text",
                    )
            return text, bounds
        text = ""
        for i in sorted(rows, key=lambda r: (self.starts[r], self.ends[r])):
            start, end, passage = self.starts[i], self.ends[i], self.texts[i]
            if start >= len(text):
                text += " " * (start - len(text)) + passage
            elif text[start:end] != passage[: len(text) - start]:
                raise self.fail(
                    i, f"passage overlaps an earlier passage of document {doc_id!r} with other text"
                )
            elif end > len(text):
                text += passage[len(text) - start :]
        return text, bounds

    def _repeated(self, doc_id: str, rows: list[int], bounds: list[tuple[int, int]]) -> CorpusError:
        first: dict[tuple[int, int], int] = {}
        for i, span in zip(rows, bounds, strict=True):
            if span in first:
                return self.fail(i, f"same passage {span} of document {doc_id!r} as row {first[span]}")
            first[span] = i
        raise AssertionError("no repeated passage")

    def _assemble(self, with_offsets: bool) -> EmbeddedPassages:
        out = EmbeddedPassages()
        order: list[int] = []
        for doc_id, doc in self.documents.items():
            text, bounds = self._offsets(doc_id, doc, with_offsets)
            source = doc.source or f"{self.path} row {doc.first_row}"
            metadata = self._json_object(doc.metadata, doc.first_row, "metadata")
            document = Document(id=doc_id, text=text, title=doc.title, metadata=metadata, source=source)
            problem = document_problem(document)
            if problem is not None:
                raise self.fail(doc.first_row, f"document {doc_id[:80]!r}: {problem}")
            out.documents.append(document)
            if len(set(bounds)) != len(bounds):
                raise self._repeated(doc_id, doc.rows, bounds)
            title, texts, metadata_of = doc.title, self.texts, self.passage_metadata
            for i, (start, end) in zip(doc.rows, bounds, strict=True):
                passage_metadata = metadata_of[i]
                out.chunks.append(
                    Chunk(
                        chunk_id(doc_id, start, end),
                        doc_id,
                        title,
                        start,
                        end,
                        texts[i],
                        {}
                        if passage_metadata is None
                        else self._json_object(passage_metadata, i, "passage_metadata"),
                    )
                )
            order += doc.rows
        in_order = order == list(range(len(order)))
        out.vectors = self.vectors if in_order else self.vectors[order]
        out.spans = [self.spans[i] for i in order]
        out.span_vectors = [self.span_vectors[i] for i in order]
        return out


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _first(mask: pa.Array) -> int:
    """The index of the first true value of a boolean array."""
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _list_array(values: np.ndarray, counts: Sequence[int], value_type: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def write_passages(
    target: Path | IO[bytes] | pa.NativeFile,
    documents: Sequence[Document],
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    spans: Sequence[Sequence[tuple[int, int]]],
    span_vectors: Sequence[np.ndarray],
    provenance: Provenance,
) -> None:
    """Write passages with every extension column, so that reading them back gives these exact documents,
    chunks, offsets, vectors and spans. Chunks must come grouped by document, in the documents' order."""
    by_id = {d.id: d for d in documents}
    dimension = provenance.dimension
    schema = pa.schema(
        [
            ("document_id", pa.string()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32())),
            ("title", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("metadata", pa.string()),
            ("document_text", pa.string()),
            ("document_source", pa.string()),
            ("passage_metadata", pa.string()),
            ("span_starts", pa.list_(pa.int32())),
            ("span_ends", pa.list_(pa.int32())),
            ("span_vectors", pa.list_(pa.list_(pa.float32()))),
        ],
        metadata=provenance.as_metadata(),
    )
    with pq.ParquetWriter(target, schema) as writer:
        previous = None
        for lo in range(0, len(chunks), BATCH_ROWS):
            part = chunks[lo : lo + BATCH_ROWS]
            part_spans = spans[lo : lo + BATCH_ROWS]
            first: list[Document | None] = []
            for chunk in part:
                first.append(by_id[chunk.document_id] if chunk.document_id != previous else None)
                previous = chunk.document_id
            span_counts = [len(s) for s in part_spans]
            flat_spans = np.array([pair for s in part_spans for pair in s], dtype=np.int32).reshape(-1, 2)
            flat_span_vectors = (
                np.concatenate(span_vectors[lo : lo + BATCH_ROWS])
                if sum(span_counts)
                else np.zeros((0, dimension))
            )
            inner = _list_array(
                flat_span_vectors.reshape(-1), [dimension] * len(flat_span_vectors), pa.float32()
            )
            span_offsets = np.concatenate([[0], np.cumsum(span_counts, dtype=np.int64)]).astype(np.int32)
            columns = [
                pa.array([c.document_id for c in part], pa.string()),
                pa.array([c.text for c in part], pa.string()),
                _list_array(vectors[lo : lo + BATCH_ROWS].reshape(-1), [dimension] * len(part), pa.float32()),
                pa.array([c.title for c in part], pa.string()),
                pa.array([c.start for c in part], pa.int64()),
                pa.array([c.end for c in part], pa.int64()),
                pa.array([json.dumps(d.metadata) if d else None for d in first], pa.string()),
                pa.array([d.text if d else None for d in first], pa.string()),
                pa.array([d.source if d else None for d in first], pa.string()),
                pa.array([json.dumps(c.metadata) if c.metadata else None for c in part], pa.string()),
                _list_array(flat_spans[:, 0], span_counts, pa.int32()),
                _list_array(flat_spans[:, 1], span_counts, pa.int32()),
                pa.ListArray.from_arrays(pa.array(span_offsets, pa.int32()), inner),
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
