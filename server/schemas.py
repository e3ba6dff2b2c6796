"""Request and response shapes of the HTTP API (validated by APIFlask, published in /openapi.json)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Float, Integer, List, Nested, String
from apiflask.validators import Length, Range
from marshmallow import RAISE, ValidationError

from semqa.settings import Settings


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be empty or only white space")


def ask_schema(settings: Settings) -> type[Schema]:
    """The ``POST /ask`` body, with the limits of ``settings``; unknown fields are rejected."""

    class AskIn(Schema):
        class Meta:
            unknown = RAISE

        question = String(
            required=True,
            validate=[Length(max=settings.max_question_chars), _not_blank],
            metadata={"description": f"The question, at most {settings.max_question_chars} characters."},
        )
        top_k = Integer(
            load_default=5,
            strict=True,
            validate=Range(1, settings.max_top_k),
            metadata={"description": f"How many passages to return, 1 to {settings.max_top_k}."},
        )

    return AskIn


class PassageOut(Schema):
    text = String()
    score = Float()
    document_id = String()
    title = String()
    chunk_id = String(
        metadata={"description": "Stable 64-bit id, as a string (JSON numbers lose precision)."}
    )
    start = Integer(metadata={"description": "Offset of the passage in the document text."})
    end = Integer()


class AskOut(Schema):
    question = String()
    passages = List(Nested(PassageOut))
    took_ms = Float()


class HealthOut(Schema):
    status = String()
    model = String()
    documents = Integer()
    chunks = Integer()
    index_version = String()
