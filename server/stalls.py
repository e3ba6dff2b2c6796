"""A request body that stops arriving is answered 408 Request Timeout, and nothing more is read from its client.

Under ``semqa serve`` a connection's reads time out after ``SEMQA_CLIENT_TIMEOUT`` seconds of silence
(``server.runner.worker_class``). Without this middleware such a timeout while the app reads a body would
reach werkzeug as an ``OSError``, which it takes for a client that went away (400, "client disconnected"),
or the turns' read-ahead (``server.admission``) as an empty body. Here it is answered for what it is, a 408
in the one error shape; and the connection's reading side is shut at once, so that neither the unread-body
discard (``server.drain``) nor gunicorn's own drain before the next request waits for that client again:
the answer is sent and the connection closed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from server.drain import WSGIApp


class BodyTimedOut(Exception):
    """Answered 408 by the app (server.errors)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body stopped arriving: nothing came for {seconds:g} seconds; send the request again"
        )


class _Watched:
    """A WSGI input stream whose read timeout becomes ``BodyTimedOut``, as does every read after it."""

    def __init__(self, stream: Any, sock: socket.socket | None, seconds: float) -> None:
        self._stream = stream
        self._sock = sock
        self._seconds = seconds
        self._timed_out = False

    def read(self, size: int = -1) -> bytes:
        return self._watch(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._watch(self._stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._watch(self._stream.readlines, hint)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _watch(self, method: Callable[[int], Any], size: int) -> Any:
        if self._timed_out:
            raise BodyTimedOut(self._seconds)
        try:
            return method(size)
        except TimeoutError:
            self._timed_out = True
            if self._sock is not None:
                with contextlib.suppress(OSError):  # already gone
                    self._sock.shutdown(socket.SHUT_RD)
            raise BodyTimedOut(self._seconds) from None


class AnswerStalledBodies:
    """WSGI middleware: each request's body is read through ``_Watched``."""

    def __init__(self, app: WSGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"] = _Watched(environ["wsgi.input"], environ.get("gunicorn.socket"), self.seconds)
        return self.app(environ, start_response)
