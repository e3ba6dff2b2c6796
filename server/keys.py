"""API keys and their scopes, shared by the HTTP API and MCP (no web framework).

Two scopes: ``read`` (ask, query, list and read documents, metrics, MCP) and ``write`` (upsert and delete,
and everything ``read`` allows). Keys come from ``SEMQA_API_KEYS`` (write), ``SEMQA_READ_KEYS`` (read) and
the key file, whose lines are ``write <key>``, ``read <key>`` or a bare ``<key>`` (write, as before scopes
existed); blank lines are skipped, and so is a line's rest from a word starting with ``#`` (a comment).

The key file is re-read when it changes (its modification time, size or inode, one ``stat`` per check),
so revoking a key needs no restart. A file that cannot be read or parsed any more is logged and the keys
last read from it stay in force; at start-up the same file is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from semqa.settings import Settings

log = logging.getLogger(__name__)

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
_RANK = {"read": 1, "write": 2}  # a write key may also read


class KeyFileError(ValueError):
    """The key file cannot be read or has a line that is not ``[read|write] <key>``."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_file(text: str, path: Path) -> list[tuple[str, Scope]]:
    """The ``(key, scope)`` pairs of a key file's text; ``path`` is for the error message only."""
    keys: list[tuple[str, Scope]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        words = words[: next((i for i, w in enumerate(words) if w.startswith("#")), len(words))]  # comment
        if not words:
            continue
        if len(words) == 1 and words[0] not in SCOPES:  # a scope alone is a key forgotten
            keys.append((words[0], "write"))
        elif len(words) == 2 and words[0] in SCOPES:
            keys.append((words[1], words[0]))  # type: ignore[arg-type]
        else:
            raise KeyFileError(
                f"{path}, line {number}: expected '<key>', 'read <key>' or 'write <key>' "
                f"(a key is one word; a comment starts with '#'), not {len(words)} words starting with "
                f"{words[0][:12]!r}"
            )
    return keys


@dataclass(frozen=True)
class _Keys:
    digests: tuple[tuple[bytes, int], ...]  # (sha256 of the key, rank of its scope)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, Scope]]) -> _Keys:
        return cls(tuple((_digest(key), _RANK[scope]) for key, scope in pairs if key))


def _comma_separated(text: str, scope: Scope) -> list[tuple[str, Scope]]:
    return [(key.strip(), scope) for key in text.split(",") if key.strip()]


class KeyRing:
    """Every configured key with its scope; the key file's keys follow the file as it changes."""

    def __init__(self, fixed: Iterable[tuple[str, Scope]], key_file: Path | None = None) -> None:
        self._fixed = list(fixed)
        self._file = key_file
        self._lock = threading.Lock()
        self._signature: tuple[int, ...] | None = None
        self._failed: tuple[int, ...] | None = None  # the file state last logged as unreadable
        self._keys = _Keys.of(self._fixed)
        if key_file is not None:
            self._keys = self._load(self._stat())  # a bad file at start-up is an error, not a log line

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        fixed = _comma_separated(settings.api_keys, "write") + _comma_separated(settings.read_keys, "read")
        return cls(fixed, settings.api_key_file)

    def _stat(self) -> tuple[int, ...]:
        try:
            st = os.stat(self._file)  # type: ignore[arg-type]
        except OSError as exc:
            raise KeyFileError(f"cannot read the key file {self._file}: {exc.strerror}") from exc
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)

    def _load(self, signature: tuple[int, ...]) -> _Keys:
        assert self._file is not None
        try:
            text = self._file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the key file {self._file}: {exc}") from exc
        keys = _Keys.of(self._fixed + parse_key_file(text, self._file))
        self._signature = signature
        return keys

    def _current(self) -> _Keys:
        if self._file is None:
            return self._keys
        signature: tuple[int, ...] = ()  # () while the file cannot even be stat'ed
        try:
            signature = self._stat()
            if signature in (self._signature, self._failed):
                return self._keys
            with self._lock:
                if signature != self._signature:
                    self._keys = self._load(signature)
                    self._failed = None
                    log.info("API keys re-read from %s", self._file)
        except KeyFileError as exc:
            if signature != self._failed:  # logged once per state of the file, not once per request
                self._failed = signature
                log.error("%s; the keys read from it before stay in force", exc)
        return self._keys

    def configured(self, scope: Scope) -> bool:
        """Whether any key grants ``scope``."""
        return any(rank >= _RANK[scope] for _, rank in self._current().digests)

    def scope_of(self, presented: str) -> Scope | None:
        """The widest scope ``presented`` (surrounding white space ignored) grants; None for no key."""
        # Digests of equal length, compared with every key: the time taken tells neither which key
        # matched nor how long the keys are.
        digest = _digest(presented.strip())
        best = 0
        for key, rank in self._current().digests:
            best = max(best, rank * hmac.compare_digest(digest, key))
        return SCOPES[best - 1] if best else None
