"""Explanations and their scores: upserts keyed on what makes each unique, reads that return
:class:`~store.records.Explanation` and :class:`~store.records.Score`, and the keyword index
kept in step with them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import RowMapping, select, update

from store.db import StoreBase, as_utc, decode_json, dialect_insert, now
from store.records import (
    Explanation,
    ExplanationDetail,
    Score,
    UnitRecord,
    make_score_id,
)
from store.rows import explanation_row, score_row
from store.schema import collections, explanations, scores, units
from store.transactions import retry_deadlocks

if TYPE_CHECKING:
    from store.keyword_scan import KeywordScan


def explanation_from_row(row: RowMapping) -> Explanation:
    """An :class:`Explanation` from a row of ``explanations``."""
    r = decode_json(dict(row), "window_ids", "settings")
    return Explanation(
        id=r["id"],
        unit_id=r["unit_id"],
        collection_id=r["collection_id"],
        explainer_model=r["explainer_model"],
        prompt_name=r["prompt_name"],
        prompt_version=r["prompt_version"],
        prompt_hash=r["prompt_hash"],
        status=r["status"],
        text=r["text"],
        error=r["error"],
        created_at=r["created_at"],
        window_ids=tuple(r["window_ids"] or ()),
        settings=r["settings"] or {},
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        indexed_at=r["indexed_at"],
    )


def score_from_row(row: RowMapping) -> Score:
    """A :class:`Score` from a row of ``scores`` (or of ``calibrations``, which has no ``details``)."""
    r = decode_json(dict(row), "per_domain", "heldout_ids", "details")
    return Score(
        scorer=r["scorer"],
        value=r["value"],
        ci_low=r["ci_low"],
        ci_high=r["ci_high"],
        per_domain=r["per_domain"] or {},
        status=r["status"],
        error=r["error"],
        simulator_model=r["simulator_model"],
        n_tokens=r["n_tokens"],
        heldout_ids=tuple(r["heldout_ids"] or ()),
        created_at=r["created_at"],
        details=r.get("details") or {},
        explanation_id=r["explanation_id"],
    )


class ExplanationsRepo(StoreBase):
    """Explanations, scores and the keyword index over them."""

    # -- explanations ---------------------------------------------------------------
    def save_explanation(self, *, keep_ok: bool = False, **fields: Any) -> str:
        """Upsert on (unit, collection, explainer model, prompt hash); ``fields`` are
        :func:`explanation_row`'s. ``keep_ok``: an ok row already there stays as it is (a task delivered
        twice and run side by side must not replace the explanation the first one stored, scored and
        indexed)."""
        row = explanation_row(**fields)
        self._upsert(explanations, [row], ["id"], where=(explanations.c.status != "ok") if keep_ok else None)
        self.sync_keyword_index([row["id"]])
        return str(row["id"])

    def save_labels(self, explanation_rows: list[dict[str, Any]], score_rows: list[dict[str, Any]]) -> set[str]:
        """Explanations (:func:`explanation_row`, each kept when an ok one is stored already) and
        scores (:func:`score_row`) of many units in one transaction, with their keyword rows: a few
        statements for the lot instead of a few per unit. A score of an explanation in
        ``explanation_rows`` whose ok row was stored by someone else (a duplicate delivery) is not
        written: it scored a text that is not the stored one. Returns the ids of the explanations written."""
        from store import keyword

        def write(conn: Any) -> set[str]:
            written: set[str] = set()
            if explanation_rows:
                stmt = dialect_insert(self.engine, explanations)
                cols = {c: getattr(stmt.excluded, c) for c in explanation_rows[0] if c != "id"}
                upsert = stmt.on_conflict_do_update(
                    index_elements=["id"], set_=cols, where=explanations.c.status != "ok"
                ).returning(explanations.c.id)
                written = set(conn.execute(upsert, explanation_rows).scalars())
            skipped = {r["id"] for r in explanation_rows} - written
            kept = [r for r in score_rows if r["explanation_id"] not in skipped]
            self._upsert(scores, kept, ["id"], conn=conn)
            keyword.sync(self, sorted(written | {r["explanation_id"] for r in kept}), conn=conn)
            return written

        return retry_deadlocks(self.engine, write)

    def get_explanation(self, explanation_id: str) -> Explanation | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(explanations).where(explanations.c.id == explanation_id)).mappings().first()
        return explanation_from_row(row) if row else None

    def get_explanations(self, explanation_ids: list[str]) -> dict[str, Explanation]:
        """Explanations by id (those that exist), in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(explanations).where(explanations.c.id.in_(explanation_ids))).mappings().all()
        return {r["id"]: explanation_from_row(r) for r in rows}

    def explanations_for(self, unit_ids: list[str], collection_id: str | None = None) -> list[Explanation]:
        q = select(explanations).where(explanations.c.unit_id.in_(unit_ids))
        if collection_id is not None:
            q = q.where(explanations.c.collection_id == collection_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(explanations.c.unit_id, explanations.c.created_at)).mappings().all()
        return [explanation_from_row(r) for r in rows]

    def ok_explanations_under(self, unit_prefix: str, limit: int = 100_000) -> list[Explanation]:
        """The ok explanations of units whose id starts with ``unit_prefix`` (``MODEL/HOOKPOINT/``), at
        most ``limit``, newest last."""
        escaped = unit_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = (
            select(explanations)
            .where(explanations.c.unit_id.like(escaped + "%", escape="\\"), explanations.c.status == "ok")
            .order_by(explanations.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [explanation_from_row(r) for r in conn.execute(q).mappings().all()]

    def labeled_unit_ids(self) -> list[str]:
        """Units that have at least one explanation row (ok or failed), in id order."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(select(explanations.c.unit_id).distinct().order_by(explanations.c.unit_id)).scalars()
            )

    def mark_indexed(self, explanation_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(explanations).where(explanations.c.id == explanation_id).values(indexed_at=now()))

    def mark_indexed_many(self, explanation_ids: list[str]) -> None:
        """:meth:`mark_indexed` for many explanations in one transaction."""
        with self.engine.begin() as conn:
            for s in range(0, len(explanation_ids), 500):
                conn.execute(
                    update(explanations)
                    .where(explanations.c.id.in_(explanation_ids[s : s + 500]))
                    .values(indexed_at=now())
                )

    def index_token(self) -> datetime | None:
        """The latest ``indexed_at``: it changes whenever any process writes the vector index."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return as_utc(conn.execute(select(func.max(explanations.c.indexed_at))).scalar())

    def explanation_details(self, explanation_ids: list[str]) -> dict[str, ExplanationDetail]:
        """Explanations by id, each with its unit's record and its scores (three queries on one
        connection: what a page of search hits needs)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(explanations).where(explanations.c.id.in_(explanation_ids))).mappings().all()
            blobs = dict(
                conn.execute(
                    select(units.c.id, units.c.record).where(units.c.id.in_(sorted({r["unit_row"] for r in rows})))
                ).all()
            )
            srows = conn.execute(select(scores).where(scores.c.explanation_id.in_(explanation_ids))).mappings().all()
        by_expl: dict[str, list[Score]] = {}
        for s in srows:
            by_expl.setdefault(s["explanation_id"], []).append(score_from_row(s))
        return {
            r["id"]: ExplanationDetail(
                explanation_from_row(r),
                UnitRecord.from_blob(blobs[r["unit_row"]]) if r["unit_row"] in blobs else None,
                tuple(by_expl.get(r["id"], ())),
            )
            for r in rows
        }

    def indexed_since(self, since: datetime | None) -> list[str]:
        """Ids of explanations indexed at or after ``since`` (all indexed ones for ``None``)."""
        q = select(explanations.c.id).where(explanations.c.indexed_at.is_not(None))
        if since is not None:
            q = q.where(explanations.c.indexed_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    # -- scores -----------------------------------------------------------------------
    def save_score(self, **fields: Any) -> str:
        """Upsert on (explanation, scorer); ``fields`` are :func:`score_row`'s."""
        row = score_row(**fields)
        self._upsert(scores, [row], ["id"])
        from store import keyword

        if row["scorer"] == keyword.SEARCH_SCORER:  # the keyword row holds this scorer's value only
            keyword.set_score(self, row["explanation_id"], row["value"] if row["status"] == "ok" else None)
        return str(row["id"])

    def get_score(self, explanation_id: str, scorer: str) -> Score | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(scores).where(scores.c.id == make_score_id(explanation_id, scorer)))
                .mappings()
                .first()
            )
        return score_from_row(row) if row else None

    def scores_for(self, explanation_ids: list[str]) -> list[Score]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(scores).where(scores.c.explanation_id.in_(explanation_ids))).mappings().all()
        return [score_from_row(r) for r in rows]

    def count_rows(self) -> dict[str, int]:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (collections, units, explanations, scores)
            }

    # -- undo (an all-or-nothing import) ----------------------------------------------
    def explanation_state(self, explanation_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored rows of these explanations and of their scores as they are now (none for an
        explanation not yet written): what :meth:`restore_explanations` puts back."""
        with self.engine.connect() as conn:
            return {
                "explanations": [
                    dict(r)
                    for r in conn.execute(select(explanations).where(explanations.c.id.in_(explanation_ids))).mappings()
                ],
                "scores": [
                    dict(r)
                    for r in conn.execute(select(scores).where(scores.c.explanation_id.in_(explanation_ids))).mappings()
                ],
            }

    def restore_explanations(self, explanation_ids: list[str], state: dict[str, list[dict[str, Any]]]) -> None:
        """Put these explanations and their scores back as :meth:`explanation_state` read them, in one
        transaction: rows written since are deleted, rows changed since get their old values back;
        then their keyword rows follow."""
        from store.keyword import sync
        from store.schema import keyword_docs

        old_expl = {r["id"] for r in state["explanations"]}
        old_scores = {r["id"] for r in state["scores"]}
        new_expl = sorted(set(explanation_ids) - old_expl)
        with self.engine.begin() as conn:
            conn.execute(
                scores.delete().where(scores.c.explanation_id.in_(explanation_ids), scores.c.id.not_in(old_scores))
            )
            if new_expl:
                conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id.in_(new_expl)))
                conn.execute(explanations.delete().where(explanations.c.id.in_(new_expl)))
            for table, rows in ((explanations, state["explanations"]), (scores, state["scores"])):
                if rows:
                    stmt = dialect_insert(self.engine, table)
                    cols = {c: getattr(stmt.excluded, c) for c in rows[0] if c != "id"}
                    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=cols), rows)
        sync(self, sorted(old_expl))

    # -- keyword index (search, HTTP API) ---------------------------------------------
    def rebuild_keyword_index(self) -> int:
        """Recompute the whole keyword index from the source tables; returns its row count."""
        from store import keyword

        return keyword.rebuild(self)

    def keyword_search(
        self,
        query: str,
        *,
        limit: int,
        model: str | None = None,
        layer: int | None = None,
        source: str | None = None,
        min_score: float | None = None,
        domain: str | None = None,
        engine: str = "auto",
    ) -> list[tuple[str, float]]:
        """Full-text matches (explanation id, relevance) that pass the filters, best first: from the SQL
        full-text index (``engine="sql"``), from the in-memory BM25 ranking (``"scan"``, loaded on first
        use), or from the scan once :meth:`load_keyword_scan` loaded it and SQL until then (``"auto"``)."""
        from store import keyword

        if engine not in ("auto", "sql", "scan"):
            raise ValueError(f"engine must be auto, sql or scan, got {engine!r}")
        filters: dict[str, Any] = dict(model=model, layer=layer, source=source, min_score=min_score, domain=domain)
        if engine == "scan" or (engine == "auto" and self.keyword_scan is not None):
            self.load_keyword_scan()
            scan = self.refresh_keyword_scan()
            assert scan is not None  # loaded above; a reload swaps in another, never None
            return scan.top(keyword.query_terms(query), limit, **filters)
        return keyword.search(self, query, limit=limit, **filters)

    def load_keyword_scan(self) -> KeywordScan:
        """The in-memory keyword ranking (``store/keyword_scan.py``), filled from the keyword rows on first use."""
        with self._keyword_scan_lock:
            if self.keyword_scan is None:
                self.keyword_scan = self._fresh_keyword_scan()
            return self.keyword_scan

    def _fresh_keyword_scan(self) -> KeywordScan:
        from store import keyword
        from store.keyword_scan import KeywordScan

        _, _, newest = keyword.changes_since(self, 2**62)  # read first: later changes are re-read
        scan = KeywordScan()
        scan.put(keyword.scan_rows(self))
        scan.seq = newest or 0
        return scan

    def refresh_keyword_scan(self) -> KeywordScan | None:
        """Bring the loaded keyword ranking up to date with the keyword rows, whoever changed them, and
        return it: the rows named in the change log (``keyword_changes``, written by triggers) since it
        last read it are re-read, rows gone leave it. It is rebuilt whole, beside the one in use (which
        answers meanwhile), when the changes pass a fifth of its rows or the log no longer holds what
        it had not read."""
        from store import keyword

        with self._keyword_scan_lock:
            scan = self.keyword_scan
            if scan is None or self._keyword_scan_rebuilding:
                return scan
            overlap = keyword.CHANGES_OVERLAP_PG if self.engine.dialect.name == "postgresql" else 0
            changes, oldest, _ = keyword.changes_since(self, scan.seq - overlap)
            fresh = [(s, e) for s, e in changes if s not in scan.seen]
            lost = oldest is not None and oldest > scan.seq + 1  # pruned before this ranking read them
            ids = sorted({e for _, e in fresh})
            if not lost and len(ids) <= 0.2 * max(1, len(scan)):
                if ids:
                    rows = list(keyword.scan_rows(self, ids))
                    scan.put(rows)
                    scan.remove(sorted(set(ids) - {eid for eid, _, _ in rows}))
                    scan.seq = max([scan.seq] + [s for s, _ in fresh])
                    scan.seen = {s for s in scan.seen | {s for s, _ in fresh} if s > scan.seq - overlap}
                return scan
            self._keyword_scan_rebuilding = True
        try:
            rebuilt = self._fresh_keyword_scan()
            with self._keyword_scan_lock:
                self.keyword_scan = rebuilt
            return rebuilt
        finally:
            self._keyword_scan_rebuilding = False
