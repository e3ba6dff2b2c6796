"""API keys: ``Authorization: Bearer <key>``, compared in constant time.

Safe by default: with no key configured, every write answers 403 and says how to enable writes.
"""

from __future__ import annotations

import hashlib
import hmac

from apiflask import abort
from flask import request


class Access:
    """Who may read and write, from settings, with the keys read once per app."""

    def __init__(self, keys: list[str], read_requires_key: bool) -> None:
        self.keys = keys
        self.read_requires_key = read_requires_key

    def read(self, action: str) -> None:
        if self.read_requires_key:
            require_key(self.keys, action=action)

    def write(self, action: str) -> None:
        require_key(self.keys, action=action)


def require_key(keys: list[str], *, action: str) -> None:
    """Abort unless the request carries one of ``keys``. 403 when no key is configured, 401 otherwise."""
    if not keys:
        abort(
            403,
            f"{action} is disabled: no API key is configured; set SEMQA_API_KEYS (comma-separated) or "
            "SEMQA_API_KEY_FILE and send Authorization: Bearer <key>",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        abort(401, "send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
    if not key_matches(keys, presented):
        abort(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})


def key_matches(keys: list[str], presented: str) -> bool:
    """Whether ``presented`` (surrounding white space ignored) is one of ``keys``, in constant time."""
    # Digests of equal length, compared with every key: the time taken tells neither which key matched
    # nor how long the keys are.
    digest = hashlib.sha256(presented.strip().encode()).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return matched
