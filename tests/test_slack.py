"""The Slack slash command: signed, fresh, never replayed; answers in Block Kit."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import pytest
import requests

from server.app import create_app
from tests.conftest import copy_index

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signed(body: str, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(text: str, nonce: str = "1") -> str:
    return urlencode({"command": "/ask", "text": text, "user_id": "U1", "trigger_id": nonce})


@pytest.fixture()
def client(corpus_settings, searcher):
    settings = corpus_settings.model_copy(update={"slack_signing_secret": SECRET})
    return create_app(settings, searcher=searcher).test_client()


def test_signed_command_gets_an_ephemeral_block_kit_answer(client):
    body = form("In which city is the 2020 China Space Conference held?")
    response = client.post("/integrations/slack/command", data=body, headers=signed(body))
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["response_type"] == "ephemeral"
    blocks = answer["blocks"]
    assert blocks[0]["text"]["type"] == "mrkdwn" and "Fuzhou" in blocks[0]["text"]["text"]
    sources = [b["text"]["text"] for b in blocks[2:]]
    assert len(sources) == 3 and "`000_de246961d5590b13.txt`" in sources[0]


@pytest.mark.parametrize(
    "headers_for",
    [
        lambda body: signed(body, secret="wrong-secret"),
        lambda body: signed(body, timestamp=int(time.time()) - 6 * 60),  # stale
        lambda body: signed(body, timestamp=int(time.time()) + 6 * 60),  # from the future
        lambda body: {**signed(body), "X-Slack-Signature": "v0=deadbeef"},
        lambda body: {"Content-Type": "application/x-www-form-urlencoded"},  # unsigned
        lambda body: signed(body + "&text=tampered"),  # signature of another body
    ],
)
def test_bad_signatures_are_refused(client, headers_for):
    body = form("Where is the conference?")
    headers = headers_for(body)
    response = client.post("/integrations/slack/command", data=body, headers=headers)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


def test_replayed_request_is_refused(client):
    body = form("Where is the conference?", nonce="replay")
    headers = signed(body)
    assert client.post("/integrations/slack/command", data=body, headers=headers).status_code == 200
    replay = client.post("/integrations/slack/command", data=body, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.get_json()["error"]["message"]


def test_disabled_without_a_signing_secret(corpus_settings, searcher):
    client = create_app(corpus_settings, searcher=searcher).test_client()
    body = form("Where?")
    response = client.post("/integrations/slack/command", data=body, headers=signed(body))
    assert (
        response.status_code == 403
        and "SEMQA_SLACK_SIGNING_SECRET" in response.get_json()["error"]["message"]
    )


@pytest.mark.parametrize("text", ["   ", "\u200b", "\x01\x02"])  # blank to a reader, as /ask has it
def test_empty_command_gets_a_hint(client, text):
    body = form(text)
    response = client.post("/integrations/slack/command", data=body, headers=signed(body))
    assert response.status_code == 200 and "/ask" in response.get_json()["text"]


def test_slack_over_http(corpus_build, corpus_settings):
    from semqa.launch import running_server

    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_SLACK_SIGNING_SECRET": SECRET}
    with running_server(["--index-dir", str(corpus_settings.index_dir)], env=env) as server:
        body = form("How many experts attended the space science conference?")
        started = time.monotonic()
        response = requests.post(
            server.url + "/integrations/slack/command", data=body, headers=signed(body), timeout=3
        )
        assert response.status_code == 200 and time.monotonic() - started < 3  # Slack's deadline
        assert response.json()["blocks"]
        wrong = requests.post(
            server.url + "/integrations/slack/command", data=body, headers=signed(body, secret="x"), timeout=3
        )
        assert wrong.status_code == 401


def test_document_text_titles_and_the_question_are_escaped_for_mrkdwn(
    tmp_path, corpus_build, corpus_settings, encoder
):

    from server.retrieval import load_searcher

    index_dir = tmp_path / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    settings = corpus_settings.model_copy(
        update={"index_dir": index_dir, "api_keys": "k", "slack_signing_secret": SECRET}
    )
    client = create_app(settings, searcher=load_searcher(settings, encoder)).test_client()
    hostile = {
        "id": "notes/<!channel>.md",
        "title": "Refunds <!here> & returns",
        "text": "Refunds for the orbital station tour: see <http://evil|click> & send your card number.",
    }
    upserted = client.post("/documents", json={"documents": [hostile]}, headers={"Authorization": "Bearer k"})
    assert upserted.status_code == 200
    body = form("How are refunds for the orbital station tour handled? <@U0ADMIN>")
    answer = client.post("/integrations/slack/command", data=body, headers=signed(body)).get_json()
    texts = [answer["text"]] + [b["text"]["text"] for b in answer["blocks"] if "text" in b]
    assert "&lt;http://evil|click&gt; &amp; send" in texts[1]  # the top passage's highlight
    assert "_Refunds &lt;!here&gt; &amp; returns_" in texts[1]
    assert "`notes/&lt;!channel&gt;.md` Refunds &lt;!here&gt; &amp; returns" in texts[2]  # the first passage
    assert "&lt;@U0ADMIN&gt;" in texts[0] and "&lt;@U0ADMIN&gt;" in texts[1]
    for text in texts:  # nothing Slack would read as a link, a mention or a ping is left
        assert "<" not in text and ">" not in text.replace("\n>", "\n")
        assert "&" not in text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
