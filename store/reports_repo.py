"""Workflow calibrations (``explainer calibrate``) and report selections (``explainer report --run``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from store.db import StoreBase, now
from store.explanations_repo import score_from_row
from store.records import Calibration, key_id
from store.schema import calibrations, collections, explanations, run_units, runs


class ReportsRepo(StoreBase):
    """Calibrations of explanations on users' corpora, and what a report covers."""

    def save_calibration(
        self,
        *,
        explanation_id: str,
        scorer: str,
        collection_id: str,
        domain: str,
        simulator_model: str | None,
        status: str,
        value: float | None = None,
        ci_low: float | None = None,
        ci_high: float | None = None,
        per_domain: dict[str, float] | None = None,
        heldout_ids: list[str] | None = None,
        n_tokens: int | None = None,
        error: str | None = None,
    ) -> str:
        """Upsert one calibration (keyed on explanation, scorer and the calibration collection)."""
        if status not in ("ok", "failed"):
            raise ValueError(f"calibration status must be ok or failed, not {status!r}")
        cal_id = key_id(explanation_id, scorer, collection_id)
        self._upsert(
            calibrations,
            [
                dict(
                    id=cal_id,
                    explanation_id=explanation_id,
                    scorer=scorer,
                    collection_id=collection_id,
                    domain=domain,
                    simulator_model=simulator_model,
                    status=status,
                    value=value,
                    ci_low=ci_low,
                    ci_high=ci_high,
                    per_domain=json.dumps(per_domain or {}),
                    heldout_ids=json.dumps(heldout_ids or []),
                    n_tokens=n_tokens,
                    error=error,
                    created_at=now(),
                )
            ],
            ["id"],
        )
        return cal_id

    def calibrations_for(self, explanation_ids: list[str]) -> list[Calibration]:
        """Calibrations of these explanations, each with its collection's corpus and corpus hash."""
        q = (
            select(calibrations, collections.c.corpus, collections.c.corpus_hash)
            .join(collections, collections.c.id == calibrations.c.collection_id)
            .where(calibrations.c.explanation_id.in_(explanation_ids))
            .order_by(calibrations.c.domain, calibrations.c.scorer, calibrations.c.created_at)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            Calibration(r["domain"], score_from_row(r), r["corpus"], r["corpus_hash"], r["collection_id"]) for r in rows
        ]

    def find_run_or_collection(self, prefix: str) -> list[str]:
        """The labeling run and collection ids ``prefix`` names: itself when it is a whole id,
        else every id that starts with it (so the short ids the CLI prints work everywhere)."""
        with self.engine.connect() as conn:
            found: list[str] = []
            for table in (runs, collections):
                if conn.execute(select(table.c.id).where(table.c.id == prefix)).first() is not None:
                    return [prefix]
                found += conn.execute(
                    select(table.c.id).where(table.c.id.startswith(prefix, autoescape=True))
                ).scalars()
            return sorted(set(found))

    def report_selection(self, run: str) -> dict[str, Any] | None:
        """What ``explainer report --run RUN`` covers: for a labeling run, its collection and its
        units' explanation ids; for a collection id, the units explained in it. ``None`` if neither."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs.c.collection_id).where(runs.c.id == run)).first()
            if row is not None:
                pairs = conn.execute(
                    select(run_units.c.unit_id, run_units.c.explanation_id)
                    .where(run_units.c.run_id == run)
                    .order_by(run_units.c.unit_id)
                ).all()
                return {
                    "kind": "run",
                    "collection_id": row[0],
                    "unit_ids": [u for u, _ in pairs],
                    "explanation_ids": {u: e for u, e in pairs},
                }
            if conn.execute(select(collections.c.id).where(collections.c.id == run)).first() is None:
                return None
            uids = conn.execute(
                select(explanations.c.unit_id)
                .distinct()
                .where(explanations.c.collection_id == run)
                .order_by(explanations.c.unit_id)
            )
            return {"kind": "collection", "collection_id": run, "unit_ids": list(uids.scalars()), "explanation_ids": {}}
