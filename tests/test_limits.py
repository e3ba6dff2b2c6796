"""Limits that hold on every route the README names: the per-client rate limits, the body limits, and
bodies over them answered with a 413 that plain clients (requests, urllib) can read."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import requests
from apiflask import abort

from semqa.launch import running_server
from server.app import create_app
from server.drain import DiscardUnreadBody
from server.runner import idle_timeout_socket
from tests.conftest import copy_index

KEY = "limits-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOC = "000_de246961d5590b13.txt"
SLACK_SECRET = "limits-slack-secret"
UPSERT = {"documents": [{"id": "notes/limit.md", "text": "A note about limits."}]}
# Every limited route, each with a request it answers quickly (writes with a body it refuses, 400):
# a refused request counts against the limit like any other.
ROUTES = {
    "POST /ask": ("POST", "/ask", {"json": {"question": "launch"}}),
    "POST /query": ("POST", "/query", {"json": {"queries": [{"query": "launch"}]}}),
    "GET /documents": ("GET", "/documents", {}),
    "GET /documents/<id>": ("GET", f"/documents/{DOC}", {}),
    "POST /documents": ("POST", "/documents", {"json": {"documents": []}, "headers": AUTH}),
    "DELETE /documents/<id>": ("DELETE", "/documents/no-such-document", {"headers": AUTH}),
    "POST /integrations/slack/command": ("POST", "/integrations/slack/command", {"data": "text=hi"}),
    "GET /": ("GET", "/", {}),
}


def call(client, route: str):
    method, path, kwargs = ROUTES[route]
    return client.open(path, method=method, **kwargs)


@pytest.fixture()
def limited(corpus_settings, searcher):
    def make(rate_limit: str, write_rate_limit: str):
        settings = corpus_settings.model_copy(
            update={"api_keys": KEY, "rate_limit": rate_limit, "write_rate_limit": write_rate_limit}
        )
        return create_app(settings, searcher=searcher).test_client()

    return make


@pytest.mark.parametrize("route", ROUTES)
def test_the_rate_limit_holds_on_every_route(limited, route):
    client = limited("2 per minute", "")
    statuses = [call(client, route).status_code for _ in range(3)]
    assert 429 not in statuses[:2] and statuses[2] == 429, statuses
    refused = call(client, route)
    assert refused.get_json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) > 0
    assert refused.headers["X-RateLimit-Limit"] == "2" and refused.headers["X-RateLimit-Remaining"] == "0"


def test_the_rate_limit_is_one_budget_per_client_across_routes(limited):
    client = limited("3 per minute", "")
    assert [call(client, r).status_code != 429 for r in ("POST /ask", "GET /documents", "GET /")] == [
        True
    ] * 3
    assert call(client, "POST /query").status_code == 429


def test_the_write_rate_limit_holds_on_upserts_and_deletes_together(limited):
    client = limited("", "2 per minute")
    assert call(client, "POST /documents").status_code == 400
    assert call(client, "DELETE /documents/<id>").status_code == 404
    for route in ("POST /documents", "DELETE /documents/<id>"):
        refused = call(client, route)
        assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    # Counted before the key is checked: guessing keys is limited too.
    assert (
        client.post("/documents", json=UPSERT, headers={"Authorization": "Bearer guess"}).status_code == 429
    )
    # Reads are not writes.
    assert all(call(client, r).status_code != 429 for r in ("POST /ask", "GET /documents") for _ in range(5))


def test_a_write_counts_against_both_limits(limited):
    client = limited("3 per minute", "100 per minute")
    assert [call(client, "POST /documents").status_code for _ in range(4)] == [400, 400, 400, 429]


def test_retry_after_is_sent_on_429_only_and_never_replaces_the_apps_own(limited, monkeypatch):
    client = limited("5 per minute", "5 per minute")
    answered = call(client, "POST /ask")
    assert "Retry-After" not in answered.headers and answered.headers["X-RateLimit-Remaining"] == "4"
    # A busy write slot answers 503 with Retry-After: 1, whatever the limits' windows are.
    app = client.application
    monkeypatch.setitem(
        app.view_functions,
        "documents.upsert",
        lambda *args, **kwargs: abort(503, "busy", headers={"Retry-After": "1"}),
    )
    busy = client.post("/documents", json=UPSERT, headers=AUTH)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"


def test_a_limited_request_starts_no_thread_and_a_window_that_ends_admits_again(limited, monkeypatch):
    # limits' stock memory storage started a timer thread on every hit that came more than 10 ms after
    # the last one (0.9 ms a request); the counters must still expire on time without it.
    client = limited("2 per second", "")
    started = []
    original = threading.Thread.start
    monkeypatch.setattr(
        threading.Thread, "start", lambda thread: (started.append(thread.name), original(thread))
    )
    statuses = []
    for _ in range(3):
        time.sleep(0.03)
        statuses.append(call(client, "GET /documents").status_code)
    assert statuses == [200, 200, 429] and started == []
    time.sleep(1.05)  # the next one-second window
    assert call(client, "GET /documents").status_code == 200


def test_probes_metrics_docs_static_files_and_preflights_are_never_limited(limited):
    client = limited("1 per minute", "1 per minute")
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs", "/static/app.js"):
        assert all(client.get(path).status_code == 200 for _ in range(3)), path
    assert all(client.options("/documents").status_code == 200 for _ in range(3))


@pytest.mark.parametrize(
    ("route", "limit"),
    [
        ("POST /ask", "max_body_bytes"),
        ("POST /query", "max_body_bytes"),
        ("POST /integrations/slack/command", "max_body_bytes"),
        ("POST /documents", "max_write_body_bytes"),
    ],
)
def test_every_body_limit_is_a_413_json(corpus_settings, searcher, route, limit):
    settings = corpus_settings.model_copy(
        update={"api_keys": KEY, "slack_signing_secret": SLACK_SECRET, "max_write_body_bytes": 100_000}
    )
    client = create_app(settings, searcher=searcher).test_client()
    method, path, _ = ROUTES[route]
    size = getattr(settings, limit) + 1
    content_type = "application/x-www-form-urlencoded" if "slack" in path else "application/json"
    response = client.open(path, method=method, data=b"x" * size, content_type=content_type, headers=AUTH)
    assert response.status_code == 413
    assert response.get_json()["error"]["message"].endswith(f"the limit here is {size - 1} bytes")


def environ(body: bytes, **headers: str) -> dict:
    return {"wsgi.input": io.BytesIO(body), **headers}


def test_an_unread_body_is_discarded_within_its_bounds():
    def app(environ, start_response):  # answers without reading, as a 413 or a 401 does
        start_response("413 Payload Too Large", [])
        return [b"{}"]

    discard = DiscardUnreadBody(app, max_bytes=1000, seconds=10)
    short = environ(b"x" * 1000, CONTENT_LENGTH="1000")
    discard(short, lambda *a: None)
    assert short["wsgi.input"].tell() == 1000  # read to the end: the client's send completes
    long = environ(b"x" * 1001, CONTENT_LENGTH="1001")
    discard(long, lambda *a: None)
    assert long["wsgi.input"].tell() == 0  # over the bound: not read at all (the server then closes)
    chunked = environ(b"x" * 500_000, HTTP_TRANSFER_ENCODING="chunked")
    discard(chunked, lambda *a: None)
    assert 1000 <= chunked["wsgi.input"].tell() <= 1000 + 64 * 1024  # read up to the bound, no further
    bodiless = environ(b"never read")
    discard(bodiless, lambda *a: None)
    assert bodiless["wsgi.input"].tell() == 0  # no length, not chunked: no body to read


def test_a_stalled_body_is_given_up_after_the_time_bound():
    client_end, server_end = socket.socketpair()
    with client_end, server_end:
        client_end.sendall(b"x" * 100)  # then nothing more, and the connection stays open
        stream = server_end.makefile("rb", buffering=0)
        body = {"wsgi.input": stream, "gunicorn.socket": server_end, "CONTENT_LENGTH": "1000000"}
        started = time.monotonic()
        DiscardUnreadBody(lambda e, s: [b""], max_bytes=10**7, seconds=0.3)(body, lambda *a: None)
        assert time.monotonic() - started < 30  # it returned (the bound is 0.3 s), not blocked forever
        assert server_end.gettimeout() is None  # the socket's own timeout is put back


def test_a_large_answer_to_a_client_reading_steadily_is_sent_whole():
    # The client timeout bounds each send, not the whole answer: Python bounds a sendall as a whole by the
    # socket's timeout, which cut an 8 MB answer to a client reading 64 KB every 50 ms after 0.5 s.
    server_end, client_end = socket.socketpair()
    server_end.__class__ = idle_timeout_socket(0.5)
    server_end.setblocking(True)
    received = []

    def read_slowly() -> None:
        while chunk := client_end.recv(65536):
            received.append(len(chunk))
            time.sleep(0.05)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    with server_end:
        server_end.sendall(b"x" * (8 * 1024 * 1024))  # raised TimeoutError before
    reader.join(60)
    client_end.close()
    assert sum(received) == 8 * 1024 * 1024


def read_urllib(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory, corpus_build, corpus_settings):
    index_dir = tmp_path_factory.mktemp("limits") / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": KEY,
        "SEMQA_MAX_DISCARD_SECONDS": "5",  # ample for 20 MB over loopback
    }
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        yield server


MB = 1024 * 1024
OVERSIZED = [  # (path, body, headers, status, limit)
    ("/ask", b'{"question": "' + b"a" * (5 * MB) + b'"}', AUTH, 413, 64 * 1024),
    ("/documents", b'{"documents": [{"id": "x", "text": "' + b"a" * (20 * MB) + b'"}]}', AUTH, 413, 16 * MB),
    ("/documents", b"x" * (1 * MB), {}, 401, None),  # refused for its key before its body was read
]


@pytest.mark.parametrize("client", ["requests", "urllib"])
@pytest.mark.parametrize("case", range(len(OVERSIZED)), ids=["ask-5MB", "upsert-20MB", "unauthorized-1MB"])
def test_oversized_bodies_get_a_readable_answer_over_http(served, client, case):
    path, body, auth, status, limit = OVERSIZED[case]
    headers = {"Content-Type": "application/json", **auth}
    if client == "requests":
        with requests.Session() as session:
            response = session.post(served.url + path, data=body, headers=headers, timeout=60, stream=True)
            sent_from = response.raw.connection.sock.getsockname()
            code, answer = response.status_code, response.json()
            # The body was read to its end, so the connection was not closed under the client (urllib3
            # recovers from that by reconnecting): the next request goes over the same one.
            health = session.get(served.url + "/health", timeout=10, stream=True)
            assert health.raw.connection.sock.getsockname() == sent_from
            assert health.status_code == 200
    else:
        code, answer = read_urllib(served.url + path, body, headers)
    assert code == status
    if limit is not None:
        assert answer["error"] == {
            "code": "payload_too_large",
            "message": f"request body too large; the limit here is {limit} bytes",
        }
    else:
        assert answer["error"]["code"] == "unauthorized"


def test_a_client_that_stalls_mid_body_gets_its_answer_after_the_time_bound(served):
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        sock.sendall(head + b"a" * 1000)  # and then nothing: the server stops waiting after 5 s
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"payload_too_large"' in answer
    assert requests.get(served.url + "/health", timeout=10).status_code == 200


def test_chunked_bodies_are_answered_as_declared_ones_are(served):
    # A chunked body is read before the question's turn in the app (server/admission.py), whole when it
    # fits the limit; a longer one keeps the part read ahead in front of the rest, and the app refuses it.
    def chunks(body: bytes, size: int = 4096):
        yield from (body[i : i + size] for i in range(0, len(body), size))

    headers = {"Content-Type": "application/json", **AUTH}
    small = json.dumps({"question": "Where is the 2020 China Space Conference held?", "top_k": 2}).encode()
    answer = requests.post(served.url + "/ask", data=chunks(small, 7), headers=headers, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["passages"]) == 2
    upsert = json.dumps({"documents": [{"id": "notes/chunked.md", "text": "Sent in chunks."}]}).encode()
    assert requests.post(served.url + "/documents", data=chunks(upsert, 5), headers=headers, timeout=60).ok
    # A longer one is refused as a declared one is, 413 with the route's limit (werkzeug alone stops
    # reading a chunked body at the limit, and the JSON cut short there was answered 400, "Bad Request").
    for path, limit in (("/ask", 64 * 1024), ("/documents", 16 * MB)):
        large = b'{"question": "' + b"a" * (limit + 100 * 1024) + b'"}'
        with requests.Session() as session:
            refused = session.post(served.url + path, data=chunks(large, 65536), headers=headers, timeout=60)
            assert refused.status_code == 413, refused.text
            assert (
                refused.json()["error"]["message"]
                == f"request body too large; the limit here is {limit} bytes"
            )
            again = session.post(served.url + "/ask", data=chunks(small, 7), headers=headers, timeout=60)
            assert again.status_code == 200


def test_clients_that_connect_and_send_nothing_hold_no_thread(tmp_path, corpus_settings):
    # found by a load probe: gunicorn waits up to 5 s in one of the worker's threads for a new connection's
    # first bytes; fifty clients that connected and sent nothing, again and again, left questions
    # unanswered (24 answers in 30 s, against 1,590 with the connections idle after their first request)
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_THREADS": "2"}
    question = {"question": "Where is the 2020 China Space Conference held?"}
    with running_server(["--index-dir", str(index_dir), "--workers", "1"], env=env) as server:
        host, port = server.url.removeprefix("http://").split(":")
        assert requests.post(server.url + "/ask", json=question, timeout=30).status_code == 200  # warm
        silent = [socket.create_connection((host, int(port)), timeout=30) for _ in range(6)]
        try:
            time.sleep(0.3)  # accepted, each in a thread for 5 s before: more than the worker's two
            for _ in range(3):  # answered at once, well within the 5 s those threads were held
                assert requests.post(server.url + "/ask", json=question, timeout=3).status_code == 200
        finally:
            for sock in silent:
                sock.close()


def test_clients_that_stop_sending_are_given_up_and_cannot_hold_every_thread(tmp_path, corpus_settings):
    # A client that stopped in the middle of its headers or its body held its gunicorn thread for as long
    # as it kept the connection open: as many such connections as a worker has threads (16 by default)
    # left no thread for anyone. Now a connection silent for SEMQA_CLIENT_TIMEOUT mid-request is given
    # up: a stalled body gets a readable 408, stalled headers a closed connection.
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": KEY,
        "SEMQA_THREADS": "3",  # one thread for each stalled client below
        "SEMQA_CLIENT_TIMEOUT": "2",
    }
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        host, port = server.url.removeprefix("http://").split(":")

        def stalled(request: bytes) -> socket.socket:
            sock = socket.create_connection((host, int(port)), timeout=60)
            sock.sendall(request)
            return sock

        def body(path: str) -> bytes:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
            return f'{head}Authorization: Bearer {KEY}\r\n\r\n{{"documents'.encode()

        clients = {
            "headers": stalled(b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Ty"),
            "question body": stalled(body("/ask")),
            "write body": stalled(body("/documents")),
        }
        try:
            time.sleep(0.5)  # each holds a thread now
            started = time.monotonic()
            question = {"question": "Where is the 2020 China Space Conference held?"}
            asked = requests.post(server.url + "/ask", json=question, timeout=30)
            assert asked.status_code == 200 and time.monotonic() - started < 20
            answers = {}
            for name, sock in clients.items():
                answers[name] = b""
                while chunk := sock.recv(65536):  # until the server closes the connection
                    answers[name] += chunk
        finally:
            for sock in clients.values():
                sock.close()
    assert answers["headers"] == b""
    for name in ("question body", "write body"):
        head, _, payload = answers[name].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answers[name]
        assert json.loads(payload)["error"] == {
            "code": "request_timeout",
            "message": "the request body stopped arriving: nothing came for 2 seconds; send the request again",
        }
