"""The SQL store: the source of truth (SQLite embedded, PostgreSQL distributed).

:class:`SQLStore` is the one public store class; its methods live in one repository per job
(:mod:`store.units_repo`, :mod:`store.explanations_repo`, :mod:`store.reports_repo`) over the
plumbing of :mod:`store.db`. Every write is an upsert keyed on what makes the row unique, so a
task delivered twice does no harm:

- ``collections``: one per (model, hookpoint, corpus fingerprint, collect config);
- ``units``: one per (collection, unit id), with its record as a compressed blob; the same
  unit collected over two corpora has two records;
- ``explanations``: one per (unit, collection, explainer model, prompt hash); failures are
  rows with ``status='failed'`` and an ``error``, never a text;
- ``scores``: one per (explanation, scorer).

Reads return the typed records of :mod:`store.records` (``UnitRecord``, ``Explanation``,
``Score``, ``Calibration``).
"""

from __future__ import annotations

from store.db import add_missing_columns, as_utc, decode_json, now
from store.explanations_repo import ExplanationsRepo
from store.records import key_id
from store.reports_repo import ReportsRepo
from store.schema import (
    calibrations,
    collections,
    explanations,
    metadata,
    run_units,
    runs,
    scores,
    units,
)
from store.units_repo import UnitsRepo

__all__ = [
    "SQLStore",
    "add_missing_columns",
    "as_utc",
    "calibrations",
    "collections",
    "decode_json",
    "explanations",
    "key_id",
    "metadata",
    "now",
    "run_units",
    "runs",
    "scores",
    "units",
]


class SQLStore(UnitsRepo, ExplanationsRepo, ReportsRepo):
    """Repository functions over one database. Safe to share between threads."""
