"""What a slow step is doing, for the person waiting on it.

Loading a model takes seconds to a minute and a labeling run's first unit waits for all of them, so
the steps that load say so on the ``explainer.progress`` logger, which the CLI prints on stderr
(one line each, left out with ``--json``); a library user sees them through ``logging`` like any
other message. :class:`Eta` gives a time left that leaves the warm-up out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOGGER = "explainer.progress"
"""The logger's name; ``store`` (which never imports ``explainer``) logs to it by this name."""

log = logging.getLogger(LOGGER)


@contextmanager
def loading(what: str) -> Iterator[None]:
    """Say that ``what`` is loading, then how long it took (nothing more when it fails: the error says why)."""
    log.info("loading %s ...", what)
    start = time.monotonic()
    yield
    log.info("loaded %s in %.1f s", what, time.monotonic() - start)


class Eta:
    """Time left for ``total`` units, measured from the first unit this invocation finished.

    The first unit waits for every model to load (a minute on a CPU), then units finish at a steady
    rate; an average over the whole run would promise many minutes for a run that has a few seconds
    left. Until a second unit finishes there is no rate to quote, and :meth:`text` says so.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = 0
        self._clock = clock
        self._start = clock()
        self._first: float | None = None
        self.warmup_s: float | None = None

    def update(self, n: int = 1) -> None:
        """``n`` more units finished."""
        if n <= 0:
            return
        now = self._clock()
        if self._first is None:
            self._first = now
            self.warmup_s = now - self._start
        self.done += n

    def seconds_left(self) -> float | None:
        """None until two units have finished (the rate after warm-up is not known before)."""
        if self._first is None or self.done < 2:
            return None
        per_unit = (self._clock() - self._first) / (self.done - 1)
        return max(0.0, per_unit * (self.total - self.done))

    def text(self) -> str:
        """e.g. ``eta 1m05s (warm-up took 58s)``, ``warming up (loading models)``."""
        if self.done >= self.total:
            return "done" if self.warmup_s is None else f"done (warm-up took {_span(self.warmup_s)})"
        if self._first is None:
            return "warming up (loading models)"
        left = self.seconds_left()
        if left is None:
            return f"measuring the rate (warm-up took {_span(self.warmup_s or 0.0)})"
        return f"eta {_span(left)} (warm-up took {_span(self.warmup_s or 0.0)})"


def _span(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
