"""Run the app under gunicorn (threaded workers), the production WSGI server."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from semqa.settings import Settings
from server.app import create_app


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
            "worker_class": "gthread",
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
