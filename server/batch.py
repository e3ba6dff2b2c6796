"""``POST /query``: several questions in one call, in the shape of the ChatGPT retrieval plugin.

Request ``{"queries": [{"query", "filter": {"document_id": id}?, "top_k"?}]}``; answer
``{"results": [{"query", "results": [{"id", "text", "metadata": {...}, "score"}]}]}``. The questions are
embedded in one batch; each runs hybrid retrieval with its own filter and ``top_k``.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Dict, Float, List, Nested, String
from apiflask.validators import Length, Range
from marshmallow import RAISE

from semqa.settings import Settings
from server.auth import Access
from server.json_body import read_json, require_json
from server.responses import passage_json
from server.retrieval import Searcher, SearchOptions
from server.schemas import NOT_BLANK, JsonInteger, Text


class FilterIn(Schema):
    class Meta:
        unknown = RAISE

    document_id = Text(validate=Length(min=1, max=1024), metadata={"description": "Only this document."})


def query_schema(settings: Settings) -> type[Schema]:
    class QueryIn(Schema):
        class Meta:
            unknown = RAISE

        query = Text(required=True, validate=[Length(max=settings.max_question_chars), NOT_BLANK])
        filter = Nested(FilterIn, load_default=None)
        top_k = JsonInteger(load_default=5, validate=Range(1, settings.max_top_k))

    class QueryRequest(Schema):
        class Meta:
            unknown = RAISE

        queries = List(Nested(QueryIn), required=True, validate=Length(min=1, max=settings.max_batch_queries))

    return QueryRequest


class ResultOut(Schema):
    id = String()
    text = String()
    metadata = Dict()
    score = Float()


class QueryResultOut(Schema):
    query = String()
    results = List(Nested(ResultOut))


class QueryResponse(Schema):
    results = List(Nested(QueryResultOut))


def create_batch_api(settings: Settings, searcher: Searcher, access: Access) -> APIBlueprint:
    api = APIBlueprint("batch", __name__)

    @api.before_request
    def _json_and_key() -> None:
        require_json()
        access.read("asking")
        read_json()

    @api.post("/query")
    @api.input(query_schema(settings), location="json", arg_name="body")
    @api.output(QueryResponse)
    @api.doc(summary="Several questions at once (ChatGPT retrieval plugin shape)")
    def query(body: dict[str, Any]) -> dict[str, Any]:
        requests_ = []
        for q in body["queries"]:
            document = (q["filter"] or {}).get("document_id")
            options = SearchOptions(documents=None if document is None else [document])
            requests_.append((q["query"], q["top_k"], options))
        results = searcher.search_queries(requests_)
        return {
            "results": [
                {"query": q["query"], "results": [_result(p) for p in passages]}
                for q, passages in zip(body["queries"], results, strict=True)
            ]
        }

    return api


def _result(passage: Any) -> dict[str, Any]:
    full = passage_json(passage)
    metadata = {k: full[k] for k in ("document_id", "title", "start", "end", "highlight", "scores")}
    return {
        "id": full["chunk_id"],
        "text": full["text"],
        "metadata": {**metadata, **full["metadata"]},
        "score": full["score"],
    }
