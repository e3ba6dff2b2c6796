"""A failure to refresh the index is never a failed request: not for the write that was just committed, not
for an unrelated question, and it is retried until it succeeds."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from indexer.layout import CURRENT
from semqa.launch import running_server
from server.app import create_app
from server.retrieval import load_searcher
from tests.conftest import copy_index

KEY = "reload-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MARS = {"id": "notes/mars.md", "title": "Mars base", "text": "The Mars base will be built in 2040."}
QUESTION = {"question": "When will the Mars base be built?", "top_k": 1}


@pytest.fixture()
def served(tmp_path, corpus_build, corpus_settings, encoder):
    """An app over a private copy of the corpus index that refreshes before each request (as `semqa serve`
    does; the background poll is left out by its long interval)."""
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    settings = corpus_settings.model_copy(
        update={"index_dir": index_dir, "api_keys": KEY, "reload_interval": 3600}
    )
    app = create_app(settings, searcher=load_searcher(settings, encoder))
    yield app, settings
    app.extensions["semqa.watcher"].stop()


def another_worker(settings, encoder):
    """A second app over the same index, as another worker of the server (no watcher of its own)."""
    settings = settings.model_copy(update={"reload_interval": 0})
    return create_app(settings, searcher=load_searcher(settings, encoder))


def test_a_committed_write_whose_refresh_fails_is_acknowledged_and_served_next(served, monkeypatch):
    served, _ = served
    reader = served.extensions["semqa.searcher"].reader
    refresh = reader.refresh
    failures: list[bool] = []

    def failing_once(**kwargs: bool) -> bool:
        if not failures:
            failures.append(True)
            raise OSError("No space left on device")
        return refresh(**kwargs)

    monkeypatch.setattr(reader, "refresh", failing_once)
    client = served.test_client()
    response = client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    assert failures and response.status_code == 200, response.get_json()
    answer = client.post("/ask", json=QUESTION).get_json()  # the next request loads the durable commit
    assert answer["passages"][0]["document_id"] == MARS["id"]


def test_a_failing_refresh_never_fails_a_question_and_is_retried(served, encoder, monkeypatch):
    served, settings = served
    client = served.test_client()
    reader = served.extensions["semqa.searcher"].reader
    watcher = served.extensions["semqa.watcher"]
    before = client.post("/ask", json=QUESTION).get_json()["passages"][0]["document_id"]
    store = reader.store

    def unreadable(name: str) -> int | None:
        raise sqlite3.OperationalError("disk I/O error")

    derived_seq = store.derived_seq
    other = another_worker(settings, encoder).test_client()
    assert other.post("/documents", json={"documents": [MARS]}, headers=AUTH).status_code == 200
    monkeypatch.setattr(store, "derived_seq", unreadable)
    response = client.post("/ask", json=QUESTION)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["passages"][0]["document_id"] == before  # the last good view
    assert "disk I/O error" in client.get("/ready").get_json()["reload_error"]
    monkeypatch.setattr(store, "derived_seq", derived_seq)
    watcher._retry_at = 0  # the pause after a failure is over
    assert client.post("/ask", json=QUESTION).get_json()["passages"][0]["document_id"] == MARS["id"]
    assert client.get("/ready").get_json()["reload_error"] is None


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_an_unreadable_current_pointer_is_reported_retried_and_recovered_over_http(tmp_path, cache_dir):
    corpus, index_dir = tmp_path / "docs", tmp_path / "index"
    corpus.mkdir()
    (corpus / "station.txt").write_text("The space station is called Tiangong. It orbits the Earth.")
    env = {"SEMQA_CACHE_DIR": str(cache_dir), "SEMQA_QUIET": "1", "SEMQA_RELOAD_INTERVAL": "0.2"}
    common = ["--index-dir", str(index_dir)]
    subprocess.run(
        [sys.executable, "-m", "semqa.cli", "index", str(corpus), *common],
        check=True,
        env={**os.environ, **env},
    )
    current: Path = index_dir / CURRENT
    with running_server([*common, "--workers", "1"], env=env) as server:

        def reload_error() -> str | None:
            return requests.get(server.url + "/ready", timeout=10).json()["reload_error"]

        saved = current.read_bytes()
        current.unlink()
        current.mkdir()  # reading it fails (IsADirectoryError), as an unreadable file would
        try:
            assert wait_for(lambda: reload_error() is not None, 10), server.output
            ask = requests.post(
                server.url + "/ask", json={"question": "What is the station called?"}, timeout=30
            )
            assert ask.status_code == 200 and "Tiangong" in ask.json()["answer"]["text"]
        finally:
            current.rmdir()
            current.write_bytes(saved)
        assert wait_for(lambda: reload_error() is None, 45), server.output  # retried until it loads
