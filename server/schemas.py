"""Request and response shapes of the HTTP API (validated by APIFlask, published in /openapi.json)."""

from __future__ import annotations

from typing import Any

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp
from marshmallow import RAISE, ValidationError

from indexer.documents import MAX_ID_CHARS, not_storable, not_unicode
from semqa.settings import MAX_FILTER_DOCUMENTS, MODES, Settings
from server.text_input import VISIBLE_PATTERN


class StrictBoolean(Boolean):
    """JSON true or false only (marshmallow's Boolean also takes 1, "yes", "true")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class JsonInteger(Integer):
    """A JSON number with no fraction (JSON, and JSON Schema, do not tell 5 from 5.0); not a string that
    looks like one, not a boolean."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        if isinstance(value, float):
            if not value.is_integer():
                raise self.make_error("invalid")
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


class QueryInteger(Integer):
    """A query parameter of ASCII digits: Python's ``int`` also reads "5_0", " 5", "+5" and other scripts'
    digits ("١٢"), which no client means as a number."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictFloat(Float):
    """A JSON number, not a string that looks like one (marshmallow's Float accepts "0.5")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Text(String):
    """A JSON string that is Unicode text: every model, tokeniser and index downstream needs it to be."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = not_unicode(text)
        if problem is not None:
            raise ValidationError(f"must be Unicode text: it {problem}")
        return text


NOT_BLANK = Regexp(VISIBLE_PATTERN, error="must not be empty or only white space")


class Metadata(Dict):
    """A JSON object stored and served back as it came: no NaN or Infinity (Python's JSON reads them, and
    1e400 as Infinity, but they are not JSON and break strict clients when served back), nesting at most
    ``METADATA_DEPTH`` deep (deeper would fail when stored), Unicode text only."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        metadata = super()._deserialize(value, attr, data, **kwargs)
        problem = not_storable(metadata)
        if problem is not None:
            raise ValidationError(problem)
        return metadata


def ask_schema(settings: Settings) -> type[Schema]:
    """The ``POST /ask`` body, with the limits of ``settings``; unknown fields are rejected."""

    class AskIn(Schema):
        class Meta:
            unknown = RAISE

        question = Text(
            required=True,
            validate=[Length(max=settings.max_question_chars), NOT_BLANK],
            metadata={"description": f"The question, at most {settings.max_question_chars} characters."},
        )
        top_k = JsonInteger(
            load_default=5,
            strict=True,
            validate=Range(1, settings.max_top_k),
            metadata={"description": f"How many passages to return, 1 to {settings.max_top_k}."},
        )
        mode = String(
            load_default="hybrid",
            validate=OneOf(MODES),
            metadata={"description": "hybrid (BM25 and dense, fused; default), dense, or lexical (BM25)."},
        )
        documents = List(
            Text(validate=Length(min=1, max=1024)),
            load_default=None,
            validate=Length(min=1, max=MAX_FILTER_DOCUMENTS),
            metadata={"description": "Search only these document ids (unknown ids match nothing)."},
        )
        group_by_document = StrictBoolean(
            load_default=False, metadata={"description": "At most one passage per document."}
        )
        min_score = StrictFloat(
            load_default=None,
            allow_nan=False,
            metadata={"description": "Drop passages whose score (in the mode's scale) is below this."},
        )

    return AskIn


class HighlightOut(Schema):
    text = String()
    start = Integer(metadata={"description": "Offset of the highlight in the passage text."})
    end = Integer()


class PassageOut(Schema):
    text = String()
    score = Float(
        metadata={"description": "dense: cosine; lexical: BM25; hybrid: fused z-scores (relative)."}
    )
    scores = Dict(
        metadata={"description": "The dense (cosine; null in lexical mode) and lexical (BM25) scores."}
    )
    document_id = String()
    title = String()
    chunk_id = String(
        metadata={"description": "Stable 64-bit id, as a string (JSON numbers lose precision)."}
    )
    start = Integer(metadata={"description": "Offset of the passage in the document text."})
    end = Integer()
    highlight = Nested(HighlightOut, metadata={"description": "The span of the passage that best answers."})
    metadata = Dict(metadata={"description": "Passage metadata, e.g. the PDF page it starts on."})


class AnswerOut(Schema):
    text = String(metadata={"description": "The best highlight of the top passage."})
    document_id = String()
    title = String()
    chunk_id = String()
    start = Integer(metadata={"description": "Offset of the answer in the document text."})
    end = Integer()


class AskOut(Schema):
    question = String()
    mode = String()
    answer = Nested(AnswerOut, allow_none=True, metadata={"description": "null when no passage matched."})
    passages = List(Nested(PassageOut))
    took_ms = Float()


class ReadyOut(Schema):
    status = String(metadata={"description": "Always `ready`."})
    index_version = String(metadata={"description": "The version this worker serves."})
    reload_error = String(
        allow_none=True, metadata={"description": "Why the newer version on disk was not loaded, if so."}
    )


class HealthOut(Schema):
    status = String()
    model = String()
    documents = Integer()
    chunks = Integer()
    index_version = String()


def upsert_schema(settings: Settings) -> type[Schema]:
    """The ``POST /documents`` body: documents shaped like a JSONL corpus line, within the limits."""

    class DocumentIn(Schema):
        class Meta:
            unknown = RAISE

        id = Text(required=True, validate=[Length(min=1, max=MAX_ID_CHARS), NOT_BLANK])
        title = Text(load_default="", validate=Length(max=1000))
        text = Text(required=True, validate=[Length(max=settings.max_document_chars), NOT_BLANK])
        metadata = Metadata(load_default=dict)

    class UpsertIn(Schema):
        class Meta:
            unknown = RAISE

        documents = List(
            Nested(DocumentIn),
            required=True,
            validate=Length(min=1, max=settings.max_upsert_documents),
            metadata={
                "description": f"1 to {settings.max_upsert_documents} documents; an existing id is replaced."
            },
        )

    return UpsertIn


class PageQuery(Schema):
    # (webargs sets ``unknown`` per location, EXCLUDE for the query string: GET /documents passes RAISE)
    offset = QueryInteger(load_default=0, validate=Range(min=0, max=10**9))
    limit = QueryInteger(load_default=50, validate=Range(1, 1000))


class UpsertOut(Schema):
    upserted = List(String())
    embedded = Integer(metadata={"description": "Passages whose vectors had to be computed."})
    index_version = String()


class DeleteOut(Schema):
    deleted = String()
    index_version = String()


class DocumentSummary(Schema):
    id = String()
    title = String()
    chunks = Integer()


class DocumentList(Schema):
    total = Integer()
    offset = Integer()
    limit = Integer()
    documents = List(Nested(DocumentSummary))


class DocumentOut(Schema):
    id = String()
    title = String()
    text = String()
    metadata = Dict()
    chunks = Integer()
