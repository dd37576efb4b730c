"""Transactions the database may abort and that are run again: a leaf of the store package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

T = TypeVar("T")

RETRIED_SQLSTATES = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure: the server aborted the transaction, and
running it again is the documented remedy."""


def retry_deadlocks(engine: Engine, work: Callable[[Any], T], tries: int = 4) -> T:
    """Run ``work(conn)`` in a transaction of its own, again (up to ``tries`` times in all, after a short
    pause) when the database aborts it for a deadlock or a serialization failure: e.g. a transaction
    that writes explanations, scores and keyword rows against a process whose first store opening runs
    the schema's ``ALTER TABLE … IF NOT EXISTS`` / ``CREATE INDEX IF NOT EXISTS`` (they lock the tables
    even when there is nothing to do)."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(tries):
        try:
            with engine.begin() as conn:
                return work(conn)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRIED_SQLSTATES or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
