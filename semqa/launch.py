"""Start `semqa serve` (or `semqa mcp --http`) as a child process and wait until it answers: for the tests,
benchmarks and soak runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    log: Path  # what the server prints goes here (a pipe nobody reads would fill and block the server)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # not listening yet, or the worker is still loading
        return False


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def running_server(
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 180,
    command: str = "serve",
    until: Literal["health", "listening"] = "health",
    cwd: Path | None = None,
) -> Iterator[RunningServer]:
    """``semqa <command> --port <free> *args`` with ``env`` added to the environment, once its ``/health``
    answers (or, with ``until="listening"``, as soon as its port takes connections); stopped on exit.
    ``cwd``: run it from there (a checkout of another commit runs that commit's code)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"semqa-{command}-", suffix=".log")[1])
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "semqa.cli", command, "--port", str(port), *args],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: master and workers are stopped together
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        ready = _healthy if until == "health" else _listening
        while not ready(server.url):
            if process.poll() is not None:
                raise RuntimeError(f"semqa {command} exited {process.returncode}:\n{server.output}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"semqa {command} was not up ({until}) within {timeout:.0f} s")
            time.sleep(0.3)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group (gunicorn master and workers) and wait for the master."""
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
