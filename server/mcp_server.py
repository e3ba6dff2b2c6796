"""semqa for assistants: an MCP server (official ``mcp`` SDK) with one tool, ``search_passages``, and one
resource, ``semqa://documents``, over stdio or streamable HTTP.

The tool runs the search of ``POST /ask`` (hybrid, through the same ``Searcher``, with the same hot
reload) and answers with the same field names. Over HTTP, a key (``Authorization: Bearer <key>``) is
needed exactly when reads need one on the HTTP API (``read_requires_key``): a key of either scope, read
or write, since everything MCP offers is a read; the key file is re-read when it changes, as on the
HTTP API. Over stdio no key is asked: the assistant that launched the process already runs with the
user's rights.

Nothing here imports Flask: ``semqa mcp`` loads no web app.
"""

# No ``from __future__ import annotations`` here: the SDK reads the tool's signature to build its input
# schema, and the limits in those annotations come from ``settings``, a local name that string
# annotations could not resolve.

import asyncio
import hashlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from indexer import check_index
from semqa import __version__
from semqa.settings import MAX_FILTER_DOCUMENTS, Settings
from server.admission import turns_for
from server.asgi_errors import ReadableErrors
from server.asgi_limits import RateLimit
from server.keys import KeyRing
from server.responses import answer_json, health_json, passage_json
from server.retrieval import Passage, Searcher, SearchOptions, load_searcher
from server.retrieval.reload import start_watcher
from server.text_input import blank

PASSAGE_TEXT_CHARS = 1000  # passage text in a tool result is cut here (chunks are ~600 characters)
DOCUMENT_LIST_LIMIT = 1000  # documents listed by the semqa://documents resource
# The SDK's AuthSettings requires an OAuth issuer; it is only published by OAuth metadata routes, which
# are not served here (no resource_server_url): the bearer tokens are semqa's own API keys.
KEY_ISSUER = "http://localhost"

INSTRUCTIONS = (
    "semqa searches a collection of indexed documents. Call search_passages for any question that the "
    "documents may answer, then quote the passages you use and cite their document_id."
)
TOOL_DESCRIPTION = (
    "Search the indexed documents for the passages that best answer a question (semantic and keyword "
    "search combined). Use it whenever the user asks about the content of the indexed documents (read "
    "the semqa://documents resource to see which they are); ask one natural-language question per call. "
    "Returns the best passages first, each with its highlight (the sentence that best answers), its "
    "document_id and title; `answer` is the top passage's highlight. Quote the highlight (or passage "
    "text) you rely on and cite its document_id; say so when no passage answers the question. Passage "
    f"text is cut at {PASSAGE_TEXT_CHARS} characters (`truncated` is then true); `start`/`end` are the "
    "passage's character offsets in its document. Scores rank passages within one call only."
)


class Span(BaseModel):
    text: str = Field(description=f"At most {PASSAGE_TEXT_CHARS} characters.")
    start: int = Field(description="Offset of the whole span in the passage, even when text is cut.")
    end: int


class FoundPassage(BaseModel):
    document_id: str
    title: str
    score: float = Field(
        description="Hybrid score: ranks the passages of one call, not comparable across calls."
    )
    chunk_id: str = Field(description="Stable id of the passage.")
    start: int = Field(description="Character offset of the passage in its document.")
    end: int = Field(description="End offset of the whole passage in its document, even when text is cut.")
    text: str = Field(description=f"The passage text, at most {PASSAGE_TEXT_CHARS} characters.")
    truncated: bool = Field(description="Whether text (or the highlight's text) was cut.")
    highlight: Span | None = Field(description="The sentence of the passage that best answers the question.")
    metadata: dict[str, Any] = Field(description="For PDFs, the page the passage starts on (and page_end).")


class Answer(BaseModel):
    text: str = Field(description=f"The top passage's highlight, at most {PASSAGE_TEXT_CHARS} characters.")
    document_id: str
    title: str
    chunk_id: str
    start: int = Field(description="Offset of the answer in its document.")
    end: int


class SearchResult(BaseModel):
    question: str
    answer: Answer | None = Field(description="null when no passage matched.")
    passages: list[FoundPassage] = Field(description="Best first.")


def found_passage(p: Passage, limit: int = PASSAGE_TEXT_CHARS) -> FoundPassage:
    """``p`` with the fields of a ``POST /ask`` passage (but ``scores``), its texts cut at ``limit``: a
    highlight is a sentence, but a sentence can be as long as a passage (a table, a run-on list)."""
    fields = passage_json(p)
    del fields["scores"]  # one score per passage is enough for an assistant
    text = fields.pop("text")
    highlight = fields.pop("highlight")
    truncated = len(text) > limit
    if highlight is not None:
        truncated |= len(highlight["text"]) > limit
        highlight = Span(**{**highlight, "text": highlight["text"][:limit]})
    return FoundPassage(**fields, text=text[:limit], highlight=highlight, truncated=truncated)


def search_result(question: str, passages: list[Passage], limit: int = PASSAGE_TEXT_CHARS) -> SearchResult:
    answer = None
    if passages:
        fields = answer_json(passages[0])
        answer = Answer(**{**fields, "text": fields["text"][:limit]})
    return SearchResult(
        question=question, answer=answer, passages=[found_passage(p, limit) for p in passages]
    )


class KeyVerifier:
    """The SDK's bearer-token hook, accepting semqa's API keys with their scopes (a write key holds the read
    scope too); the SDK then requires the read scope of every request."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def verify_token(self, token: str) -> AccessToken | None:
        scope = self.keys.scope_of(token)
        if scope is None:
            return None
        # One client per key (a digest, never the key): the SDK ties an HTTP session to its client.
        client_id = "key-" + hashlib.sha256(token.encode()).hexdigest()[:16]
        scopes = ["read", "write"] if scope == "write" else ["read"]
        return AccessToken(token=token, client_id=client_id, scopes=scopes)


def create_mcp_server(settings: Settings, searcher: Searcher, keys: KeyRing | None = None) -> MCPServer:
    """The MCP server over ``searcher``; on HTTP, every request needs one of ``keys`` unless it is None.

    Like ``create_app``, it polls the index directory for newer versions when ``reload_interval`` > 0.
    """
    watcher = start_watcher(settings, searcher.reader)

    def refresh() -> None:
        if watcher is not None:  # a write acknowledged by the HTTP API is searched by the next call
            watcher.before_request()

    auth: dict[str, Any] = {}
    if keys is not None:
        auth = {
            "token_verifier": KeyVerifier(keys),
            "auth": AuthSettings(issuer_url=KEY_ISSUER, resource_server_url=None, required_scopes=["read"]),
        }
    mcp = MCPServer("semqa", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING", **auth)
    # Searches run on as many threads as the HTTP app gives questions turns (server/admission.py: the
    # process's share of the cores), threads that live as long as the server; more wait their turn in the
    # pool's queue, in arrival order. The SDK would run a synchronous tool on anyio's worker threads, which
    # are dropped after 10 idle seconds, and a search on a new thread is slower (p50 of 30: +1.5 ms on a
    # quiet machine, +11 ms with both cores busy), so every question after a pause paid for it.
    searches = ThreadPoolExecutor(max_workers=turns_for(settings), thread_name_prefix="semqa-search")

    def search(question: str, top_k: int, documents: list[str] | None) -> SearchResult:
        refresh()
        return search_result(question, searcher.search(question, top_k, SearchOptions(documents=documents)))

    @mcp.tool(
        title="Search the indexed documents",
        description=TOOL_DESCRIPTION,
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    async def search_passages(
        question: Annotated[
            str,
            Field(
                min_length=1,
                max_length=settings.max_question_chars,
                description=f"The question, in natural language; at most {settings.max_question_chars} "
                "characters.",
            ),
        ],
        top_k: Annotated[
            int,
            Field(
                strict=True,  # a JSON integer, not true or 5.0
                ge=1,
                le=settings.max_top_k,
                description=f"Passages to return, 1 to {settings.max_top_k}.",
            ),
        ] = 5,
        documents: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=1024)]] | None,
            Field(
                min_length=1,
                max_length=MAX_FILTER_DOCUMENTS,
                description="Search only these document ids (see semqa://documents; unknown ids match "
                "nothing). Default: all documents.",
            ),
        ] = None,
    ) -> SearchResult:
        if blank(question):  # (pydantic refuses a lone surrogate already)
            raise ToolError("question must not be empty or only white space")
        return await asyncio.wrap_future(searches.submit(search, question, top_k, documents))

    @mcp.resource(
        "semqa://documents",
        name="documents",
        title="Indexed documents",
        description=f"The indexed documents by id (the first {DOCUMENT_LIST_LIMIT}), with their titles and "
        "chunk counts; `total` counts them all.",
        mime_type="application/json",
    )
    def documents() -> dict[str, Any]:
        refresh()
        store = searcher.view.store
        return {"total": store.document_count, "documents": store.list_documents(0, DOCUMENT_LIST_LIMIT)}

    @mcp.custom_route("/health", methods=["GET"])  # HTTP only, and open like the HTTP API's probes
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(health_json(searcher.view))

    return mcp


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what anything (Python or a C library) writes to stdout to stderr meanwhile: over stdio,
    stdout is the protocol channel. (While serving, the SDK's stdio transport does the same.)"""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def serve_mcp(settings: Settings, *, http: bool) -> None:
    """Load the model and index, then serve MCP over stdio (until the client hangs up) or over streamable
    HTTP on ``settings.host``/``settings.port``, path ``/mcp`` (until stopped)."""
    keys = None
    if http and settings.read_requires_key:
        keys = KeyRing.from_settings(settings)
        if not keys.configured("read"):
            raise ValueError(
                "read_requires_key is set but no API key is configured: set SEMQA_API_KEYS or "
                "SEMQA_READ_KEYS (comma-separated) or SEMQA_API_KEY_FILE"
            )
    check_index(settings.index_dir, verify=False)  # a missing index is reported before the model loads
    with nullcontext() if http else stdout_to_stderr():
        searcher = load_searcher(settings)
    mcp = create_mcp_server(settings, searcher, keys)
    where = f"streamable HTTP on http://{settings.host}:{settings.port}/mcp" if http else "stdio"
    print(f"semqa mcp: index version {searcher.view.name} over {where}", file=sys.stderr)
    if not http:
        mcp.run("stdio")
        return
    import uvicorn

    app = mcp.streamable_http_app(host=settings.host)
    if settings.rate_limit:
        app.add_middleware(RateLimit, limit=settings.rate_limit)
    # outermost: every error answer in JSON, sent once the request body is read
    app.add_middleware(
        ReadableErrors, max_bytes=settings.max_discard_bytes, seconds=settings.max_discard_seconds
    )
    # proxy_headers off: the rate limit keys on the socket's address, as under gunicorn, not on an
    # X-Forwarded-For any local client could set.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", proxy_headers=False)
