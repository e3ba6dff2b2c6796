"""Live index swaps: a running server picks up a new version without a restart or a failed request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from indexer import ChunkingConfig, build_index
from indexer.layout import STORE
from indexer.store import Store
from semqa.launch import running_server
from semqa.settings import Settings
from server.app import create_app
from server.retrieval import load_searcher
from server.retrieval.reload import VersionWatcher


def write_corpus(folder: Path, station: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "station.txt").write_text(f"The space station is called {station}. It orbits the Earth.")
    (folder / "rocket.txt").write_text("The Long March 5 rocket launches heavy payloads from Wenchang.")


def test_reindex_while_clients_query_changes_answers_with_zero_failures(tmp_path, cache_dir):
    corpus, index_dir = tmp_path / "docs", tmp_path / "index"
    write_corpus(corpus, "Tiangong")
    env = {
        "SEMQA_CACHE_DIR": str(cache_dir),
        "SEMQA_QUIET": "1",
        "SEMQA_RELOAD_INTERVAL": "0.2",
        "SEMQA_RATE_LIMIT": "",
    }
    common = ["--index-dir", str(index_dir)]
    subprocess.run(
        [sys.executable, "-m", "semqa.cli", "index", str(corpus), *common],
        check=True,
        env={**os.environ, **env},
    )
    with running_server([*common, "--workers", "2", "--threads", "2"], env=env) as server:
        statuses: list[int] = []
        answers: list[str] = []
        stop = threading.Event()

        def client() -> None:
            session = requests.Session()
            while not stop.is_set():
                response = session.post(
                    server.url + "/ask",
                    json={"question": "What is the station called?", "top_k": 1},
                    timeout=30,
                )
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.append(response.json()["passages"][0]["text"])

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        write_corpus(corpus, "Heavenly Palace")
        subprocess.run(
            [sys.executable, "-m", "semqa.cli", "index", str(corpus), *common],
            check=True,
            env={**os.environ, **env},
        )
        published = time.monotonic()
        deadline = published + 10
        while time.monotonic() < deadline and not (answers and "Heavenly Palace" in answers[-1]):
            time.sleep(0.1)
        time.sleep(1.5)  # every worker has had a second to switch
        stop.set()
        for thread in threads:
            thread.join()
        new_version = f"{Store(index_dir / STORE).latest():010d}"
        health = {requests.get(server.url + "/health", timeout=10).json()["index_version"] for _ in range(10)}
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200]}"
    assert "Tiangong" in answers[0]
    assert "Heavenly Palace" in answers[-1]
    assert health == {new_version}  # both workers serve the new version


def test_a_broken_new_generation_is_skipped_reported_and_retried(tmp_path, encoder, cache_dir):
    corpus, index_dir = tmp_path / "docs", tmp_path / "index"
    write_corpus(corpus, "Tiangong")
    settings = Settings(index_dir=index_dir, cache_dir=cache_dir, quiet=True, reload_interval=0)
    build_index([corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig())
    app = create_app(settings, searcher=load_searcher(settings, encoder))
    searcher = app.extensions["semqa.searcher"]
    watcher = VersionWatcher(searcher.reader)
    app.extensions["semqa.watcher"] = watcher
    first = searcher.view.name
    write_corpus(corpus, "Heavenly Palace")
    second = build_index([corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig())
    (second.generation_dir / "dense" / "dense.faiss").write_bytes(b"garbage")
    assert watcher.refresh(switch=True) is False
    ready = app.test_client().get("/ready").get_json()
    assert ready["index_version"] == first and "dense.faiss" in ready["reload_error"]
    answer = app.test_client().post("/ask", json={"question": "What is the station called?", "top_k": 1})
    assert answer.status_code == 200 and "Tiangong" in answer.get_json()["passages"][0]["text"]
    build_index([corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig())
    watcher._retry_at = 0  # the pause after a failure is over
    assert watcher.refresh(switch=True) is True
    assert app.test_client().get("/ready").get_json()["reload_error"] is None
    answer = app.test_client().post("/ask", json={"question": "What is the station called?", "top_k": 1})
    assert "Heavenly Palace" in answer.get_json()["passages"][0]["text"]
