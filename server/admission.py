"""Requests take turns in the app: a few at once, first come, first in; writes and probes need no turn.

A worker has many threads (``SEMQA_THREADS``, 64) because a write holds its thread while its passages wait
for the encoder, and questions must not queue behind writes for a thread. But questions are CPU work: more
of them in the app at once than there are cores only share the cores and the interpreter's lock worse.
So every request but a write (``/documents``) or a probe waits here for one of as many turns as the
worker's share of the cores, in arrival order. Measured with eight clients asking at once (BENCHMARKS.md
"Questions while documents are written"): 32 threads without turns answered 10-15% fewer questions a
second than 4 threads did, with a p99 a third higher; with turns, the p99 is 4 threads' and the questions
a second within the runs' noise of it. The turns are handed over in order because ``threading.Semaphore``
lets a newly arrived thread take a freed turn before the threads already waiting for it (a semaphore
around the search, tried first, raised the p99 further).
"""

from __future__ import annotations

import collections
import io
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from semqa.settings import Settings
from server.drain import WSGIApp, body_framing, read_chunked
from server.stalls import BodyTimedOut

# environ key: when the request reached the app (time.perf_counter), before its body and its turn, so that
# the access log and the latency metrics count the wait for a turn as the client does
ARRIVED = "semqa.arrived"


def turns_for(settings: Settings) -> int:
    """How many questions a process runs at once: its share of the cores (``torch_threads`` under serve)."""
    return settings.torch_threads or os.cpu_count() or 1


class Turns:
    """A semaphore that hands each freed turn to its longest waiter."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()
        self._waiting: collections.deque[threading.Lock] = collections.deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        gate.acquire()  # released by the request whose turn this becomes

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()  # the turn passes on, never counted free in between
            else:
                self._free += 1


class TakeTurns:
    """WSGI middleware: every request whose path does not start with one of ``exempt`` runs in a turn, its
    body read before it (up to ``buffer_bytes``, what the app accepts), so that a client sending its body
    slowly holds a thread, not one of the few turns."""

    def __init__(self, app: WSGIApp, at_once: int, exempt: tuple[str, ...], buffer_bytes: int) -> None:
        self.app = app
        self.turns = Turns(at_once)
        self.exempt = exempt
        self.buffer_bytes = buffer_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ[ARRIVED] = time.perf_counter()
        if environ.get("PATH_INFO", "").startswith(self.exempt):
            return self.app(environ, start_response)
        self._read_body(environ)
        with self.turns:
            return self.app(environ, start_response)

    def _read_body(self, environ: dict[str, Any]) -> None:
        """The body, read now: whole when it is declared at most ``buffer_bytes`` long or sent chunked and
        no longer (then handed on as a declared one), else left to the app (which refuses it unread: 413).
        A chunked body longer than that keeps its first part read here in front of the rest, for the app
        to refuse as it would."""
        framing = body_framing(environ)
        if framing is None:
            return  # the app refuses it
        declared, chunked = framing
        try:
            # a client that stops sending holds its thread here for SEMQA_CLIENT_TIMEOUT (server.runner)
            if chunked and not declared:
                read_chunked(environ, self.buffer_bytes)
            elif 0 < declared <= self.buffer_bytes:
                # a short body is the app's to refuse (400)
                environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(declared))
        except BodyTimedOut:
            return  # the app, reading it again, answers 408
        except OSError:  # the client went away
            environ["wsgi.input"] = io.BytesIO(b"")
