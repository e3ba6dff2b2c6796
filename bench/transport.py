"""What an HTTP round trip costs here, apart from the app: semqa's gunicorn worker and an app that only waits.

``POST /ask`` over HTTP minus the question's encoding (issue 12's measure) holds the search besides the
encoding, Flask's layers, and the round trip itself: the client library, loopback, gunicorn. This script
measures the last part alone: semqa's own worker class (``server.runner.worker_class``, one worker, 16
threads) serving a WSGI app that spends ``--work-ms`` (busy, holding the interpreter as a search does) and
answers a body the size of a corpus ``/ask`` answer. Each client asks the same JSON body in turn on one
kept-alive connection; the figure is its p50 minus the app's work:

- ``requests``: a ``requests.Session`` (what bench/query_latency.py and most Python clients use);
- ``socket``: a raw socket writing the request and blocking on the answer (no client library);
- ``socket, spinning``: the same without ever blocking (the client's CPU never idles, so it never has to
  be woken up when the answer comes).

    python bench/transport.py [--work-ms 0,8] [--requests 600]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import requests
from common import REPO

BODY_BYTES = 6274  # a corpus /ask answer at top_k 5
QUESTION = json.dumps({"question": "When was the annual China Space Conference first initiated?"}).encode()


def serve(port: int, work_ms: float) -> None:
    """Run semqa's gunicorn worker class on the waiting app (in this process, until killed)."""
    from gunicorn.app.base import BaseApplication

    from server.runner import worker_class

    answer = b"x" * BODY_BYTES

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        until = time.perf_counter() + work_ms / 1000
        while time.perf_counter() < until:
            pass
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(BODY_BYTES))])
        return [answer]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"127.0.0.1:{port}",
                "workers": 1,
                "threads": 16,
                "worker_class": worker_class(10.0),
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Server().run()


def ask_requests(url: str) -> Callable[[], None]:
    session = requests.Session()
    return lambda: session.post(url, data=QUESTION, headers={"Content-Type": "application/json"}).content


def ask_socket(port: int, spin: bool) -> Callable[[], None]:
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(QUESTION)}\r\n\r\n".encode()
        + QUESTION
    )
    connection.setblocking(not spin)

    def ask() -> None:
        connection.sendall(request)
        received = 0
        expected = None
        head = b""
        while expected is None or received < expected:
            try:
                data = connection.recv(65536)
            except BlockingIOError:
                continue
            if expected is None:
                head += data
                if b"\r\n\r\n" in head:
                    headers, _, body = head.partition(b"\r\n\r\n")
                    expected = int(headers.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    received = len(body)
            else:
                received += len(data)

    return ask


def p50_ms(ask: Callable[[], None], count: int) -> float:
    for _ in range(50):
        ask()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ask()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-ms", default="0,8", help="comma-separated: the app's time per request")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8795)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.port, args.serve)
        return
    works = [float(w) for w in args.work_ms.split(",")]
    clients = {
        "requests": lambda: ask_requests(f"http://127.0.0.1:{args.port}/"),
        "socket": lambda: ask_socket(args.port, spin=False),
        "socket, spinning": lambda: ask_socket(args.port, spin=True),
    }
    figures: dict[str, dict[float, list[float]]] = {name: {w: [] for w in works} for name in clients}
    for work in works:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(work), "--port", str(args.port)], cwd=REPO
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            for _ in range(args.rounds):
                for name, make in clients.items():
                    figures[name][work].append(p50_ms(make(), args.requests) - work)
        finally:
            server.terminate()
            server.wait()
    print("| client | " + " | ".join(f"app works {w:g} ms: p50 minus work, ms" for w in works) + " |")
    print("|---|" + "---:|" * len(works))
    for name, by_work in figures.items():
        cells = [" / ".join(f"{v:.2f}" for v in by_work[w]) for w in works]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
