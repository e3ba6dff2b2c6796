"""Read and throw away what the app left unread of a request body, before the answer goes out.

An early answer (413 for a body over the limit, 401 for a missing key, 415, 429...) is made without
reading the body. If the server then closes the connection while the client is still sending, the client
gets ``Broken pipe`` or ``Connection reset by peer`` instead of the answer: Python's ``http.client``
(urllib) and urllib3 (requests) send the whole body before they read a byte. gunicorn itself discards at
most 64 KiB of an unread body before it closes. RFC 9112 section 9.6 asks a server that closes to read
what the client sends first; this middleware does so, within bounds:

- at most ``max_bytes`` per request: a body declared longer is not read at all (it gets its answer, then
  gunicorn closes the connection and such a client may see a reset), a chunked one is read up to there;
- for at most ``seconds`` per request (a socket timeout under gunicorn, so a client that stalls cannot
  keep the thread longer).

Throwing a body away costs the server what reading an accepted body of that size would, on the request's
own thread, and never more than the client sends: it amplifies nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def body_framing(environ: dict[str, Any]) -> tuple[int, bool] | None:
    """How a request's body comes: its declared length (0 if none) and whether it is sent chunked; None
    for a length that is not a number (the app refuses the request)."""
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    return declared, "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def read_chunked(environ: dict[str, Any], limit: int) -> bool:
    """Read a body sent chunked (no declared length) now, up to ``limit`` bytes. Within the limit it is handed
    on as a body of declared length (True), so that nothing reads it again; longer, what was read is put back
    in front of the rest (False), for the app to refuse and the discard to read on. Read errors (a timeout,
    a client gone) are the caller's."""
    stream = environ["wsgi.input"]
    body = stream.read(limit + 1)
    if len(body) > limit:
        environ["wsgi.input"] = io.BufferedReader(_Joined(body, stream))
        return False
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return True


class _Joined(io.RawIOBase):
    """``first``, then what ``rest`` still holds: a body whose start was read ahead."""

    def __init__(self, first: bytes, rest: Any) -> None:
        self._first = io.BytesIO(first)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._first.read(len(buffer)) or self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class DiscardUnreadBody:
    """WSGI middleware around ``app``: the unread rest of each request body is read and discarded."""

    def __init__(self, app: WSGIApp, max_bytes: int, seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self.app(environ, start_response)
        self.discard(environ)  # before the server sends the answer, which it does as it iterates
        return response

    def discard(self, environ: dict[str, Any]) -> None:
        """Read the rest of the body (usually nothing: the app read it all) within the bounds."""
        framing = body_framing(environ)
        if framing is None:
            return
        declared, chunked = framing
        if declared > self.max_bytes or (declared <= 0 and not chunked):
            return
        stream = environ["wsgi.input"]
        sock = environ.get("gunicorn.socket")
        prior = sock.gettimeout() if sock is not None else None
        deadline = time.monotonic() + self.seconds
        discarded = 0
        try:
            while discarded <= self.max_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if sock is not None:
                    sock.settimeout(remaining)
                data = stream.read(CHUNK)
                if not data:
                    return
                discarded += len(data)
            log.info("stopped discarding an unread request body after %d bytes", discarded)
        # A timeout, a client gone, a broken chunk (the server's own exception types): the server then
        # closes the connection, as it would have anyway.
        except Exception as exc:  # noqa: BLE001
            log.info("stopped discarding an unread request body after %d bytes: %r", discarded, exc)
        finally:
            if sock is not None:
                with contextlib.suppress(OSError):  # closed under us
                    sock.settimeout(prior)
