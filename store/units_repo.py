"""Collections and units: a collection is one (model, hookpoint, corpus, collect config) pass;
a unit's row holds its :class:`~store.records.UnitRecord` as a compressed blob."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from store.db import StoreBase, decode_json, now
from store.keyword import domains_field, unit_domains
from store.records import UnitRecord, make_unit_row_id
from store.schema import collections, unit_outputs, units


class UnitsRepo(StoreBase):
    """Collections and their units' records."""

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(collections).where(collections.c.id == collection_id)).mappings().first()
        return dict(row) if row else None

    def start_collection(
        self, collection_id: str, model: str, hookpoint: str, corpus: str, corpus_hash: str, config: dict[str, Any]
    ) -> None:
        """Mark a collection as running, discarding units a crashed earlier attempt left behind."""
        with self.engine.begin() as conn:
            conn.execute(units.delete().where(units.c.collection_id == collection_id))
        self._upsert(
            collections,
            [
                dict(
                    id=collection_id,
                    model=model,
                    hookpoint=hookpoint,
                    corpus=corpus,
                    corpus_hash=corpus_hash,
                    config=json.dumps(config, sort_keys=True),
                    status="running",
                    error=None,
                    created_at=now(),
                    finished_at=None,
                )
            ],
            ["id"],
        )

    def finish_collection(self, collection_id: str, records: Iterable[UnitRecord], n_tokens: int) -> None:
        rows = [
            dict(
                id=make_unit_row_id(collection_id, r.unit_id),
                unit_id=r.unit_id,
                collection_id=collection_id,
                model=r.model,
                hookpoint=r.hookpoint,
                idx=r.index,
                live=bool(getattr(r, "live", r.windows)),
                max_act=r.stats.max,
                mean_act=r.stats.mean,
                std_act=r.stats.std,
                density=r.stats.density,
                record=r.to_blob(),
                top_domains=domains_field(unit_domains(r)),
                name=r.name,
            )
            for r in records
        ]
        self._upsert(units, rows, ["id"])
        with self.engine.begin() as conn:
            conn.execute(
                update(collections)
                .where(collections.c.id == collection_id)
                .values(status="done", n_tokens=n_tokens, n_units=len(rows), finished_at=now())
            )

    def fail_collection(self, collection_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(collections)
                .where(collections.c.id == collection_id)
                .values(status="failed", error=error, finished_at=now())
            )

    def unit_rows(self, collection_id: str, live_only: bool = True) -> list[dict[str, Any]]:
        """Unit summaries (no blobs) of a collection, by index."""
        cols = [c for c in units.c if c.name != "record"]
        q = select(*cols).where(units.c.collection_id == collection_id).order_by(units.c.idx)
        if live_only:
            q = q.where(units.c.live.is_(True))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def get_records(self, unit_ids: list[str], collection_id: str | None = None) -> dict[str, tuple[str, UnitRecord]]:
        """unit id → (collection id, record); without ``collection_id``, the latest finished collection."""
        q = (
            select(units.c.unit_id, units.c.collection_id, units.c.record)
            .join(collections, collections.c.id == units.c.collection_id)
            .where(units.c.unit_id.in_(unit_ids), collections.c.status == "done")
            .order_by(collections.c.finished_at)
        )
        if collection_id is not None:
            q = q.where(units.c.collection_id == collection_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {uid: (cid, UnitRecord.from_blob(blob)) for uid, cid, blob in rows}  # later rows win

    def save_output_sides(self, sides: dict[str, dict[str, Any]]) -> None:
        """Store units' output sides (``{"method", "promoted", "suppressed"[, "details"]}`` per unit
        id), replacing an older one of the same method."""
        rows = [
            dict(
                unit_id=uid,
                method=side["method"],
                promoted=json.dumps(side["promoted"]),
                suppressed=json.dumps(side["suppressed"]),
                details=json.dumps(side.get("details") or {}),
                created_at=now(),
            )
            for uid, side in sides.items()
        ]
        if rows:
            self._upsert(unit_outputs, rows, ["unit_id", "method"])

    def output_sides(self, unit_ids: list[str], method: str = "vocab-projection") -> dict[str, dict[str, Any]]:
        """unit id → its stored output side of ``method`` (``vocab-projection`` or ``steering``);
        units without one are left out."""
        if not unit_ids:
            return {}
        q = select(unit_outputs).where(unit_outputs.c.unit_id.in_(unit_ids), unit_outputs.c.method == method)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = {}
        for r in rows:
            side = {
                "method": r["method"],
                "promoted": json.loads(r["promoted"]),
                "suppressed": json.loads(r["suppressed"]),
            }
            if method != "vocab-projection":
                side["details"] = json.loads(r["details"] or "{}")
            out[r["unit_id"]] = side
        return out

    def unit_collections(self, unit_id: str) -> list[str]:
        """Ids of the finished collections that hold ``unit_id``, oldest first (the latest is the default)."""
        q = (
            select(units.c.collection_id)
            .join(collections, collections.c.id == units.c.collection_id)
            .where(units.c.unit_id == unit_id, collections.c.status == "done")
            .order_by(collections.c.finished_at)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def get_record(self, unit_id: str, collection_id: str | None = None) -> UnitRecord | None:
        found = self.get_records([unit_id], collection_id).get(unit_id)
        return found[1] if found else None

    def collection_summaries(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Collections, newest first, with labeling progress: live units, explanations ok and
        failed, explanations with an ok score, explanations indexed for search."""
        from sqlalchemy import case, func

        from store.schema import explanations, scores

        ex = explanations.c
        expl = (
            select(
                ex.collection_id,
                func.sum(case((ex.status == "ok", 1), else_=0)).label("explained"),
                func.sum(case((ex.status == "failed", 1), else_=0)).label("failed"),
                func.count(ex.indexed_at).label("indexed"),
            )
            .group_by(ex.collection_id)
            .subquery()
        )
        scored = (
            select(ex.collection_id, func.count(func.distinct(ex.id)).label("scored"))
            .join(scores, scores.c.explanation_id == ex.id)
            .where(scores.c.status == "ok")
            .group_by(ex.collection_id)
            .subquery()
        )
        live = (
            select(units.c.collection_id, func.count().label("live_units"))
            .where(units.c.live.is_(True))
            .group_by(units.c.collection_id)
            .subquery()
        )
        counts = [
            func.coalesce(c, 0).label(c.name)
            for c in (live.c.live_units, expl.c.explained, expl.c.failed, scored.c.scored, expl.c.indexed)
        ]
        q = (
            select(*[c for c in collections.c if c.name != "config"], *counts)
            .outerjoin(live, live.c.collection_id == collections.c.id)
            .outerjoin(expl, expl.c.collection_id == collections.c.id)
            .outerjoin(scored, scored.c.collection_id == collections.c.id)
            .order_by(collections.c.created_at.desc(), collections.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [decode_json(dict(r)) for r in conn.execute(q).mappings()]
