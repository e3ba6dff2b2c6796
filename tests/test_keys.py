"""API keys with scopes: read keys read, write keys write too; the key file's format, re-read when it
changes; CORS preflights and metrics; the same keys over MCP."""

from __future__ import annotations

import logging
import os

import pytest
import requests

from semqa.launch import running_server
from server.app import create_app
from server.keys import KeyFileError, KeyRing, parse_key_file
from server.mcp_server import KeyVerifier
from tests.conftest import copy_index

WRITER, READER = "writer-key-1", "reader-key-1"
ORIGIN = "https://page.example"
QUESTION = {"question": "Where is the 2020 China Space Conference held?", "top_k": 1}
NOTE = {"documents": [{"id": "notes/scoped.md", "text": "A note written with a scoped key."}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_key_file_format(tmp_path):
    text = "# who holds which key\n\nbare-key\nwrite  w-key \nread r-key\n   # indented comment\n"
    assert parse_key_file(text, tmp_path / "keys") == [
        ("bare-key", "write"),  # a bare key keeps the meaning it had before scopes: read-write
        ("w-key", "write"),
        ("r-key", "read"),
    ]
    # a comment after a key, as the README's example has (that example stopped the server)
    text = "write 3f9c0a   # may write and read\nread  b71e42 #may read only\n5d0e9b  # a bare key\n"
    assert parse_key_file(text, tmp_path / "keys") == [
        ("3f9c0a", "write"),
        ("b71e42", "read"),
        ("5d0e9b", "write"),
    ]
    for bad, number in (("admin k\n", 1), ("ok\nread\n", 2), ("ok\n\na b c\n", 3)):
        with pytest.raises(KeyFileError, match=f"keys, line {number}: expected"):
            parse_key_file(bad, tmp_path / "keys")


def test_scopes():
    ring = KeyRing([(WRITER, "write"), (READER, "read")])
    assert ring.scope_of(WRITER) == "write" and ring.scope_of(f"  {READER}\n") == "read"
    assert ring.scope_of("nobody") is None and ring.scope_of("") is None
    assert ring.configured("read") and ring.configured("write")
    readers_only = KeyRing([(READER, "read")])
    assert readers_only.configured("read") and not readers_only.configured("write")


def test_the_key_file_is_re_read_when_it_changes_and_a_broken_one_keeps_the_last_keys(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text(f"{WRITER}\nread {READER}\n")
    ring = KeyRing([("fixed", "read")], path)
    assert ring.scope_of(WRITER) == "write" and ring.scope_of(READER) == "read"
    path.write_text(f"read {WRITER}\n")  # demoted; READER revoked; another size than before
    assert ring.scope_of(WRITER) == "read" and ring.scope_of(READER) is None
    assert ring.scope_of("fixed") == "read"  # keys from the environment stay
    replacement = tmp_path / "keys.new"
    replacement.write_text(f"read {READER}\n")
    os.replace(replacement, path)  # how editors and config tools replace files: a new inode
    assert ring.scope_of(READER) == "read" and ring.scope_of(WRITER) is None
    with caplog.at_level(logging.ERROR, logger="server.keys"):
        path.write_text("read a b\n")
        assert ring.scope_of(READER) == "read"  # last good keys stay in force
        assert ring.scope_of(READER) == "read"
        path.unlink()
        assert ring.scope_of(READER) == "read"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "line 1" in errors[0] and "cannot read" in errors[1]  # once per state
    with pytest.raises(KeyFileError, match="cannot read the key file"):
        KeyRing([], path)  # at start-up, a missing file is an error


@pytest.fixture()
def scoped(corpus_settings, searcher):
    def make(**update):
        settings = corpus_settings.model_copy(update={"api_keys": WRITER, "read_keys": READER, **update})
        return create_app(settings, searcher=searcher).test_client()

    return make


def test_a_read_key_reads_and_is_refused_writes_with_403_naming_the_scope(scoped):
    client = scoped(read_requires_key=True)
    for key in (READER, WRITER):
        assert client.post("/ask", json=QUESTION, headers=bearer(key)).status_code == 200
        queries = {"queries": [{"query": "launch"}]}
        assert client.post("/query", json=queries, headers=bearer(key)).status_code == 200
        assert client.get("/documents", headers=bearer(key)).status_code == 200
        assert client.get("/documents/000_de246961d5590b13.txt", headers=bearer(key)).status_code == 200
        assert client.get("/metrics", headers=bearer(key)).status_code == 200
    refused = [
        client.post("/documents", json=NOTE, headers=bearer(READER)),
        client.delete("/documents/000_de246961d5590b13.txt", headers=bearer(READER)),
    ]
    for response in refused:
        assert response.status_code == 403
        message = response.get_json()["error"]["message"]
        assert "write scope" in message and "read scope only" in message
    assert client.get("/documents/000_de246961d5590b13.txt", headers=bearer(READER)).status_code == 200
    # A read key is refused writes whether reads need a key or not.
    open_reads = scoped()
    response = open_reads.post("/documents", json=NOTE, headers=bearer(READER))
    assert response.status_code == 403 and "write scope" in response.get_json()["error"]["message"]


def test_writes_stay_disabled_with_read_keys_only(corpus_settings, searcher):
    client = create_app(
        corpus_settings.model_copy(update={"read_keys": READER}), searcher=searcher
    ).test_client()
    response = client.post("/documents", json=NOTE, headers=bearer(READER))
    assert response.status_code == 403
    assert "no API key with the write scope is configured" in response.get_json()["error"]["message"]


def test_metrics_need_a_key_when_reads_do(scoped):
    assert scoped().get("/metrics").status_code == 200  # open when reads are
    client = scoped(read_requires_key=True)
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    assert "semqa_requests_total" in client.get("/metrics", headers=bearer(READER)).get_data(as_text=True)
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/ask", "POST"),
        ("/query", "POST"),
        ("/documents", "POST"),
        ("/documents", "GET"),
        ("/documents/a", "DELETE"),
    ],
)
def test_cors_preflights_need_no_key(scoped, path, method):
    client = scoped(read_requires_key=True, cors_origins=ORIGIN)
    preflight = client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert method in preflight.headers["Access-Control-Allow-Methods"]
    # The request itself still needs its key.
    assert client.open(path, method=method, json={}, headers={"Origin": ORIGIN}).status_code == 401


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_mcp_takes_either_scope_and_follows_the_key_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"read {READER}\nwrite {WRITER}\n")
    verifier = KeyVerifier(KeyRing([], path))
    assert (await verifier.verify_token(READER)).scopes == ["read"]
    assert (await verifier.verify_token(WRITER)).scopes == ["read", "write"]
    assert await verifier.verify_token("nobody") is None
    path.write_text(f"write {WRITER}\n")
    assert await verifier.verify_token(READER) is None  # revoked without a restart


def test_scopes_revocation_preflight_metrics_and_the_write_limit_over_http(
    tmp_path, corpus_build, corpus_settings
):
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    key_file = tmp_path / "keys"
    key_file.write_text(f"# ops team\n{WRITER}\nread {READER}\n")
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEY_FILE": str(key_file),
        "SEMQA_READ_KEYS": "env-reader",
        "SEMQA_READ_REQUIRES_KEY": "true",
        "SEMQA_CORS_ORIGINS": ORIGIN,
        "SEMQA_WRITE_RATE_LIMIT": "4 per minute",
    }
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        url = server.url
        for key in (READER, "env-reader", WRITER):
            assert (
                requests.post(url + "/ask", json=QUESTION, headers=bearer(key), timeout=30).status_code == 200
            )
        assert requests.post(url + "/ask", json=QUESTION, timeout=30).status_code == 401
        refused = requests.post(url + "/documents", json=NOTE, headers=bearer(READER), timeout=30)
        assert refused.status_code == 403 and "write scope" in refused.json()["error"]["message"]
        assert (
            requests.post(url + "/documents", json=NOTE, headers=bearer(WRITER), timeout=60).status_code
            == 200
        )

        key_file.write_text(f"read {WRITER}\n")  # the writer demoted, the reader revoked: no restart
        demoted = requests.post(url + "/documents", json=NOTE, headers=bearer(WRITER), timeout=30)
        assert demoted.status_code == 403
        assert (
            requests.post(url + "/ask", json=QUESTION, headers=bearer(WRITER), timeout=30).status_code == 200
        )
        revoked = requests.post(url + "/ask", json=QUESTION, headers=bearer(READER), timeout=30)
        assert revoked.status_code == 401 and revoked.json()["error"]["message"] == "the API key is not valid"

        preflight = requests.options(
            url + "/ask",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert requests.get(url + "/metrics", timeout=10).status_code == 401
        metrics = requests.get(url + "/metrics", headers=bearer("env-reader"), timeout=10)
        assert metrics.status_code == 200 and 'route="/ask"' in metrics.text

        # Three writes so far (refused, done, refused): one more, then the write limit answers.
        assert (
            requests.delete(
                url + "/documents/notes/scoped.md", headers=bearer(WRITER), timeout=60
            ).status_code
            == 403
        )
        for attempt in (
            requests.post(url + "/documents", json=NOTE, headers=bearer(WRITER), timeout=60),
            requests.delete(url + "/documents/notes/scoped.md", timeout=60),  # no key: counted all the same
        ):
            assert attempt.status_code == 429 and attempt.json()["error"]["code"] == "rate_limited"
        assert (
            requests.post(url + "/ask", json=QUESTION, headers=bearer(WRITER), timeout=30).status_code == 200
        )
