"""Operations: request ids and JSON logs, Prometheus metrics, readiness, rate limits, CORS, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from indexer.generation import GENERATIONS, current_path
from indexer.layout import writer_lock
from semqa.launch import running_server
from server.app import create_app
from tests.conftest import copy_index


def test_request_id_is_echoed_or_made_and_logged(corpus_settings, searcher, capsys):
    client = create_app(corpus_settings, searcher=searcher).test_client()
    response = client.post("/ask", json={"question": "space"}, headers={"X-Request-ID": "req-42"})
    assert response.headers["X-Request-ID"] == "req-42"
    # Logged once the answer is closed, which a WSGI server does after sending it: no client waits for it.
    assert "req-42" not in capsys.readouterr().err
    response.close()
    with client.get("/health") as made:
        assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"] != "req-42"
    with client.get("/health", headers={"X-Request-ID": "x" * 500}) as hostile:
        assert hostile.headers["X-Request-ID"] != "x" * 500  # not echoed: only short, plain ids are
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    ask = next(line for line in lines if line["request_id"] == "req-42")
    assert ask["route"] == "/ask" and ask["status"] == 200 and ask["ms"] > 0
    assert len(lines) == 3


def test_the_logged_time_counts_the_wait_for_a_turn(corpus_settings, searcher, capsys, monkeypatch):
    # Questions wait for a turn before the app (server/admission.py); the access log's ms and the latency
    # metrics started at the app's first hook, so they left that wait out: under load they reported less
    # than the clients waited.
    app = create_app(corpus_settings.model_copy(update={"torch_threads": 1}), searcher=searcher)  # one turn
    search, holding = searcher.search, threading.Event()

    def slow_search(question: str, *args: object, **kwargs: object) -> object:
        if question == "hold the turn":
            holding.set()
            time.sleep(1.0)
        return search(question, *args, **kwargs)

    monkeypatch.setattr(searcher, "search", slow_search)

    def ask(question: str) -> None:
        app.test_client().post(
            "/ask", json={"question": question}, headers={"X-Request-ID": question[:4]}
        ).close()

    holder = threading.Thread(target=ask, args=("hold the turn",))
    holder.start()
    assert holding.wait(30)
    started = time.perf_counter()
    ask("wait for it")  # waits about a second for the one turn
    waited_ms = (time.perf_counter() - started) * 1000
    holder.join(30)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    logged = next(line for line in lines if line["request_id"] == "wait")
    assert waited_ms > 500 and logged["ms"] > 0.9 * waited_ms, (logged, waited_ms)


def test_metrics_in_prometheus_format(corpus_settings, searcher, corpus_build):
    client = create_app(corpus_settings, searcher=searcher).test_client()
    for body in ({"question": "space"}, {"question": ""}):
        client.post("/ask", json=body).close()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'semqa_requests_total{method="POST",route="/ask",status="200"}' in text
    assert 'semqa_requests_total{method="POST",route="/ask",status="400"}' in text
    assert 'semqa_request_seconds_bucket{le="0.5",route="/ask"}' in text
    assert f"semqa_chunks {float(corpus_build.chunks)}" in text
    assert "semqa_documents 5.0" in text
    assert f"semqa_index_version {float(searcher.view.seq)}" in text


def test_every_answer_over_http_is_logged_and_counted_once_sent(corpus_settings):
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)}
    with running_server(["--index-dir", str(corpus_settings.index_dir)], env=env) as server:

        def send(method: str, path: str, request_id: str, **kwargs) -> requests.Response:
            return requests.request(
                method, server.url + path, headers={"X-Request-ID": request_id}, timeout=60, **kwargs
            )

        asked = send("POST", "/ask", "http-7", json={"question": "space"})
        refused = send("POST", "/ask", "http-8", json={"question": ""})
        static = send("GET", "/static/app.js", "http-9")  # a file answer: the server closes only the file
        assert asked.status_code == 200 and asked.headers["X-Request-ID"] == "http-7"
        assert refused.status_code == 400 and static.status_code == 200
        deadline = time.monotonic() + 10  # written just after each answer was sent, counted just before
        while time.monotonic() < deadline and not all(
            f'"request_id": "http-{n}"' in server.output for n in (7, 8, 9)
        ):
            time.sleep(0.05)
        logged = {
            line["request_id"]: line
            for line in map(json.loads, (x for x in server.output.splitlines() if x.startswith("{")))
        }
        ask = logged["http-7"]
        assert ask["route"] == "/ask" and ask["status"] == 200 and ask["method"] == "POST"
        assert 0 < ask["ms"] < 60_000 and ask["client"] == "127.0.0.1"
        assert logged["http-8"]["status"] == 400 and logged["http-9"]["path"] == "/static/app.js"
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert 'semqa_requests_total{method="POST",route="/ask",status="200"} 1.0' in metrics
        assert 'semqa_requests_total{method="POST",route="/ask",status="400"} 1.0' in metrics
        assert 'method="GET",route="/static/<path:filename>",status="200"} 1.0' in metrics


def test_ready_and_health(corpus_settings, searcher, corpus_build):
    client = create_app(corpus_settings, searcher=searcher).test_client()
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "index_version": searcher.view.name,
        "reload_error": None,
    }


def test_a_worker_answers_only_once_loaded_so_ready_is_never_a_503(tmp_path, corpus_settings, searcher):
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)}
    args = ["--index-dir", str(corpus_settings.index_dir)]
    with running_server(args, env=env, until="listening") as server:  # the port is bound, the worker loading
        assert " ready: serving index version " not in server.output
        ready = requests.get(server.url + "/ready", timeout=120)  # waits in the listen backlog meanwhile
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "index_version": searcher.view.name,
            "reload_error": None,
        }
        assert f" ready: serving index version {searcher.view.name}" in server.output


def test_rate_limit_answers_429_with_retry_after_and_spares_probes(corpus_settings, searcher):
    settings = corpus_settings.model_copy(update={"rate_limit": "3 per minute"})
    client = create_app(settings, searcher=searcher).test_client()
    codes = [client.post("/ask", json={"question": "space"}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = client.post("/ask", json={"question": "space"})
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    assert all(client.get("/health").status_code == 200 for _ in range(5))


def test_cors_is_off_by_default_and_allows_only_configured_origins(corpus_settings, searcher):
    closed = create_app(corpus_settings, searcher=searcher).test_client()
    assert (
        "Access-Control-Allow-Origin"
        not in closed.get("/health", headers={"Origin": "https://a.example"}).headers
    )
    settings = corpus_settings.model_copy(update={"cors_origins": "https://a.example"})
    open_ = create_app(settings, searcher=searcher).test_client()
    assert open_.get("/health", headers={"Origin": "https://a.example"}).headers[
        "Access-Control-Allow-Origin"
    ] == ("https://a.example")
    assert (
        "Access-Control-Allow-Origin"
        not in open_.get("/health", headers={"Origin": "https://b.example"}).headers
    )


def test_indexer_killed_mid_build_leaves_a_servable_index(tmp_path, cache_dir, encoder):
    from indexer import IndexReader, indexed_backend

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The first version of the corpus.")
    index_dir, fresh_cache = tmp_path / "index", tmp_path / "fresh-cache"
    env = {**os.environ, "SEMQA_CACHE_DIR": str(fresh_cache), "SEMQA_QUIET": "1"}
    command = [sys.executable, "-m", "semqa.cli", "index", str(corpus), "--index-dir", str(index_dir)]
    subprocess.run(command, check=True, env=env)
    good = current_path(index_dir)
    for i in range(300):  # enough new text that embedding takes seconds
        (corpus / f"doc{i}.txt").write_text(
            f"Document {i} tells of rocket {i}, satellite {i} and station {i}. " * 30
        )

    def kill_when(ready) -> None:
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def documents() -> int:
        view = IndexReader(
            index_dir,
            model_sha256=encoder.weights_sha256,
            dimension=encoder.dimension,
            backend=indexed_backend(index_dir),  # the CLI built it with a new index's backend
        ).view
        return view.store.document_count

    # 1. Mid-embedding: nothing was committed, the previous generation is served as it was.
    # The embedding cache of whichever backend is configured (one file per backend).
    kill_when(lambda: any(f.stat().st_size > 200_000 for f in fresh_cache.glob("embeddings-*.sqlite")))
    assert current_path(index_dir) == good and documents() == 1
    # 2. While building the new generation: the store holds the new documents (committed), the served
    # generation is whole, and the server catches it up when it starts.
    kill_when(lambda: bool(list((index_dir / GENERATIONS).glob(".tmp-*"))))
    assert documents() in (1, 301)
    with running_server(["--index-dir", str(index_dir)], env={"SEMQA_CACHE_DIR": str(cache_dir)}) as server:
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        assert requests.get(server.url + "/health", timeout=10).json()["documents"] == 301
    subprocess.run(command, check=True, env=env)  # the next build cleans any leftovers and succeeds
    assert not list((index_dir / GENERATIONS).glob(".tmp-*"))
    assert documents() == 301 and current_path(index_dir) != good


def test_server_killed_mid_upsert_keeps_every_acknowledged_write(tmp_path, corpus_build, corpus_settings):
    from semqa.launch import stop

    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_API_KEYS": "k"}
    auth = {"Authorization": "Bearer k"}
    acknowledged: list[str] = []
    with running_server(["--index-dir", str(index_dir)], env=env) as server:

        def writer() -> None:
            for i in range(200):
                doc = {"id": f"live/{i}", "text": f"Live note {i}: module {i} docked with the station."}
                try:
                    response = requests.post(
                        server.url + "/documents", json={"documents": [doc]}, headers=auth, timeout=30
                    )
                except requests.RequestException:
                    return  # the server died under us: this write was never acknowledged
                if response.status_code == 200:
                    acknowledged.append(doc["id"])

        thread = threading.Thread(target=writer)
        thread.start()
        while len(acknowledged) < 3:
            time.sleep(0.01)
        stop(server.process, signal.SIGKILL)  # kill -9, master and worker, mid-write
        thread.join()
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        listed = requests.get(server.url + "/documents?limit=1000", timeout=10).json()
        ids = {d["id"] for d in listed["documents"]}
        assert set(acknowledged) <= ids  # nothing acknowledged is lost
        assert len(ids) - 5 in (len(acknowledged), len(acknowledged) + 1)  # at most the in-flight one more
        last = acknowledged[-1]
        number = last.split("/")[1]
        top = requests.post(
            server.url + "/ask", json={"question": f"Which module {number} docked?", "top_k": 3}, timeout=30
        )
        assert last in {p["document_id"] for p in top.json()["passages"]}


def test_serve_refuses_a_damaged_index_naming_the_file(tmp_path, corpus_build, corpus_settings):
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    dense = current_path(index_dir) / "dense" / "dense.faiss"
    dense.write_bytes(dense.read_bytes()[:4096])  # truncated
    result = subprocess.run(
        [sys.executable, "-m", "semqa.cli", "serve", "--index-dir", str(index_dir), "--port", "0"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env={**os.environ, "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)},
    )
    assert result.returncode == 1
    assert "dense.faiss" in result.stderr and "truncated" in result.stderr


def _held_writes(
    url: str, numbers: list[int], answers: dict[int, requests.Response]
) -> list[threading.Thread]:
    """One thread per write of a small document ``held/<number>``, not started; each puts its answer in
    ``answers``."""

    def write(number: int) -> None:
        doc = {"id": f"held/{number}", "text": f"Note {number}: the lock was held by a build."}
        headers = {"Authorization": "Bearer k"}
        answers[number] = requests.post(
            url + "/documents", json={"documents": [doc]}, headers=headers, timeout=60
        )

    return [threading.Thread(target=write, args=(n,)) for n in numbers]


def test_writes_waiting_on_the_lock_leave_a_thread_for_questions(tmp_path, corpus_build, corpus_settings):
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_API_KEYS": "k"}

    with running_server(["--index-dir", str(index_dir), "--threads", "2"], env=env) as server:
        answers: dict[int, requests.Response] = {}
        writers = _held_writes(server.url, [1, 2], answers)
        with writer_lock(index_dir):  # as a long `semqa index` would: every write waits
            for thread in writers:
                thread.start()
            deadline = time.monotonic() + 30
            while not (refused := [n for n, r in answers.items() if r.status_code == 503]):
                assert time.monotonic() < deadline, "no write was refused: both threads may be waiting"
                time.sleep(0.05)
            waiting = 3 - refused[0]  # the other write holds the worker's only write slot, and with two
            # threads there is no place to wait for it: this one was refused, the second thread is free
            assert answers[refused[0]].headers["Retry-After"] == "1"
            assert answers[refused[0]].json()["error"]["code"] == "unavailable"
            question = {"question": "Where is the 2020 China Space Conference held?"}
            asked = requests.post(server.url + "/ask", json=question, timeout=30)  # the thread left free
            assert asked.status_code == 200 and waiting not in answers  # while the write still waits
        for thread in writers:
            thread.join(timeout=60)
        assert answers[waiting].status_code == 200  # it went through once the lock was free
        listed = requests.get(server.url + "/documents?limit=100", timeout=10).json()["documents"]
        assert f"held/{waiting}" in {d["id"] for d in listed}


def test_writes_beyond_what_a_worker_takes_are_refused_and_questions_still_answered(
    tmp_path, corpus_build, corpus_settings
):
    # found by a load probe: with every write but one given a slot and each further write waiting for one,
    # 32 writing clients filled gunicorn's thread pool and its queue, and questions waited behind them
    # (p50 7.5 s). Now a quarter of the threads may write, half of the rest wait for a slot, and a write
    # beyond those is refused at once, so questions still find a thread.
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": "k",
        "SEMQA_THREADS": "8",  # two write slots, three places to wait for one, three threads for the rest
        "SEMQA_WRITE_WAIT": "8",
    }
    with running_server(["--index-dir", str(index_dir), "--workers", "1"], env=env) as server:
        question = {"question": "Where is the 2020 China Space Conference held?"}
        assert requests.post(server.url + "/ask", json=question, timeout=30).status_code == 200  # warm
        answers: dict[int, requests.Response] = {}
        writers = _held_writes(server.url, list(range(10)), answers)
        with writer_lock(index_dir):  # two writes take the slots and wait for the lock, three for a slot
            for thread in writers:
                thread.start()
            time.sleep(1)
            started = time.monotonic()
            assert requests.post(server.url + "/ask", json=question, timeout=30).status_code == 200
            waited = time.monotonic() - started
            refused = [r for r in answers.values() if r.status_code == 503]
            assert len(answers) == len(refused) == 5 and all(r.headers["Retry-After"] == "1" for r in refused)
        for thread in writers:  # the two take the lock in turn, and the three waiting take their slots
            thread.join(timeout=60)
        assert sorted(r.status_code for r in answers.values()) == [200] * 5 + [503] * 5
    assert waited < 5  # a thread was free: the question waited for no write (8 s, the writes' wait)


def test_a_burst_of_writes_waits_its_turn_while_questions_are_answered(
    tmp_path, corpus_build, corpus_settings
):
    # With 4 threads a worker (the default before), the fourth of eight concurrent writes was refused after
    # a wait for a slot, and questions queued behind the writes: a plain client lost writes. With the default
    # thread count every write of a burst waits its turn and a question still finds a thread.
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_API_KEYS": "k"}
    with running_server(["--index-dir", str(index_dir)], env=env) as server:
        answers: dict[int, requests.Response] = {}
        writers = _held_writes(server.url, list(range(8)), answers)
        with writer_lock(index_dir):  # every write reaches its worker and waits there, holding its thread
            for thread in writers:
                thread.start()
            time.sleep(2)  # every write has reached its worker, and none is refused
            question = {"question": "Where is the 2020 China Space Conference held?"}
            asked = requests.post(server.url + "/ask", json=question, timeout=30)
            assert asked.status_code == 200
            assert not answers, {n: r.status_code for n, r in answers.items()}  # every write still waits
        for thread in writers:
            thread.join(timeout=60)
        assert {n: r.status_code for n, r in answers.items()} == dict.fromkeys(range(8), 200)
        listed = requests.get(server.url + "/documents?limit=100", timeout=10).json()["documents"]
        assert {f"held/{n}" for n in range(8)} <= {d["id"] for d in listed}
