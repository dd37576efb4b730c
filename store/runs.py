"""Labeling runs: repository functions over the ``runs`` and ``run_units`` tables of :mod:`store.sql`.

A run is one (collection, label options, explain prompt hash). Its units are rows of ``run_units``,
each pointing at the deterministic id of the explanation it will have, so a unit's state is read
from the explanation and score rows themselves (never stored twice):

- **done**: the explanation is ok, every scorer of the run has an ok score, and it is indexed;
- **failed**: the explanation, or one of the run's scores, is recorded as failed (with its reason);
- **pending**: anything else (not started, in flight, or stopped half-way).

Everything here is a bulk statement or an aggregate, so a 131,072-unit run costs a few queries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Select, Table, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.db import as_utc as _as_utc
from store.db import decode_json as _decode_json
from store.db import dialect_insert, now
from store.schema import explanations, run_units, runs, scores
from store.sql import SQLStore

STATES = ("done", "failed", "pending")
_CHUNK = 1000


def open_run(
    store: SQLStore, run_id: str, collection_id: str, options: dict[str, Any], explainer_model: str, scorers: list[str]
) -> dict[str, Any]:
    """Create the run, or reuse the one with this id; mark it running either way."""
    row = dict(
        id=run_id,
        collection_id=collection_id,
        options=json.dumps(options, sort_keys=True),
        explainer_model=explainer_model,
        simulator=json.dumps(list(scorers)),
        n_units=0,
        status="running",
        created_at=now(),
        started_at=now(),
    )
    with store.engine.begin() as conn:
        conn.execute(_insert(store, runs).on_conflict_do_nothing(index_elements=["id"]), [row])
        conn.execute(update(runs).where(runs.c.id == run_id).values(status="running", error=None, finished_at=None))
    return _written(store, run_id)


def add_units(store: SQLStore, run_id: str, units: Iterable[tuple[str, str]]) -> int:
    """Add (unit id, explanation id) pairs to the run (already present ones are kept); returns
    the run's unit count."""
    stmt = _insert(store, run_units).on_conflict_do_nothing(index_elements=["run_id", "unit_id"])
    batch: list[dict[str, str]] = []
    with store.engine.begin() as conn:
        for unit_id, explanation_id in units:
            batch.append(dict(run_id=run_id, unit_id=unit_id, explanation_id=explanation_id))
            if len(batch) >= _CHUNK:
                conn.execute(stmt, batch)
                batch = []
        if batch:
            conn.execute(stmt, batch)
        n = conn.execute(select(func.count()).select_from(run_units).where(run_units.c.run_id == run_id)).scalar_one()
        conn.execute(update(runs).where(runs.c.id == run_id).values(n_units=n))
    return n


def finish_run(store: SQLStore, run_id: str, error: str | None = None) -> dict[str, Any]:
    """Record the counts at the end of a ``label`` invocation: ``done`` when no unit is pending,
    else ``incomplete`` (interrupted, timed out, or units whose chain raised)."""
    counts = run_counts(store, run_id)
    status = "done" if counts["pending"] == 0 else "incomplete"
    with store.engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                status=status,
                n_done=counts["done"],
                n_failed=counts["failed"],
                n_pending=counts["pending"],
                error=error,
                finished_at=now(),
            )
        )
    return _written(store, run_id)


def _written(store: SQLStore, run_id: str) -> dict[str, Any]:
    """The run row just written (a run deleted meanwhile by another process is an error, not ``None``)."""
    run = get_run(store, run_id)
    if run is None:
        raise LookupError(f"run {run_id} was deleted while it was being written")
    return run


def get_run(store: SQLStore, run_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    return _decode_run(dict(row)) if row else None


def find_runs(store: SQLStore, prefix: str) -> list[str]:
    """Run ids that start with ``prefix`` (so a short id works on the command line)."""
    with store.engine.connect() as conn:
        return list(conn.execute(select(runs.c.id).where(runs.c.id.startswith(prefix, autoescape=True))).scalars())


def count_runs(store: SQLStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(runs)).scalar_one()


def list_runs(store: SQLStore, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Runs, newest first, each with its live counts (done, failed, pending) and tokens spent."""
    with store.engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(runs).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit).offset(offset)
            ).mappings()
        ]
    return [_with_counts(store, _decode_run(r)) for r in rows]


def run_detail(store: SQLStore, run_id: str, failures_limit: int = 50) -> dict[str, Any] | None:
    """One run with its live counts and its first failures (by unit id) with their reasons."""
    run = get_run(store, run_id)
    if run is None:
        return None
    return {**_with_counts(store, run), "failures": failures(store, run_id, limit=failures_limit)}


def _with_counts(store: SQLStore, run: dict[str, Any]) -> dict[str, Any]:
    """The run with its live counts; a run with nothing pending reads ``done`` even if the client
    that last worked on it died before saying so."""
    counts = run_counts(store, run["id"], run["simulator"])
    status = "done" if counts["units"] and counts["pending"] == 0 else run["status"]
    return {**run, **counts, "status": status}


def _state_query(run_id: str, scorers: list[str]) -> Select[str, str | None, str, int]:
    """Per unit of the run: unit id, explanation id, state and tokens."""
    sc = scores.c
    mine = select(run_units.c.explanation_id).where(run_units.c.run_id == run_id)
    per_expl = (
        select(
            sc.explanation_id,
            func.sum(case((sc.status == "ok", 1), else_=0)).label("n_ok"),
            func.sum(case((sc.status == "failed", 1), else_=0)).label("n_failed"),
        )
        .where(sc.scorer.in_(scorers), sc.explanation_id.in_(mine))
        .group_by(sc.explanation_id)
        .subquery()
    )
    ex = explanations.c
    failed = or_(ex.status == "failed", func.coalesce(per_expl.c.n_failed, 0) > 0)
    done = and_(ex.status == "ok", func.coalesce(per_expl.c.n_ok, 0) >= len(scorers), ex.indexed_at.is_not(None))
    state = case((failed, literal("failed")), (done, literal("done")), else_=literal("pending")).label("state")
    tokens = (func.coalesce(ex.prompt_tokens, 0) + func.coalesce(ex.completion_tokens, 0)).label("tokens")
    return (
        select(run_units.c.unit_id, run_units.c.explanation_id, state, tokens)
        .select_from(
            run_units.outerjoin(explanations, ex.id == run_units.c.explanation_id).outerjoin(
                per_expl, per_expl.c.explanation_id == run_units.c.explanation_id
            )
        )
        .where(run_units.c.run_id == run_id)
    )


def _scorers(store: SQLStore, run_id: str) -> list[str]:
    run = get_run(store, run_id)
    if run is None:
        raise KeyError(run_id)
    return run["simulator"]


def run_counts(store: SQLStore, run_id: str, scorers: list[str] | None = None) -> dict[str, int]:
    """``done``, ``failed``, ``pending`` and ``units`` of a run, and ``tokens`` spent by its
    explanations (prompt + completion, every candidate of best-of-k included)."""
    sub = _state_query(run_id, scorers if scorers is not None else _scorers(store, run_id)).subquery()
    cols = [func.coalesce(func.sum(case((sub.c.state == s, 1), else_=0)), 0).label(s) for s in STATES]
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                select(*cols, func.count().label("units"), func.coalesce(func.sum(sub.c.tokens), 0).label("tokens"))
            )
            .mappings()
            .one()
        )
    return {k: int(v) for k, v in row.items()}


def unit_states(store: SQLStore, run_id: str) -> Iterator[tuple[str, str]]:
    """(unit id, state) of every unit of the run, in unit-id order, streamed."""
    q = _state_query(run_id, _scorers(store, run_id)).order_by(run_units.c.unit_id)
    with store.engine.connect() as conn:
        for unit_id, _eid, state, _tokens in conn.execution_options(yield_per=5000).execute(q):
            yield unit_id, state


def failures(store: SQLStore, run_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """Failed units of the run with their reasons (the explanation's error, or each failed score's)."""
    scorers = _scorers(store, run_id)
    sub = _state_query(run_id, scorers).subquery()
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(sub.c.unit_id, sub.c.explanation_id)
            .where(sub.c.state == "failed")
            .order_by(sub.c.unit_id)
            .limit(limit)
        ).all()
        ids = [eid for _, eid in rows]
        expl = dict(
            conn.execute(
                select(explanations.c.id, explanations.c.error).where(
                    explanations.c.id.in_(ids), explanations.c.status == "failed"
                )
            ).all()
        )
        score_err: dict[str, list[str]] = {}
        for eid, scorer, err in conn.execute(
            select(scores.c.explanation_id, scores.c.scorer, scores.c.error).where(
                scores.c.explanation_id.in_(ids), scores.c.status == "failed", scores.c.scorer.in_(scorers)
            )
        ):
            score_err.setdefault(eid, []).append(f"score {scorer}: {err}")
    return [
        {
            "unit_id": uid,
            "explanation_id": eid,
            "stage": "explain" if eid in expl else "score",
            "reason": expl[eid] if eid in expl else "; ".join(score_err.get(eid, [])) or "failed",
        }
        for uid, eid in rows
    ]


def _insert(store: SQLStore, table: Table) -> postgresql.Insert | sqlite.Insert:
    return dialect_insert(store.engine, table)


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    row = _decode_json(row, "options", "simulator")
    row["started_at"] = _as_utc(row.get("started_at"))
    return row


def run_explanation_ids(store: SQLStore, run_id: str) -> list[tuple[str, str]]:
    """(unit id, explanation id) of every unit of the run, in unit order (the explanation may not exist yet)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(run_units.c.unit_id, run_units.c.explanation_id)
            .where(run_units.c.run_id == run_id)
            .order_by(run_units.c.unit_id)
        ).all()
    return [(r[0], r[1]) for r in rows]
