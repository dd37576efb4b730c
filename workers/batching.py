"""Group the calls that arrive together into one batch, waiting a bounded time for company.

An index worker runs many task threads; each hands its explanation id to the process's
:class:`Batcher` and waits for its own result. One thread takes the first item, waits up to
``wait_s()`` for more (up to ``max_size``), runs them as one batch (one embedding call, one
upsert), then starts on what arrived meanwhile. With ``wait_s() == 0`` a lone call runs at once
(the in-process worker of the embedded default has one thread: nobody could join it).

A batch that raises fails every call in it, each with that error (the tasks fail, their chains
report it, and a re-run indexes them: indexing is idempotent).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Batcher(Generic[K, T]):
    """``submit(key, item)`` returns a future; ``run(key, items)`` processes the items of one key."""

    def __init__(
        self,
        run: Callable[[K, list[T]], object],
        max_size: int = 256,
        name: str = "batcher",
        wait_s: Callable[[], float] = lambda: 0.0,
    ):
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._run = run
        self._wait_s = wait_s
        self.max_size = max_size
        self._queue: queue.SimpleQueue[tuple[K, T, Future[None]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._name = name
        self.batches = 0
        """Batches run so far (with :attr:`items`: the mean batch size, for benchmarks and tests)."""
        self.items = 0

    def submit(self, key: K, item: T) -> Future[None]:
        """Queue ``item``; the future is done when its batch ran (or holds the batch's error)."""
        fut: Future[None] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((key, item, fut))
        return fut

    def _loop(self) -> None:
        while True:
            taken = [self._queue.get()]
            deadline = time.monotonic() + self._wait_s()
            while len(taken) < self.max_size:
                left = deadline - time.monotonic()
                try:
                    taken.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[K, list[tuple[T, Future[None]]]] = {}
            for key, item, fut in taken:
                groups.setdefault(key, []).append((item, fut))
            for key, members in groups.items():
                self.batches += 1
                self.items += len(members)
                try:
                    self._run(key, [item for item, _ in members])
                except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                    for _, fut in members:
                        fut.set_exception(exc)
                else:
                    for _, fut in members:
                        fut.set_result(None)
