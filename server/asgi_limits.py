"""The HTTP API's per-client rate limit (``SEMQA_RATE_LIMIT``) for the ASGI app of ``semqa mcp --http``.

The same library as flask-limiter's (``limits``), the same fixed window kept in this process's memory,
the same answer: 429 with ``Retry-After`` and the API's error shape. Probes stay free.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import parse
from limits.strategies import FixedWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.limit_storage import SweptMemoryStorage
from server.responses import error_body

FREE_PATHS = ("/health",)  # the MCP app's probe, free as the HTTP API's probes are


class RateLimit:
    """ASGI middleware: at most ``limit`` (flask-limiter syntax, e.g. "600 per minute") per client address."""

    def __init__(self, app: ASGIApp, limit: str) -> None:
        self.app = app
        self.limit = limit
        self.item = parse(limit)
        self.limiter = FixedWindowRateLimiter(SweptMemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in FREE_PATHS:
            await self.app(scope, receive, send)
            return
        client: Any = scope.get("client") or ("unknown", 0)
        if self.limiter.hit(self.item, "mcp", client[0]):
            await self.app(scope, receive, send)
            return
        reset, _ = self.limiter.get_window_stats(self.item, "mcp", client[0])
        retry = max(1, math.ceil(reset - time.time()))
        response = JSONResponse(
            error_body(429, f"rate limit exceeded ({self.limit}); retry in {retry} s"),
            status_code=429,
            headers={"Retry-After": str(retry)},
        )
        await response(scope, receive, send)
