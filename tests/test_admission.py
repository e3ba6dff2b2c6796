"""Turns in the app: handed over in arrival order; writes and probes take none."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from server.admission import TakeTurns, Turns


def _until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_freed_turn_goes_to_the_longest_waiter_not_to_a_newcomer():
    turns = Turns(1)
    entered: list[str] = []

    def take(name: str) -> None:
        with turns:
            entered.append(name)

    turns.__enter__()  # the one turn is taken
    waiters = []
    for queued, name in enumerate(("first", "second", "third"), start=1):
        waiter = threading.Thread(target=take, args=(name,))
        waiter.start()
        _until(lambda n=queued: len(turns._waiting) == n)  # queued before the next one comes
        waiters.append(waiter)
    turns.__exit__(None, None, None)  # handed to "first", never free in between...
    take("newcomer")  # ...so one arriving now waits behind the three
    for waiter in waiters:
        waiter.join(timeout=10)
    assert entered == ["first", "second", "third", "newcomer"]
    with turns:  # and the turn is free again once nobody waits
        pass


def test_writes_and_probes_run_without_a_turn_while_questions_wait_for_one():
    release = threading.Event()
    served: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/ask":
            release.wait(30)
        served.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    wrapped = TakeTurns(app, 1, ("/health", "/documents"), 1024)

    def call(path: str) -> threading.Thread:
        thread = threading.Thread(target=wrapped, args=({"PATH_INFO": path}, lambda *a: None))
        thread.start()
        return thread

    holder = call("/ask")  # holds the only turn until released
    _until(lambda: wrapped.turns._free == 0)
    waiting = call("/query")
    _until(lambda: len(wrapped.turns._waiting) == 1)  # /query waits for the turn
    for path in ("/health", "/documents"):
        call(path).join(timeout=10)
    assert served == ["/health", "/documents"]  # answered while /ask holds the turn and /query waits
    release.set()
    holder.join(timeout=10)
    waiting.join(timeout=10)
    assert served == ["/health", "/documents", "/ask", "/query"]


def test_a_body_sent_slowly_holds_no_turn():
    class SlowBody(io.RawIOBase):
        """A request body whose client has not sent it yet."""

        def __init__(self) -> None:
            self.sent = threading.Event()

        def read(self, size: int = -1) -> bytes:
            self.sent.wait(30)
            return b'{"question": "slow"}'

    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b""]

    wrapped = TakeTurns(app, 1, (), 1024)
    slow = SlowBody()
    sender = threading.Thread(
        target=wrapped,
        args=({"PATH_INFO": "/ask", "CONTENT_LENGTH": "20", "wsgi.input": slow}, lambda *a: None),
    )
    sender.start()
    quick = {"PATH_INFO": "/ask", "CONTENT_LENGTH": "18", "wsgi.input": io.BytesIO(b'{"question": "hi"}')}
    asker = threading.Thread(target=wrapped, args=(quick, lambda *a: None))
    asker.start()
    asker.join(timeout=10)
    assert seen == [b'{"question": "hi"}']  # answered while the other body is still on its way
    slow.sent.set()
    sender.join(timeout=10)
    assert seen == [b'{"question": "hi"}', b'{"question": "slow"}']
    # a body larger than the app accepts is left to the app, which refuses it unread (413)
    big = io.BytesIO(b"x" * 2048)
    environ = {"PATH_INFO": "/ask", "CONTENT_LENGTH": "2048", "wsgi.input": big}
    wrapped(environ, lambda *a: None)
    assert environ["wsgi.input"] is big


def test_an_app_that_raises_gives_its_turn_back():
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    wrapped = TakeTurns(app, 1, (), 1024)
    for _ in range(3):  # with the turn lost, the second call would wait for ever
        try:
            wrapped({"PATH_INFO": "/ask"}, lambda *a: None)
        except RuntimeError:
            pass
    assert wrapped.turns._free == 1


def test_a_chunked_body_is_read_ahead_whole_or_kept_whole_in_front_of_its_rest():
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        return [b""]

    wrapped = TakeTurns(app, 1, (), 1024)
    for body in (b"s" * 100, b"".join(bytes([i % 251]) for i in range(5000))):
        environ = {"PATH_INFO": "/ask", "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body)}
        wrapped(environ, lambda *a: None)
        assert seen[-1] == body  # nothing lost or reordered, whether it fitted or not
        # one that fits goes on as a body of declared length, which the app's JSON reading takes as it is
        # (server/json_body.py read a chunked body again); a longer one stays chunked, for the app's 413
        fits = len(body) <= 1024
        assert (environ.get("CONTENT_LENGTH"), "HTTP_TRANSFER_ENCODING" in environ) == (
            (str(len(body)), False) if fits else (None, True)
        )
