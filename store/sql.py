"""The SQL store: the source of truth (SQLite embedded, PostgreSQL distributed).

Every write is an upsert keyed on what makes the row unique, so a task delivered twice
does no harm:

- ``collections``: one per (model, hookpoint, corpus fingerprint, collect config);
- ``units``: one per (collection, unit id), with its record as a compressed blob; the same
  unit collected over two corpora has two records;
- ``explanations``: one per (unit, collection, explainer model, prompt hash); failures are
  rows with ``status='failed'`` and an ``error``, never a text;
- ``scores``: one per (explanation, scorer).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import (
    Table, create_engine, select, update,
)
from sqlalchemy.engine import Engine

from store.schema import (
    calibrations, collections, explanations, metadata, run_units, runs, scores, units,
)


def key_id(*parts: Any) -> str:
    """Deterministic row id from the parts of a natural key."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite drops the tzinfo on the way back; the store only writes UTC.
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class SQLStore:
    """Repository functions over one database. Safe to share between threads."""

    def __init__(self, url: str):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **kwargs)
        if url.startswith("sqlite"):
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        from store import keyword

        keyword.ensure_schema(self.engine)

    # -- generic upsert ------------------------------------------------------------
    def _upsert(self, table: Table, rows: list[dict[str, Any]], keys: list[str], where: Any = None) -> None:
        """Insert or update on the key; with ``where``, only existing rows that match it are updated."""
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        cols = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=cols, where=where) if cols else stmt.on_conflict_do_nothing()
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 500):
                conn.execute(stmt, rows[start : start + 500])

    # -- collections and units -----------------------------------------------------
    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(collections).where(collections.c.id == collection_id)).mappings().first()
        return dict(row) if row else None

    def start_collection(self, collection_id: str, model: str, hookpoint: str, corpus: str, corpus_hash: str,
                         config: dict[str, Any]) -> None:
        """Mark a collection as running, discarding units a crashed earlier attempt left behind."""
        with self.engine.begin() as conn:
            conn.execute(units.delete().where(units.c.collection_id == collection_id))
        self._upsert(collections, [dict(id=collection_id, model=model, hookpoint=hookpoint, corpus=corpus,
                                        corpus_hash=corpus_hash, config=json.dumps(config, sort_keys=True),
                                        status="running", error=None, created_at=now(), finished_at=None)], ["id"])

    def finish_collection(self, collection_id: str, records: Iterable[Any], n_tokens: int) -> None:
        rows = [dict(id=key_id(collection_id, r.unit_id), unit_id=r.unit_id, collection_id=collection_id, model=r.model, hookpoint=r.hookpoint,
                     idx=r.index, live=bool(getattr(r, "live", r.windows)), max_act=r.stats.max, mean_act=r.stats.mean,
                     std_act=r.stats.std, density=r.stats.density, record=r.to_blob()) for r in records]
        self._upsert(units, rows, ["id"])
        with self.engine.begin() as conn:
            conn.execute(update(collections).where(collections.c.id == collection_id).values(
                status="done", n_tokens=n_tokens, n_units=len(rows), finished_at=now()))

    def fail_collection(self, collection_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(collections).where(collections.c.id == collection_id).values(
                status="failed", error=error, finished_at=now()))

    def unit_rows(self, collection_id: str, live_only: bool = True) -> list[dict[str, Any]]:
        """Unit summaries (no blobs) of a collection, by index."""
        cols = [c for c in units.c if c.name != "record"]
        q = select(*cols).where(units.c.collection_id == collection_id).order_by(units.c.idx)
        if live_only:
            q = q.where(units.c.live.is_(True))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def get_records(self, unit_ids: list[str], collection_id: str | None = None) -> dict[str, tuple[str, Any]]:
        """unit id → (collection id, record); without ``collection_id``, the latest finished collection."""
        from store.records import UnitRecord

        q = (select(units.c.unit_id, units.c.collection_id, units.c.record)
             .join(collections, collections.c.id == units.c.collection_id)
             .where(units.c.unit_id.in_(unit_ids), collections.c.status == "done")
             .order_by(collections.c.finished_at))
        if collection_id is not None:
            q = q.where(units.c.collection_id == collection_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {uid: (cid, UnitRecord.from_blob(blob)) for uid, cid, blob in rows}  # later rows win

    def get_record(self, unit_id: str, collection_id: str | None = None) -> Any | None:
        found = self.get_records([unit_id], collection_id).get(unit_id)
        return found[1] if found else None

    # -- explanations ---------------------------------------------------------------
    def save_explanation(self, *, unit_id: str, collection_id: str, explainer_model: str, prompt_name: str, prompt_version: str,
                         prompt_hash: str, status: str, text: str | None = None, error: str | None = None,
                         window_ids: list[str] | None = None, settings: dict[str, Any] | None = None,
                         prompt_tokens: int | None = None, completion_tokens: int | None = None,
                         keep_ok: bool = False) -> str:
        """Upsert on (unit, collection, explainer model, prompt hash). ``keep_ok``: an ok row already
        there stays as it is (a task delivered twice and run side by side must not replace the
        explanation the first one stored, scored and indexed)."""
        if status == "ok" and not (text and text.strip()):
            raise ValueError("an ok explanation needs a text")
        eid = key_id(unit_id, collection_id, explainer_model, prompt_hash)
        self._upsert(explanations, [dict(
            id=eid, unit_id=unit_id, collection_id=collection_id, unit_row=key_id(collection_id, unit_id),
            explainer_model=explainer_model, prompt_name=prompt_name,
            prompt_version=prompt_version, prompt_hash=prompt_hash, status=status,
            text=text if status == "ok" else None, error=error, window_ids=json.dumps(window_ids or []),
            settings=json.dumps(settings or {}, sort_keys=True), prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, created_at=now(), indexed_at=None)], ["id"],
            where=(explanations.c.status != "ok") if keep_ok else None)
        self.sync_keyword_index([eid])
        return eid

    def get_explanation(self, explanation_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(explanations).where(explanations.c.id == explanation_id)).mappings().first()
        return _decode_json(dict(row), "window_ids", "settings") if row else None

    def explanations_for(self, unit_ids: list[str], collection_id: str | None = None) -> list[dict[str, Any]]:
        q = select(explanations).where(explanations.c.unit_id.in_(unit_ids))
        if collection_id is not None:
            q = q.where(explanations.c.collection_id == collection_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(explanations.c.unit_id, explanations.c.created_at)).mappings().all()
        return [_decode_json(dict(r), "window_ids", "settings") for r in rows]

    def labeled_unit_ids(self) -> list[str]:
        """Units that have at least one explanation row (ok or failed), in id order."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(explanations.c.unit_id).distinct().order_by(explanations.c.unit_id)).scalars())

    def mark_indexed(self, explanation_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(explanations).where(explanations.c.id == explanation_id).values(indexed_at=now()))

    def mark_indexed_many(self, explanation_ids: list[str]) -> None:
        """:meth:`mark_indexed` for many explanations in one transaction."""
        with self.engine.begin() as conn:
            for s in range(0, len(explanation_ids), 500):
                conn.execute(update(explanations).where(explanations.c.id.in_(explanation_ids[s:s + 500]))
                             .values(indexed_at=now()))

    def index_token(self) -> datetime | None:
        """The latest ``indexed_at``: it changes whenever any process writes the vector index."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return _as_utc(conn.execute(select(func.max(explanations.c.indexed_at))).scalar())

    def explanation_details(self, explanation_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Explanation rows by id, each with its unit's ``record`` and its ``scores`` (three queries
        on one connection: what a page of search hits needs)."""
        from store.records import UnitRecord

        with self.engine.connect() as conn:
            rows = [_decode_json(dict(r), "window_ids", "settings") for r in
                    conn.execute(select(explanations).where(explanations.c.id.in_(explanation_ids))).mappings()]
            blobs = dict(conn.execute(select(units.c.id, units.c.record)
                                      .where(units.c.id.in_(sorted({r["unit_row"] for r in rows})))).all())
            srows = conn.execute(select(scores).where(scores.c.explanation_id.in_(explanation_ids))).mappings().all()
        out = {r["id"]: {**r, "record": UnitRecord.from_blob(blobs[r["unit_row"]]) if r["unit_row"] in blobs else None,
                         "scores": []} for r in rows}
        for s in srows:
            out[s["explanation_id"]]["scores"].append(_decode_json(dict(s), "per_domain", "heldout_ids", "details"))
        return out

    def indexed_since(self, since: datetime | None) -> list[str]:
        """Ids of explanations indexed at or after ``since`` (all indexed ones for ``None``)."""
        q = select(explanations.c.id).where(explanations.c.indexed_at.is_not(None))
        if since is not None:
            q = q.where(explanations.c.indexed_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    # -- scores -----------------------------------------------------------------------
    def save_score(self, *, explanation_id: str, scorer: str, simulator_model: str | None, status: str,
                   value: float | None = None, ci_low: float | None = None, ci_high: float | None = None,
                   per_domain: dict[str, float] | None = None, heldout_ids: list[str] | None = None,
                   n_tokens: int | None = None, error: str | None = None,
                   details: dict[str, Any] | None = None) -> str:
        sid = key_id(explanation_id, scorer)
        self._upsert(scores, [dict(
            id=sid, explanation_id=explanation_id, scorer=scorer, simulator_model=simulator_model, status=status,
            value=value, ci_low=ci_low, ci_high=ci_high, per_domain=json.dumps(per_domain or {}),
            heldout_ids=json.dumps(heldout_ids or []), n_tokens=n_tokens, error=error,
            details=json.dumps(details or {}, sort_keys=True), created_at=now())], ["id"])
        self.sync_keyword_index([explanation_id])
        return sid

    def get_score(self, explanation_id: str, scorer: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(scores).where(scores.c.id == key_id(explanation_id, scorer))).mappings().first()
        return _decode_json(dict(row), "per_domain", "heldout_ids", "details") if row else None

    def scores_for(self, explanation_ids: list[str]) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(scores).where(scores.c.explanation_id.in_(explanation_ids))).mappings().all()
        return [_decode_json(dict(r), "per_domain", "heldout_ids", "details") for r in rows]

    def count_rows(self) -> dict[str, int]:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (collections, units, explanations, scores)}

    # -- keyword index and run summaries (search, HTTP API) ---------------------------------
    def sync_keyword_index(self, explanation_ids: list[str]) -> None:
        """Update the keyword-index rows of these explanations from the source tables."""
        from store import keyword

        keyword.sync(self, explanation_ids)

    def rebuild_keyword_index(self) -> int:
        """Recompute the whole keyword index from the source tables; returns its row count."""
        from store import keyword

        return keyword.rebuild(self)

    def keyword_search(self, query: str, *, limit: int, model: str | None = None, layer: int | None = None,
                       source: str | None = None, min_score: float | None = None,
                       domain: str | None = None) -> list[tuple[str, float]]:
        """Full-text matches (explanation id, relevance) that pass the filters, best first."""
        from store import keyword

        return keyword.search(self, query, limit=limit, model=model, layer=layer, source=source,
                              min_score=min_score, domain=domain)

    def collection_summaries(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Collections, newest first, with labeling progress: live units, explanations ok and
        failed, explanations with an ok score, explanations indexed for search."""
        from sqlalchemy import case, func

        ex = explanations.c
        expl = (select(ex.collection_id, func.sum(case((ex.status == "ok", 1), else_=0)).label("explained"),
                       func.sum(case((ex.status == "failed", 1), else_=0)).label("failed"),
                       func.count(ex.indexed_at).label("indexed"))
                .group_by(ex.collection_id).subquery())
        scored = (select(ex.collection_id, func.count(func.distinct(ex.id)).label("scored"))
                  .join(scores, scores.c.explanation_id == ex.id).where(scores.c.status == "ok")
                  .group_by(ex.collection_id).subquery())
        live = (select(units.c.collection_id, func.count().label("live_units")).where(units.c.live.is_(True))
                .group_by(units.c.collection_id).subquery())
        counts = [func.coalesce(c, 0).label(c.name) for c in
                  (live.c.live_units, expl.c.explained, expl.c.failed, scored.c.scored, expl.c.indexed)]
        q = (select(*[c for c in collections.c if c.name != "config"], *counts)
             .outerjoin(live, live.c.collection_id == collections.c.id)
             .outerjoin(expl, expl.c.collection_id == collections.c.id)
             .outerjoin(scored, scored.c.collection_id == collections.c.id)
             .order_by(collections.c.created_at.desc(), collections.c.id).limit(limit).offset(offset))
        with self.engine.connect() as conn:
            return [_decode_json(dict(r)) for r in conn.execute(q).mappings()]

    # -- workflow calibrations and report selections (explainer calibrate / report) ------
    def save_calibration(self, *, explanation_id: str, scorer: str, collection_id: str, domain: str,
                         simulator_model: str | None, status: str, value: float | None = None,
                         ci_low: float | None = None, ci_high: float | None = None,
                         per_domain: dict[str, float] | None = None, heldout_ids: list[str] | None = None,
                         n_tokens: int | None = None, error: str | None = None) -> str:
        """Upsert one calibration (keyed on explanation, scorer and the calibration collection)."""
        if status not in ("ok", "failed"):
            raise ValueError(f"calibration status must be ok or failed, not {status!r}")
        cal_id = key_id(explanation_id, scorer, collection_id)
        self._upsert(calibrations, [dict(
            id=cal_id, explanation_id=explanation_id, scorer=scorer, collection_id=collection_id, domain=domain,
            simulator_model=simulator_model, status=status, value=value, ci_low=ci_low, ci_high=ci_high,
            per_domain=json.dumps(per_domain or {}), heldout_ids=json.dumps(heldout_ids or []),
            n_tokens=n_tokens, error=error, created_at=now())], ["id"])
        return cal_id

    def calibrations_for(self, explanation_ids: list[str]) -> list[dict[str, Any]]:
        """Calibration rows of these explanations, each with its collection's corpus and corpus hash."""
        q = (select(calibrations, collections.c.corpus, collections.c.corpus_hash)
             .join(collections, collections.c.id == calibrations.c.collection_id)
             .where(calibrations.c.explanation_id.in_(explanation_ids))
             .order_by(calibrations.c.domain, calibrations.c.scorer, calibrations.c.created_at))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [_decode_json(dict(r), "per_domain", "heldout_ids") for r in rows]

    def report_selection(self, run: str) -> dict[str, Any] | None:
        """What ``explainer report --run RUN`` covers: for a labeling run, its collection and its
        units' explanation ids; for a collection id, the units explained in it. ``None`` if neither."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs.c.collection_id).where(runs.c.id == run)).first()
            if row is not None:
                pairs = conn.execute(select(run_units.c.unit_id, run_units.c.explanation_id)
                                     .where(run_units.c.run_id == run).order_by(run_units.c.unit_id)).all()
                return {"kind": "run", "collection_id": row[0], "unit_ids": [u for u, _ in pairs],
                        "explanation_ids": {u: e for u, e in pairs}}
            if conn.execute(select(collections.c.id).where(collections.c.id == run)).first() is None:
                return None
            uids = conn.execute(select(explanations.c.unit_id).distinct()
                                .where(explanations.c.collection_id == run).order_by(explanations.c.unit_id))
            return {"kind": "collection", "collection_id": run, "unit_ids": list(uids.scalars()),
                    "explanation_ids": {}}


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the nullable columns a newer version of a table has and the database lacks (an older
    store opened by newer code); returns ``table.column`` of each added. Columns that are not
    nullable need a real migration and are reported as an error instead."""
    from sqlalchemy import inspect
    from sqlalchemy.schema import CreateColumn

    added: list[str] = []
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for col in table.columns:
            if col.name in present:
                continue
            if not col.nullable:
                raise RuntimeError(f"the store's table {table.name} lacks the required column {col.name}: "
                                   "migrate it or start from an empty database")
            ddl = CreateColumn(col).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            except Exception:
                # another process opening the same store (API and workers starting together) may
                # have added it first; anything else is a real error
                if col.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise
                continue
            added.append(f"{table.name}.{col.name}")
    return added


def _decode_json(row: dict[str, Any], *fields: str) -> dict[str, Any]:
    for f in fields:
        if isinstance(row.get(f), str):
            row[f] = json.loads(row[f])
    for f in ("created_at", "finished_at", "indexed_at"):
        if f in row:
            row[f] = _as_utc(row[f])
    return row
