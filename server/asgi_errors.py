"""Error answers of ``semqa mcp --http`` that every client can read, as the HTTP API's are (``server.drain``,
``server.errors``):

- In JSON. What the MCP SDK and Starlette answer in plain text (a body over the SDK's 4 MiB limit: 413
  "Request body too large"; a body not declared JSON: 400; an unknown path: 404) is sent in the API's error
  shape instead. Answers that are JSON already (the SDK's JSON-RPC errors, its 401 ``invalid_token``, the
  rate limit's 429) pass as they are.
- After the body. The SDK answers a body over its limit without reading it, and the server then closes
  the connection while the client is still sending: Python's ``urllib`` got ``Broken pipe`` instead of the
  413. Before an error answer goes out, what is left of the request body is read and thrown away, within
  ``max_bytes`` and ``seconds`` (``SEMQA_MAX_DISCARD_BYTES``, ``SEMQA_MAX_DISCARD_SECONDS``), as RFC 9112
  section 9.6 asks.
"""

from __future__ import annotations

import asyncio
import json
import time

from mcp.server.streamable_http_manager import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.responses import error_body

HINTS = {
    404: "the MCP endpoint is /mcp (and the probe GET /health)",
    413: f"send at most {DEFAULT_MAX_REQUEST_BODY_SIZE // 2**20} MiB",
}


class ReadableErrors:
    """ASGI middleware: an error answer (status 400 or more) is sent once the request body is read, and
    in JSON (``error_body(status, its text)``) when it is not, its other headers (``Retry-After``,
    ``WWW-Authenticate``...) kept."""

    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A client that sent "Expect: 100-continue" waits to be told to send its body: reading it would
        # say so (uvicorn answers 100 at the first read), and an error answer needs no body.
        expects = any(k == b"expect" and v.lower() == b"100-continue" for k, v in scope.get("headers", []))
        body_done = expects
        held: Message | None = None  # the start of an error answer in plain text, being rewritten
        text = b""

        async def watched_receive() -> Message:
            nonlocal body_done
            message = await receive()
            # once the app reads, the client sends: what it leaves unread is to be read
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def rewrite(message: Message) -> None:
            nonlocal held, text, body_done
            if message["type"] == "http.response.start" and message["status"] >= 400:
                if not body_done:
                    await self._discard(receive)
                    body_done = True
                if "json" not in MutableHeaders(raw=list(message.get("headers", []))).get("content-type", ""):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                text += message.get("body", b"")
                if not message.get("more_body", False):
                    start, held = held, None
                    await self._send_json(send, start, text)
                return
            await send(message)

        await self.app(scope, watched_receive, rewrite)
        if held is not None:  # an error start with no body after it
            await self._send_json(send, held, text)

    async def _discard(self, receive: Receive) -> None:
        """Read what is left of the request body, within the bounds (a client that sends more, or stalls,
        gets the answer and a closed connection, as before)."""
        deadline = time.monotonic() + self.seconds
        discarded = 0
        while discarded <= self.max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                return
            discarded += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    @staticmethod
    async def _send_json(send: Send, start: Message, text: bytes) -> None:
        status = start["status"]
        message = text.decode("utf-8", "replace").strip().lower() or str(status)
        if status in HINTS:
            message = f"{message}: {HINTS[status]}"
        body = json.dumps(error_body(status, message)).encode()
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(body))
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body})
