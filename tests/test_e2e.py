"""End to end: `semqa serve` as a subprocess (gunicorn), talked to over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from semqa.launch import running_server


def serve(index_dir: Path, cache_dir: Path, env: dict[str, str] | None = None):
    return running_server(
        ["--index-dir", str(index_dir)],
        env={"SEMQA_CACHE_DIR": str(cache_dir), "SEMQA_QUIET": "1", **(env or {})},
    )


@pytest.fixture(scope="module")
def server(corpus_build, corpus_settings):
    with serve(corpus_settings.index_dir, corpus_settings.cache_dir) as running:
        yield running.url


def test_served_by_gunicorn_and_answers_questions(server):
    health = requests.get(server + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["documents"] == 5
    response = requests.post(
        server + "/ask",
        json={"question": "In which city is the 2020 China Space Conference held?", "top_k": 3},
        timeout=30,
    )
    assert response.status_code == 200
    assert "gunicorn" in response.headers.get("Server", "")
    body = response.json()
    passages = body["passages"]
    assert len(passages) == 3 and body["mode"] == "hybrid"
    assert "Fuzhou" in passages[0]["text"] and "Fuzhou" in body["answer"]["text"]


def test_options_over_http(server):
    body = {
        "question": "Who organised it?",
        "mode": "lexical",
        "documents": ["003_505b4bb4a6734e00.txt"],
        "top_k": 2,
    }
    response = requests.post(server + "/ask", json=body, timeout=30)
    assert response.status_code == 200 and response.json()["mode"] == "lexical"
    assert {p["document_id"] for p in response.json()["passages"]} <= {"003_505b4bb4a6734e00.txt"}
    body = {"question": "space", "group_by_document": True, "top_k": 5}
    ids = [p["document_id"] for p in requests.post(server + "/ask", json=body, timeout=30).json()["passages"]]
    assert len(ids) == len(set(ids)) == 5


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "{oops", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": "question=hi", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {}}, 400),
        ({"json": {"question": "  "}}, 400),
        ({"json": {"question": 7}}, 400),
        ({"json": {"question": "q" * 5000}}, 400),
        ({"json": {"question": "ok", "top_k": 100}}, 400),
        ({"json": {"question": "ok", "top_k": "3"}}, 400),
        ({"json": {"question": "ok", "unknown": True}}, 400),
        ({"json": {"question": "ok", "mode": "semantic"}}, 400),
        ({"json": {"question": "ok", "documents": []}}, 400),
        ({"json": {"question": "ok", "min_score": "high"}}, 400),
        ({"json": {"question": "ok", "group_by_document": "true"}}, 400),
        ({"data": "x" * 200_000, "headers": {"Content-Type": "application/json"}}, 413),
    ],
)
def test_bad_input_over_http_is_a_json_4xx(server, kwargs, status):
    response = requests.post(server + "/ask", timeout=30, **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()["error"]) == {"code", "message"}


def test_unknown_route_and_wrong_method_over_http(server):
    assert requests.get(server + "/missing", timeout=10).status_code == 404
    response = requests.put(server + "/ask", json={"question": "x"}, timeout=10)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_serve_builds_the_index_when_there_is_none(tmp_path, cache_dir):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "note.md").write_text("# Lunar base\n\nThe research station will be built near the south pole.")
    with serve(tmp_path / "index", cache_dir, env={"SEMQA_CORPUS": str(corpus)}) as running:
        assert requests.get(running.url + "/health", timeout=10).json()["documents"] == 1
        top = requests.post(
            running.url + "/ask", json={"question": "Where is the station?", "top_k": 1}, timeout=30
        )
        assert top.json()["passages"][0]["document_id"] == "note.md"
    assert "indexing" in running.output
