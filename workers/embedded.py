"""An in-process Celery worker over the memory transport, for the embedded default.

The CLI starts it when no broker is configured, so one command runs the whole pipeline
with nothing else to start. It consumes every queue (``collect`` serves sharded collections) with one thread: the local models
use all CPU cores already, and one thread is the single Chroma writer.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

_started: dict[int, Any] = {}
_lock = threading.Lock()


def start_embedded_worker(app: Any, concurrency: int = 1, queues: tuple[str, ...] = ("collect", "llm", "index")) -> Any:
    """Start (once per app) a thread-pool worker in a daemon thread and wait until it consumes."""
    with _lock:
        if id(app) in _started:
            return _started[id(app)]
        ready = threading.Event()
        from celery import signals
        from celery.exceptions import SecurityWarning

        def _on_ready(sender: Any = None, **_: Any) -> None:
            ready.set()

        signals.worker_ready.connect(_on_ready, weak=False)
        # The in-process worker accepts JSON only; Celery's warning about running as root
        # concerns pickle and a worker reachable by others, neither of which applies here.
        warnings.filterwarnings("ignore", category=SecurityWarning)
        worker = app.Worker(
            pool="threads",
            concurrency=concurrency,
            queues=list(queues),
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            quiet=True,
        )
        thread = threading.Thread(target=worker.start, name="embedded-celery-worker", daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the in-process Celery worker did not start within 30 s")
        time.sleep(0.05)
        _started[id(app)] = worker
        return worker
