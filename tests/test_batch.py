"""POST /query: several questions in one call, in the ChatGPT retrieval plugin's shape."""

from __future__ import annotations

import pytest
import requests

from server.app import create_app

WHITE_PAPER = "004_7eff6b0a2d74b62d.txt"


@pytest.fixture()
def client(corpus_settings, searcher):
    return create_app(corpus_settings, searcher=searcher).test_client()


def test_batch_answers_each_query_with_its_filter_and_top_k(client, searcher):
    body = {
        "queries": [
            {"query": "In which city is the 2020 China Space Conference held?"},
            {"query": "launch sites", "top_k": 2, "filter": {"document_id": WHITE_PAPER}},
            {"query": "conference", "top_k": 3, "filter": {"document_id": "001_c76768aa996baf89.txt"}},
        ]
    }
    response = client.post("/query", json=body)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["query"] for r in results] == [q["query"] for q in body["queries"]]
    assert [len(r["results"]) for r in results] == [5, 2, 3]
    first = results[0]["results"][0]
    assert set(first) == {"id", "text", "metadata", "score"} and "Fuzhou" in first["text"]
    assert first["metadata"]["document_id"] == "000_de246961d5590b13.txt" and "highlight" in first["metadata"]
    assert {r["metadata"]["document_id"] for r in results[1]["results"]} == {WHITE_PAPER}
    assert {r["metadata"]["document_id"] for r in results[2]["results"]} == {"001_c76768aa996baf89.txt"}
    single = client.post("/ask", json={"question": body["queries"][0]["query"]}).get_json()["passages"]
    assert [p["chunk_id"] for p in single] == [r["id"] for r in results[0]["results"]]  # same search as /ask


def test_questions_are_embedded_in_one_batch(searcher, monkeypatch):
    from server.retrieval import SearchOptions

    calls = []
    encode = searcher.encoder.encode
    monkeypatch.setattr(
        searcher.encoder, "encode", lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw)
    )
    searcher.search_queries([("a rocket", 3, SearchOptions()), ("a station", 2, SearchOptions(mode="dense"))])
    assert calls == [2]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"queries": []},
        {"queries": [{"query": ""}]},
        {"queries": [{"query": "x", "top_k": 0}]},
        {"queries": [{"query": "x", "filter": {"title": "y"}}]},
        {"queries": [{"query": "x", "filter": {"document_id": ["a"]}}]},
        {"queries": [{"query": "x", "filter": {"document_id": ""}}]},
        {"queries": [{"query": "x", "filter": {"document_id": 5}}]},
        {"queries": [{"query": "x", "extra": 1}]},
        {"queries": [{"query": "x"}] * 21},
    ],
)
def test_bad_batches_are_400(client, body):
    response = client.post("/query", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"


def test_batch_over_http(corpus_build, corpus_settings):
    from semqa.launch import running_server

    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir)}
    with running_server(["--index-dir", str(corpus_settings.index_dir)], env=env) as server:
        body = {
            "queries": [
                {"query": "Where is the conference held?", "top_k": 1},
                {"query": "BeiDou", "top_k": 1},
            ]
        }
        response = requests.post(server.url + "/query", json=body, timeout=60)
        assert response.status_code == 200 and len(response.json()["results"]) == 2
        assert requests.post(server.url + "/query", data="x", timeout=60).status_code == 415
