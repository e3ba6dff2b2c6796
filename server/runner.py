"""Run the app under gunicorn (threaded workers), the production WSGI server."""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from semqa.settings import Settings
from server.app import create_app
from server.responses import error_body


def threads_per_worker(settings: Settings) -> int:
    """Torch/FAISS threads per worker so that all workers together use each core once."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, (os.cpu_count() or 1) // settings.workers)


def _child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges leave the aggregated metrics."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def _post_worker_init(worker: Any) -> None:
    """A worker accepts connections only from here on: say so, with the version it serves."""
    version = worker.wsgi.extensions["semqa.searcher"].view.name
    worker.log.info("worker %s ready: serving index version %s", worker.pid, version)


class _IdleTimeoutSocket(socket.socket):
    """A connection whose blocking mode has a timeout of ``idle_timeout`` seconds per send or receive."""

    __slots__ = ()
    idle_timeout: float

    def setblocking(self, flag: bool) -> None:
        self.settimeout(self.idle_timeout if flag else 0.0)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Each ``send`` within the timeout, however long the whole takes: Python bounds a ``sendall`` as a
        whole by the socket's timeout, which cut a large answer to a client reading it steadily."""
        with memoryview(data) as view, view.cast("B") as octets:
            sent = 0
            while sent < len(octets):
                sent += self.send(octets[sent:], flags)


def idle_timeout_socket(seconds: float) -> type[_IdleTimeoutSocket]:
    """The socket class a worker's connections become: bounded by ``seconds`` per send or receive."""
    return type("IdleTimeoutSocket", (_IdleTimeoutSocket,), {"__slots__": (), "idle_timeout": seconds})


class _QuietTimeouts(logging.Filter):
    """gunicorn logs a connection it gave up on as an error with a traceback ("Socket error processing
    request."): a client's silence is one line at info."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg = "gave up a connection that sent or took nothing for %g s (SEMQA_CLIENT_TIMEOUT)"
            record.args = (self.seconds,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def _write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """``gunicorn.util.write_error``'s answer in the API's error shape (it closes the connection after)."""
    text = f"{reason.lower()}: {message}" if message else reason.lower()
    body = json.dumps(error_body(status, text)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def worker_class(client_timeout: float) -> type[ThreadWorker]:
    """gunicorn's threaded worker, with every connection's reads and writes bounded by ``client_timeout``.

    The threaded worker waits up to 5 s for a new connection's first bytes in one of its threads (here: not
    at all, see ``handle``), and once a request has begun it reads on a blocking socket without a timeout:
    a client that stops in the middle of its headers or its body holds its thread for as long as it keeps
    the connection open, and as many such clients as a worker has threads leave it none. The worker switches
    a connection between blocking (to read and answer a request) and non-blocking (kept alive in its
    poller); here blocking means blocking for at most ``client_timeout`` seconds at a time, as nginx's
    ``client_header_timeout`` and ``client_body_timeout`` do. Then gunicorn closes a connection stalled in
    its headers (logging the timeout), and the app answers a stalled body 408 (``server.stalls``). (semqa
    serves plain HTTP/1.1: under TLS gunicorn would wrap the socket in a class of its own, bounding only a
    connection's first request.)
    """
    sockets = idle_timeout_socket(client_timeout)

    class IdleTimeoutWorker(ThreadWorker):  # type: ignore[misc]
        def init_process(self) -> None:  # in the worker's process, after the fork
            self.log.error_log.addFilter(_QuietTimeouts(client_timeout))
            # gunicorn answers what it refuses itself (headers too large, a request line too long, a
            # malformed request...) with an HTML page, through this function of its utilities: in this
            # worker process, with the one JSON error shape instead (tests/test_hostile_input.py checks it)
            util.write_error = _write_json_error
            super().init_process()

        def handle(self, conn: Any) -> Any:
            if type(conn.sock) is socket.socket:  # accepted plain; from here on, the bounded kind
                conn.sock.__class__ = sockets
            # A new connection waits for its first bytes in the poller, not in a thread: gunicorn waits
            # up to 5 s in one of the worker's threads before it hands a silent connection to its poller,
            # so a few dozen clients that connected and sent nothing, again and again, held every thread
            # and questions went unanswered (tests/test_limits.py). A connection whose request has not
            # arrived yet goes back to the poller at once (gunicorn's own deferral, ``_DEFER``), and to a
            # thread when its bytes come.
            if not conn.initialized and not conn.data_ready and not conn.wait_for_data(0):
                return gthread._DEFER
            return super().handle(conn)

    return IdleTimeoutWorker


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from ``Settings``; each worker builds its own app (model + index) after fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"torch_threads": threads_per_worker(settings)})
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": f"{self.settings.host}:{self.settings.port}",
            "workers": self.settings.workers,
            "threads": self.settings.threads,
            "worker_class": worker_class(self.settings.client_timeout),
            # a request line of up to 8 KiB (gunicorn's most; 4 KiB by default): the path of a 512-character
            # document id of 4-byte characters, percent-encoded, is 6 KiB
            "limit_request_line": 8190,
            "timeout": 120,  # loading the model takes a few seconds on a busy machine
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "child_exit": _child_exit,
            "post_worker_init": _post_worker_init,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.settings)


def serve(settings: Settings) -> None:
    GunicornServer(settings).run()
