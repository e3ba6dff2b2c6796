"""`semqa mcp`: the search_passages tool and the documents resource, over stdio, streamable HTTP and in
process (the SDK's own clients throughout)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import httpx2
import pytest
import requests
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from semqa.launch import running_server
from server.asgi_errors import ReadableErrors
from server.mcp_server import PASSAGE_TEXT_CHARS, create_mcp_server, search_result

QUESTION = "In which city is the 2020 China Space Conference held?"
CONFERENCE = "000_de246961d5590b13.txt"
WHITE_PAPER = "004_7eff6b0a2d74b62d.txt"
KEY = "mcp-test-key"


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def mcp_server(corpus_settings, searcher):
    return create_mcp_server(corpus_settings, searcher)


def check_answer(result: Any) -> dict[str, Any]:
    """The structured result of ``QUESTION``, checked field by field."""
    assert not result.is_error
    found = result.structured_content
    assert found["question"] == QUESTION and "Fuzhou" in found["answer"]["text"]
    assert found["answer"]["document_id"] == CONFERENCE
    top = found["passages"][0]
    assert set(top) == {
        *("document_id", "title", "score", "chunk_id", "start", "end", "text", "truncated", "highlight"),
        "metadata",
    }
    assert top["document_id"] == CONFERENCE and top["title"] and top["chunk_id"].isdigit()
    assert top["highlight"]["text"] == found["answer"]["text"]
    highlight = top["highlight"]
    assert top["text"][highlight["start"] : highlight["end"]] == highlight["text"]
    for passage in found["passages"]:
        assert len(passage["text"]) <= PASSAGE_TEXT_CHARS
        assert passage["truncated"] == (passage["end"] - passage["start"] > PASSAGE_TEXT_CHARS)
    assert json.loads(result.content[0].text) == found  # the same result as text, for older clients
    return found


def error_text(result: Any) -> str:
    assert result.is_error and result.structured_content is None
    return result.content[0].text


@pytest.mark.anyio
async def test_stdio_lists_the_tool_answers_and_refuses_bad_input(corpus_build, corpus_settings):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "semqa.cli", "mcp", "--index-dir", str(corpus_settings.index_dir)],
        env={"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)},
    )
    stray: list[Exception] = []  # anything on stdout that is not a protocol message

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            stray.append(message)

    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=on_message) as s,
    ):
        await s.initialize()
        tools = (await s.list_tools()).tools
        assert [t.name for t in tools] == ["search_passages"]
        tool = tools[0]
        assert "cite" in tool.description and str(PASSAGE_TEXT_CHARS) in tool.description
        schema = tool.input_schema
        assert schema["required"] == ["question"]
        assert set(schema["properties"]) == {"question", "top_k", "documents"}
        assert schema["properties"]["top_k"]["maximum"] == corpus_settings.max_top_k
        assert set(tool.output_schema["properties"]) == {"question", "answer", "passages"}
        assert tool.annotations.read_only_hint

        found = check_answer(await s.call_tool("search_passages", {"question": QUESTION, "top_k": 3}))
        assert len(found["passages"]) == 3
        assert "top_k" in error_text(await s.call_tool("search_passages", {"question": QUESTION, "top_k": 0}))
        assert "white space" in error_text(await s.call_tool("search_passages", {"question": "  \n"}))

        listing = json.loads((await s.read_resource("semqa://documents")).contents[0].text)
        assert listing["total"] == len(listing["documents"]) >= 5
        first = listing["documents"][0]
        assert first == {"id": CONFERENCE, "title": found["answer"]["title"], "chunks": first["chunks"]}
    assert not stray


@pytest.mark.anyio
async def test_documents_filter_restricts_the_passages(mcp_server):
    async with Client(mcp_server) as client:
        arguments = {"question": QUESTION, "top_k": 4, "documents": [WHITE_PAPER]}
        found = (await client.call_tool("search_passages", arguments)).structured_content
        assert len(found["passages"]) == 4 and {p["document_id"] for p in found["passages"]} == {WHITE_PAPER}
        assert found["answer"]["document_id"] == WHITE_PAPER
        nothing = await client.call_tool(
            "search_passages", {"question": QUESTION, "documents": ["no-such-doc"]}
        )
        assert nothing.structured_content == {"question": QUESTION, "answer": None, "passages": []}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"question": ""}, "question"),
        ({"question": " \t "}, "white space"),
        ({"question": "x" * 1001}, "question"),
        ({}, "question"),
        ({"question": "rockets", "top_k": 0}, "top_k"),
        ({"question": "rockets", "top_k": 51}, "top_k"),
        ({"question": "rockets", "top_k": "many"}, "top_k"),
        ({"question": "rockets", "top_k": True}, "top_k"),
        ({"question": "rockets", "top_k": 5.0}, "top_k"),
        ({"question": "rockets", "documents": []}, "documents"),
        ({"question": "rockets", "documents": [""]}, "documents"),
        ({"question": "\u00a0\u200b"}, "white space"),  # blank to a reader: no-break and zero-width spaces
        ({"question": "rockets\ud800"}, "string_unicode"),  # a lone surrogate: pydantic's own check
        ({"question": "rockets", "documents": ["\udc00"]}, "string_unicode"),
    ],
)
async def test_bad_input_is_a_tool_error(mcp_server, arguments, message):
    async with Client(mcp_server) as client:
        text = error_text(await client.call_tool("search_passages", arguments))
        assert text.startswith("Error executing tool search_passages") and message in text


def test_passage_text_is_capped(searcher):
    passages = searcher.search(QUESTION, 2)
    full = search_result(QUESTION, passages)
    assert full.passages[0].text == passages[0].chunk.text and not full.passages[0].truncated  # under the cap
    cut = search_result(QUESTION, passages, limit=40)  # every text is cut: passage, highlight, answer
    for whole, short in zip(full.passages, cut.passages, strict=True):
        assert short.text == whole.text[:40] and short.truncated
        assert short.highlight.text == whole.highlight.text[:40]
        assert (short.start, short.end, short.highlight.start) == (
            whole.start,
            whole.end,
            whole.highlight.start,
        )
    assert cut.answer.text == full.answer.text[:40] and len(full.answer.text) > 40


@pytest.mark.anyio
async def test_http_needs_the_key_when_reads_do(corpus_build, corpus_settings):
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": "other-key",
        "SEMQA_READ_KEYS": KEY,  # a read key may search
        "SEMQA_READ_REQUIRES_KEY": "true",
        "SEMQA_RATE_LIMIT": "30 per minute",
    }
    args = ["--http", "--index-dir", str(corpus_settings.index_dir)]
    with running_server(args, env=env, command="mcp") as server:  # ready once its open /health answers
        url = server.url + "/mcp"
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient(timeout=30) as anonymous:
            for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                refused = await anonymous.post(url, json=initialize, headers=headers | auth)
                assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
                assert refused.headers["WWW-Authenticate"].startswith("Bearer")

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        async with (
            http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert [t.name for t in (await session.list_tools()).tools] == ["search_passages"]
            check_answer(await session.call_tool("search_passages", {"question": QUESTION}))

        async with httpx2.AsyncClient(timeout=30) as client:  # the HTTP API's rate limit, per client
            statuses = [
                (await client.post(url, json=initialize, headers=headers)).status_code for _ in range(30)
            ]
            assert 429 in statuses and set(statuses) <= {401, 429}
            limited = await client.post(url, json=initialize, headers=headers)
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
            assert (await client.get(server.url + "/health")).status_code == 200  # probes stay free


def test_http_errors_are_json_that_plain_clients_read(corpus_build, corpus_settings):
    # found by probing: a body over the SDK's 4 MiB limit got a plain-text 413, which urllib never read
    # (Broken pipe: the server closed while it was still sending); an unknown path a plain-text 404
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)}
    args = ["--http", "--index-dir", str(corpus_settings.index_dir)]
    with running_server(args, env=env, command="mcp") as server:
        url = server.url + "/mcp"
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        for size in (5_000_000, 20_000_000):
            body = b"x" * size
            answer = requests.post(url, data=body, headers=headers, timeout=60)
            assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"
            request = urllib.request.Request(url, data=body, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=60)
            assert refused.value.code == 413
            assert json.loads(refused.value.read())["error"]["message"].endswith("send at most 4 MiB")
        missing = requests.get(server.url + "/nowhere", timeout=30)
        assert missing.status_code == 404 and "/mcp" in missing.json()["error"]["message"]
        plain = requests.post(url, data=b"{}", headers={**headers, "Content-Type": "text/plain"}, timeout=30)
        assert plain.status_code == 400 and plain.json()["error"]["code"] == "bad_request"
        # what the SDK answers in JSON already passes as it is: a JSON-RPC parse error
        broken = requests.post(url, data=b"not json", headers=headers, timeout=30)
        assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700


@pytest.mark.anyio
@pytest.mark.parametrize("expects", [False, True])
async def test_error_answers_are_json_even_without_a_body_and_ask_for_no_upload(expects):
    # found by review: an error start with no body after it was never sent, and a client that sent
    # "Expect: 100-continue" was told to upload the body an early error answer refuses anyway
    received: list[dict] = []
    sent: list[dict] = []

    async def app(scope, receive, send):  # refuses without reading the body, and sends no body
        await send({"type": "http.response.start", "status": 413, "headers": [(b"retry-after", b"1")]})

    async def receive():
        received.append({"type": "http.request", "body": b"x" * 10, "more_body": False})
        return received[-1]

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", b"10")] + ([(b"expect", b"100-continue")] if expects else [])
    await ReadableErrors(app, max_bytes=1000, seconds=1)({"type": "http", "headers": headers}, receive, send)
    assert len(received) == (0 if expects else 1)  # the body is read after a refusal, unless never sent
    start, body = sent
    assert start["status"] == 413 and (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"])["error"] == {
        "code": "payload_too_large",
        "message": "413: send at most 4 MiB",
    }


def test_the_mcp_server_and_the_retrieval_core_import_no_web_framework():
    code = (
        "import sys, server.retrieval, server.mcp_server; "
        "print(sorted(m for m in ('flask', 'apiflask', 'werkzeug', 'flask_limiter') if m in sys.modules))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "[]"
