"""Limits that hold on every route the README names: the per-client rate limits and the body limits."""

from __future__ import annotations

import pytest
from apiflask import abort

from server.app import create_app

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
