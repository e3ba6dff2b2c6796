"""API keys on the HTTP API: ``Authorization: Bearer <key>``, with the scopes of ``server.keys``.

Safe by default: with no key configured, every write answers 403 and says how to enable writes. A
preflight (``OPTIONS``) never needs a key: browsers send it without credentials, and it returns no data.
"""

from __future__ import annotations

from apiflask import abort
from flask import request

from server.keys import KeyRing, Scope

WRITE_KEYS_HINT = "SEMQA_API_KEYS, or a 'write <key>' line in SEMQA_API_KEY_FILE"


class Access:
    """Who may read and write: the keys and whether reads need one, from settings."""

    def __init__(self, keys: KeyRing, read_requires_key: bool) -> None:
        self.keys = keys
        self.read_requires_key = read_requires_key

    def read(self, action: str) -> None:
        if self.read_requires_key:
            self.require("read", action)

    def write(self, action: str) -> None:
        self.require("write", action)

    def require(self, scope: Scope, action: str) -> None:
        """Abort unless the request carries a key with ``scope``: 403 when no such key is configured or
        the key has only the read scope, 401 when the key is missing or unknown."""
        if request.method == "OPTIONS":
            return
        if not self.keys.configured(scope):
            where = (
                WRITE_KEYS_HINT
                if scope == "write"
                else "SEMQA_API_KEYS, SEMQA_READ_KEYS or SEMQA_API_KEY_FILE"
            )
            abort(
                403,
                f"{action} is disabled: no API key with the {scope} scope is configured; set {where} and "
                "send Authorization: Bearer <key>",
            )
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            abort(401, "send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
        granted = self.keys.scope_of(presented)
        if granted is None:
            abort(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        if scope == "write" and granted != "write":
            abort(
                403,
                f"{action} needs a key with the write scope; this key has the read scope only ({WRITE_KEYS_HINT} "
                "holds write keys)",
            )
