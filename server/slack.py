"""``POST /integrations/slack/command``: answers a Slack slash command (``/ask <question>``).

Slack signs each request: ``X-Slack-Signature`` is ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{raw body}``
with the app's signing secret. A request with a bad signature, a timestamp more than five minutes away,
or a signature already seen (a replay; remembered for those five minutes, per worker) is refused with
401. Disabled (403) unless ``SEMQA_SLACK_SIGNING_SECRET`` is set. The answer is Block Kit ``mrkdwn``,
ephemeral by default (only the asker sees it). Every text taken from a document or the question is
escaped first, so it shows as written: never as a link, a mention or an ``@channel``.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from typing import Any

from apiflask import APIBlueprint, abort
from flask import request

from semqa.settings import Settings
from server.retrieval import Searcher
from server.text_input import blank

MAX_AGE = 5 * 60  # seconds
PASSAGES = 3
QUOTE_CHARS = 300


class _SeenSignatures:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, signature: str, now: float) -> bool:
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t < MAX_AGE}
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """True when ``signature`` is Slack's for this body and timestamp, and the timestamp is recent."""
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return False
    if age > MAX_AGE:
        return False
    expected = (
        "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected.encode(), signature.encode())


def escape(text: str) -> str:
    """``text`` for Slack's mrkdwn: ``&``, ``<`` and ``>`` as the entities Slack documents
    (https://api.slack.com/reference/surfaces/formatting#escaping), since ``<...>`` is a link, a mention
    or a channel ping there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(question: str, passages: list[Any]) -> list[dict[str, Any]]:
    asked = escape(question)
    if not passages:
        return [{"type": "section", "text": {"type": "mrkdwn", "text": f"No passage answers _{asked}_."}}]
    top = passages[0]
    answer = escape(top.highlight.text if top.highlight else top.chunk.text[:QUOTE_CHARS])
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{asked}*\n>{answer}\n_{escape(top.chunk.title or top.chunk.document_id)}_",
            },
        },
        {"type": "divider"},
    ]
    for passage in passages:
        text = passage.chunk.text.replace("\n", " ")
        if len(text) > QUOTE_CHARS:  # cut before escaping, so no entity is cut in half
            text = text[:QUOTE_CHARS].rsplit(" ", 1)[0] + " …"
        chunk = passage.chunk
        source = f"`{escape(chunk.document_id)}` {escape(chunk.title)} (score {passage.score:.2f})"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{escape(text)}\n{source}"}})
    return blocks


def create_slack_api(settings: Settings, searcher: Searcher) -> APIBlueprint:
    api = APIBlueprint("slack", __name__)
    seen = _SeenSignatures()

    @api.post("/integrations/slack/command")
    @api.doc(
        summary="Slack slash command",
        description="Form-encoded as Slack sends it; signed with X-Slack-Signature and X-Slack-Request-Timestamp.",
    )
    def command() -> dict[str, Any]:
        secret = settings.slack_signing_secret
        if not secret:
            abort(
                403,
                "the Slack integration is disabled: set SEMQA_SLACK_SIGNING_SECRET to the app's signing secret",
            )
        body = request.get_data(cache=True)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        now = time.time()
        if not verify(secret, timestamp, body, signature, now):
            abort(401, "bad or stale Slack signature")
        if not seen.first_time(signature, now):
            abort(401, "this Slack request was already answered (replay)")
        question = request.form.get("text", "").strip()[: settings.max_question_chars]
        if blank(question):
            return {
                "response_type": "ephemeral",
                "text": "Ask a question after the command, e.g. `/ask Where is the conference held?`",
            }
        passages = searcher.search(question, PASSAGES)
        return {"response_type": "ephemeral", "text": escape(question), "blocks": _blocks(question, passages)}

    return api
