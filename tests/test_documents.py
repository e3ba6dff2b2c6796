"""The live documents API: upsert, delete, list, read; API keys; limits; ids are data, never paths."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from semqa.launch import running_server
from semqa.settings import Settings
from server.app import create_app
from server.retrieval import load_searcher
from tests.conftest import copy_index, private_app

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
MARS = {
    "id": "notes/mars.md",
    "title": "Mars base",
    "text": "The Mars base will be built in 2040 near Olympus Mons.",
}


@pytest.fixture()
def writable(tmp_path, corpus_build, corpus_settings, encoder):
    """An app over a private copy of the corpus index, with an API key."""
    index_dir = tmp_path / "index"
    app = private_app(index_dir, corpus_settings, encoder, api_keys=KEY, max_upsert_documents=3)
    return app, app.test_client(), index_dir


def ask(client, question: str) -> list[dict]:
    return client.post("/ask", json={"question": question, "top_k": 3}).get_json()["passages"]


def test_upsert_is_searchable_replaces_and_deletes(writable):
    _, client, _ = writable
    before = client.get("/health").get_json()
    response = client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["upserted"] == ["notes/mars.md"]
    assert client.get("/health").get_json()["documents"] == before["documents"] + 1
    top = ask(client, "When will the Mars base be built?")[0]
    assert top["document_id"] == "notes/mars.md" and "2040" in top["highlight"]["text"]
    listed = client.get("/documents?limit=1000").get_json()
    assert {"id": "notes/mars.md", "title": "Mars base", "chunks": 1} in listed["documents"]
    assert client.get("/documents/notes/mars.md").get_json()["text"] == MARS["text"]

    replaced = {**MARS, "text": "The Mars base was moved to Hellas Planitia in 2045."}
    assert client.post("/documents", json={"documents": [replaced]}, headers=AUTH).status_code == 200
    texts = [p["text"] for p in ask(client, "Where is the Mars base?") if p["document_id"] == "notes/mars.md"]
    assert texts == [replaced["text"]]  # the old chunk is gone, not duplicated
    assert client.get("/health").get_json()["documents"] == before["documents"] + 1

    assert client.delete("/documents/notes/mars.md", headers=AUTH).status_code == 200
    assert all(p["document_id"] != "notes/mars.md" for p in ask(client, "Where is the Mars base?"))
    assert client.get("/documents/notes/mars.md").status_code == 404
    assert client.delete("/documents/notes/mars.md", headers=AUTH).status_code == 404
    assert client.get("/health").get_json() | {"index_version": None} == before | {"index_version": None}


def test_an_id_twice_in_one_request_keeps_the_last(writable):
    _, client, _ = writable
    second = {**MARS, "text": "The Mars base moved to Hellas Planitia."}
    response = client.post("/documents", json={"documents": [MARS, second]}, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["upserted"] == ["notes/mars.md"]
    assert client.get("/documents/notes/mars.md").get_json()["text"] == second["text"]


def test_only_new_text_is_embedded(writable):
    _, client, _ = writable
    first = client.post("/documents", json={"documents": [MARS]}, headers=AUTH).get_json()
    again = client.post(
        "/documents", json={"documents": [MARS, {**MARS, "id": "copy"}]}, headers=AUTH
    ).get_json()
    assert again["embedded"] == 0 and first["index_version"] < again["index_version"]


def test_lexical_and_dense_stay_consistent_after_writes(writable):
    app, client, _ = writable
    client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    client.delete("/documents/000_de246961d5590b13.txt", headers=AUTH)
    client.post(
        "/documents", json={"documents": [{**MARS, "text": "The Mars base moved to Hellas."}]}, headers=AUTH
    )
    view = app.extensions["semqa.searcher"].view
    assert view.dense.count == view.lexical.count == view.store.chunk_count
    listed = [d["id"] for d in client.get("/documents?limit=1000").get_json()["documents"]]
    live, _ = view.dense.live()
    assert sorted(live.tolist()) == sorted(view.store.chunk_ids_of(listed).tolist())


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        (AUTH, 200),
    ],
)
def test_writes_need_a_valid_key_and_nothing_changes_without_one(writable, headers, status):
    _, client, _ = writable
    before = client.get("/health").get_json()
    response = client.post("/documents", json={"documents": [MARS]}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/health").get_json() == before
        assert client.delete("/documents/001_c76768aa996baf89.txt", headers=headers).status_code == 401


def test_writes_are_forbidden_until_keys_are_configured(corpus_settings, searcher):
    client = create_app(corpus_settings, searcher=searcher).test_client()
    response = client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    assert response.status_code == 403 and "SEMQA_API_KEYS" in response.get_json()["error"]["message"]
    assert client.get("/documents").status_code == 200  # reads stay open by default


def test_reads_can_require_a_key(corpus_settings, searcher):
    settings = corpus_settings.model_copy(update={"api_keys": KEY, "read_requires_key": True})
    client = create_app(settings, searcher=searcher).test_client()
    assert client.post("/ask", json={"question": "x"}).status_code == 401
    assert client.get("/documents").status_code == 401
    assert client.post("/ask", json={"question": "x"}, headers=AUTH).status_code == 200
    assert client.get("/health").status_code == 200  # probes stay open


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "documents"),
        ({"documents": []}, "documents"),
        ({"documents": [MARS] * 4}, "documents"),  # over max_upsert_documents=3
        ({"documents": [{"id": "x"}]}, "text"),
        ({"documents": [{"id": "", "text": "t"}]}, "id"),
        ({"documents": [{"id": "x", "text": "   "}]}, "text"),
        ({"documents": [{"id": "x", "text": "t", "extra": 1}]}, "extra"),
        ({"documents": [{"id": "x", "text": "t", "metadata": []}]}, "metadata"),
    ],
)
def test_bad_upserts_are_400_and_change_nothing(writable, body, mentions):
    _, client, _ = writable
    before = client.get("/health").get_json()
    response = client.post("/documents", json=body, headers=AUTH)
    assert response.status_code == 400 and mentions in response.get_json()["error"]["message"]
    assert client.get("/health").get_json() == before


def test_document_size_and_body_limits(writable):
    app, client, _ = writable
    huge = {"documents": [{"id": "big", "text": "word " * 300_000}]}  # 1.5 MB of text, over 1M chars
    assert client.post("/documents", json=huge, headers=AUTH).status_code == 400
    # Writes have their own body limit, larger than /ask's 64 KiB: a 200 KB upsert is fine ...
    medium = {"documents": [{"id": "medium", "text": "word " * 40_000}]}
    assert client.post("/documents", json=medium, headers=AUTH).status_code == 200
    assert client.post("/ask", json={"question": "x" * 70_000}).status_code == 413
    # ... and past it the answer is 413 too.
    app.extensions["semqa.searcher"]
    oversized = b'{"documents": [{"id": "x", "text": "' + b"a" * (17 * 1024 * 1024) + b'"}]}'
    response = client.post("/documents", data=oversized, content_type="application/json", headers=AUTH)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "query", ["limit=5_0", "limit=%D9%A1%D9%A2", "offset=+5", "limit=%205", "document_id=x"]
)
def test_the_listing_takes_its_parameters_as_written(writable, query):
    # found by probing: "5_0" was read as 50 and Arabic-Indic digits as numbers (Python's int), and an
    # unknown parameter was ignored: ?document_id=x listed every document
    _, client, _ = writable
    refused = client.get(f"/documents?{query}")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["message"].startswith("invalid request: query.")
    assert client.get("/documents?limit=2&offset=1").get_json()["limit"] == 2


def test_ids_are_data_never_paths(writable, tmp_path):
    _, client, _ = writable
    files_before = sorted(p for p in tmp_path.rglob("*") if "generations" not in p.parts)
    evil = {"id": "../../../../tmp/semqa-owned", "text": "Traversal attempt."}
    assert client.post("/documents", json={"documents": [evil]}, headers=AUTH).status_code == 200
    assert client.get("/documents/../../../../tmp/semqa-owned").get_json()["text"] == "Traversal attempt."
    assert client.delete("/documents/../../../../tmp/semqa-owned", headers=AUTH).status_code == 200
    assert not Path("/tmp/semqa-owned").exists()
    created = {p for p in tmp_path.rglob("*") if "generations" not in p.parts} - set(files_before)
    # only the store's write-ahead log and the lock: no file named after an id
    assert {p.name for p in created} <= {".lock", "store.sqlite-wal", "store.sqlite-shm"}


def test_documents_over_http_with_two_workers(tmp_path, corpus_build, corpus_settings):
    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": KEY,
        "SEMQA_RELOAD_INTERVAL": "0.2",
    }
    with running_server(["--index-dir", str(index_dir), "--workers", "2"], env=env) as server:
        assert (
            requests.post(server.url + "/documents", json={"documents": [MARS]}, timeout=10).status_code
            == 401
        )
        response = requests.post(
            server.url + "/documents", json={"documents": [MARS]}, headers=AUTH, timeout=60
        )
        assert response.status_code == 200
        version = response.json()["index_version"]
        time.sleep(1.0)  # every worker serves a committed version within a second
        for _ in range(12):  # requests spread over both workers
            assert requests.get(server.url + "/health", timeout=10).json()["index_version"] == version
            top = requests.post(
                server.url + "/ask", json={"question": "When is the Mars base built?", "top_k": 1}, timeout=30
            )
            assert top.json()["passages"][0]["document_id"] == "notes/mars.md"
        assert (
            requests.delete(server.url + "/documents/notes/mars.md", headers=AUTH, timeout=60).status_code
            == 200
        )
        assert requests.get(server.url + "/documents/notes/mars.md", timeout=10).status_code == 404


def test_deleting_every_document_leaves_an_empty_index_that_answers(writable):
    _, client, _ = writable
    ids = [d["id"] for d in client.get("/documents?limit=1000").get_json()["documents"]]
    for doc_id in ids:
        assert client.delete(f"/documents/{doc_id}", headers=AUTH).status_code == 200
    assert client.get("/health").get_json()["documents"] == 0
    for mode in ("hybrid", "dense", "lexical"):
        body = client.post("/ask", json={"question": "space", "mode": mode}).get_json()
        assert body["passages"] == [] and body["answer"] is None
    assert client.post("/documents", json={"documents": [MARS]}, headers=AUTH).status_code == 200
    assert ask(client, "When will the Mars base be built?")[0]["document_id"] == "notes/mars.md"


@pytest.mark.parametrize("factory", ["HNSW16", "IVF1,Flat"])
def test_approximate_indexes_take_replacements_and_deletes(tmp_path, encoder, cache_dir, factory):
    from indexer import ChunkingConfig, build_index

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Tiangong is the space station.")
    (corpus / "b.txt").write_text("The Long March 5 rocket launches from Wenchang.")
    build_index(
        [corpus],
        index_dir=tmp_path / "index",
        encoder=encoder,
        chunking=ChunkingConfig(),
        faiss_factory=factory,
    )
    settings = Settings(
        index_dir=tmp_path / "index", cache_dir=cache_dir, api_keys=KEY, reload_interval=0, quiet=True
    )
    client = create_app(settings, searcher=load_searcher(settings, encoder)).test_client()
    assert client.post("/documents", json={"documents": [MARS]}, headers=AUTH).status_code == 200
    moved = {**MARS, "text": "The Mars base was moved to Hellas Planitia."}
    assert client.post("/documents", json={"documents": [moved]}, headers=AUTH).status_code == 200
    assert client.delete("/documents/a.txt", headers=AUTH).status_code == 200
    questions = {
        "Where is the Mars base now?": "notes/mars.md",
        "Which rocket launches from Wenchang?": "b.txt",
    }
    for mode in ("dense", "hybrid"):
        for question, expected in questions.items():
            body = client.post("/ask", json={"question": question, "mode": mode, "top_k": 3}).get_json()
            assert body["passages"][0]["document_id"] == expected
            assert "a.txt" not in {p["document_id"] for p in body["passages"]}
        texts = {
            p["text"]
            for p in client.post("/ask", json={"question": "Mars base", "mode": mode}).get_json()["passages"]
        }
        assert MARS["text"] not in texts and moved["text"] in texts


def test_a_searcher_never_goes_back_to_an_older_view(writable, encoder):
    app, client, _ = writable
    searcher = app.extensions["semqa.searcher"]
    old = searcher.view
    client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    new = searcher.view
    assert new.name > old.name and new.seq == old.seq + 1
    assert searcher.reader.refresh() is False and searcher.view is new


def test_a_write_that_changes_nothing_commits_nothing(writable):
    from indexer.store import Store

    _, client, index_dir = writable
    first = client.post("/documents", json={"documents": [MARS]}, headers=AUTH).get_json()
    latest = Store(index_dir / "store.sqlite").latest()
    again = client.post("/documents", json={"documents": [MARS]}, headers=AUTH)
    assert again.status_code == 200
    assert again.get_json() == {**first, "embedded": 0}  # same version, acknowledged as written
    assert Store(index_dir / "store.sqlite").latest() == latest
    changed = client.post(
        "/documents", json={"documents": [{**MARS, "metadata": {"team": "b"}}]}, headers=AUTH
    ).get_json()
    assert changed["index_version"] != first["index_version"]  # metadata alone is a change
    assert client.get("/documents/notes/mars.md").get_json()["metadata"] == {"team": "b"}
    for change in ({"metadata": {"team": True}}, {"metadata": {"team": 1}}, {"title": "Mars base, phase 2"}):
        before = client.get("/health").get_json()["index_version"]
        answer = client.post("/documents", json={"documents": [{**MARS, **change}]}, headers=AUTH).get_json()
        assert answer["index_version"] != before
        stored = client.get("/documents/notes/mars.md").get_json()
        # Compared as JSON: true is not 1 (which Python's == would call equal), so each is a change.
        assert json.dumps({k: stored[k] for k in change}) == json.dumps(change)


def test_a_file_document_written_again_through_the_api_is_a_change(writable):
    _, client, _ = writable
    document = client.get("/documents?limit=1").get_json()["documents"][0]["id"]
    stored = client.get(f"/documents/{document}").get_json()
    same = {k: stored[k] for k in ("id", "title", "text", "metadata")}
    before = client.get("/health").get_json()["index_version"]
    answer = client.post("/documents", json={"documents": [same]}, headers=AUTH).get_json()
    assert answer["index_version"] != before  # it now belongs to the API (kept apart from file builds)
    again = client.post("/documents", json={"documents": [same]}, headers=AUTH).get_json()
    assert again["index_version"] == answer["index_version"]  # and from then on it is unchanged


def test_a_delete_that_lost_a_race_commits_nothing(writable):
    from indexer.store import Delete, Store
    from indexer.writer import Writer

    _, _, index_dir = writable
    store = Store(index_dir / "store.sqlite")
    latest = store.latest()
    committed = Writer(index_dir, store).submit([Delete("deleted/by-someone-else.md")], store.config)
    assert committed.outcomes == ["missing"] and committed.seq is None and store.latest() == latest


def test_many_concurrent_writers_over_http_lose_nothing(tmp_path, corpus_build, corpus_settings):
    """Plain clients, no retries: every write answered 200, every acknowledged write there, every delete gone."""
    import threading

    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": KEY,
        "SEMQA_RATE_LIMIT": "",
        "SEMQA_WRITE_RATE_LIMIT": "",
    }
    statuses: list[int] = []
    with running_server(["--index-dir", str(index_dir), "--workers", "2"], env=env) as server:

        def client(number: int) -> None:
            for i in range(6):
                doc = {
                    "id": f"c{number}/{i}",
                    "text": f"Client {number} wrote note {i} about Tianhe module {i}.",
                }
                statuses.append(
                    requests.post(
                        server.url + "/documents", json={"documents": [doc]}, headers=AUTH, timeout=60
                    ).status_code
                )
                if i % 2:
                    statuses.append(
                        requests.delete(
                            f"{server.url}/documents/c{number}/{i - 1}", headers=AUTH, timeout=60
                        ).status_code
                    )
                question = {"question": f"What did client {number} write?", "top_k": 3}
                statuses.append(requests.post(server.url + "/ask", json=question, timeout=60).status_code)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listed = {
            d["id"]
            for d in requests.get(server.url + "/documents?limit=1000", timeout=10).json()["documents"]
        }
    assert set(statuses) == {200}, [s for s in statuses if s != 200]
    expected = {f"c{n}/{i}" for n in range(8) for i in range(6) if i % 2}
    assert {d for d in listed if d.startswith("c")} == expected
