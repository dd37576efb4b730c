"""The keyword index: full-text search over explanation texts, with the search filters as columns.

``keyword_docs`` (declared in :mod:`store.sql`) is a denormalised copy of each ok explanation:
its text plus what search filters on (model, layer, source, the corpus domains of the unit's
top windows, the score). SQLite indexes its text with an FTS5 table (porter stemming, kept in
sync by triggers); PostgreSQL with a generated ``tsvector`` column and a GIN index.

The SQL store keeps the rows in sync whenever an explanation is saved, and puts each new
:data:`SEARCH_SCORER` value on its row (:func:`set_score`); :func:`rebuild` recomputes all of them
from the source tables. Filters are part of the full-text query (a join
and a WHERE clause), never applied to its results afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Engine, select, text

from store.records import Score

SEARCH_SCORER = "simulation-context"
"""The scorer whose value both search indexes filter on (``--min-score``): the first of
``explainer.score.registry.DEFAULT_SCORERS``, which ``pipeline.index_stage`` uses (a test keeps them equal;
the store does not import the explainer package)."""

UNSCORED = -2.0
"""Score stored for explanations without an ok score, so ``score >= x`` never matches them."""

MAX_TERMS = 16
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in into is it its of on or that the this to was were which with"
    " fires fire firing activates activation activations neuron neurons unit units feature features token tokens"
    " words word on about".split()
)

_SQLITE_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS keyword_fts USING fts5("
    "text, content='keyword_docs', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_ai AFTER INSERT ON keyword_docs BEGIN "
    "INSERT INTO keyword_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_ad AFTER DELETE ON keyword_docs BEGIN "
    "INSERT INTO keyword_fts(keyword_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_au AFTER UPDATE OF text ON keyword_docs BEGIN "
    "INSERT INTO keyword_fts(keyword_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO keyword_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE INDEX IF NOT EXISTS ix_explanations_indexed_at ON explanations (indexed_at)",
    # the change log the in-memory keyword ranking follows (store/keyword_scan.py): every writer, any process
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_log_ai AFTER INSERT ON keyword_docs BEGIN "
    "INSERT INTO keyword_changes(explanation_id) VALUES (new.explanation_id); END",
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_log_au AFTER UPDATE ON keyword_docs BEGIN "
    "INSERT INTO keyword_changes(explanation_id) VALUES (new.explanation_id); END",
    "CREATE TRIGGER IF NOT EXISTS keyword_docs_log_ad AFTER DELETE ON keyword_docs BEGIN "
    "INSERT INTO keyword_changes(explanation_id) VALUES (old.explanation_id); END",
]
_POSTGRES_DDL = [
    "ALTER TABLE keyword_docs ADD COLUMN IF NOT EXISTS tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX IF NOT EXISTS keyword_docs_tsv ON keyword_docs USING gin (tsv)",
    "CREATE INDEX IF NOT EXISTS ix_explanations_indexed_at ON explanations (indexed_at)",
    "CREATE OR REPLACE FUNCTION keyword_docs_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' THEN INSERT INTO keyword_changes(explanation_id) VALUES (OLD.explanation_id); "
    "ELSE INSERT INTO keyword_changes(explanation_id) VALUES (NEW.explanation_id); END IF; RETURN NULL; END $$",
    "CREATE OR REPLACE TRIGGER keyword_docs_log AFTER INSERT OR UPDATE OR DELETE ON keyword_docs "
    "FOR EACH ROW EXECUTE FUNCTION keyword_docs_log()",
]


def ensure_schema(engine: Engine) -> None:
    """Create the full-text index next to ``keyword_docs`` (idempotent)."""
    from store.transactions import retry_deadlocks

    ddl = _POSTGRES_DDL if engine.dialect.name == "postgresql" else _SQLITE_DDL

    def create(conn: Any) -> None:
        todo = ddl
        if engine.dialect.name == "postgresql":
            # CREATE OR REPLACE TRIGGER locks keyword_docs against writers even when nothing changes:
            # run the change-log statements only where the trigger is missing
            if conn.exec_driver_sql("SELECT 1 FROM pg_trigger WHERE tgname = 'keyword_docs_log'").first():
                todo = [d for d in ddl if "keyword_docs_log" not in d]
        for stmt in todo:
            conn.exec_driver_sql(stmt)

    # These statements lock their tables even when there is nothing to create: against a transaction
    # that writes explanations and keyword rows together, PostgreSQL may abort either one.
    retry_deadlocks(engine, create)


UnitSource = Literal["mlp", "resid", "mlp_in", "mlp_out", "attn_out", "sae", "directions"]
SOURCES: tuple[UnitSource, ...] = get_args(UnitSource)
"""What kind of unit a hookpoint's units are (the ``--source`` filter): MLP neurons, residual-stream
dimensions, raw dimensions of the MLP input/output or attention output, SAE or transcoder
features, and projections on directions."""


def hookpoint_fields(hookpoint: str) -> tuple[int, str]:
    """(layer, source) of a unit hookpoint: ``layers.15.mlp`` → (15, "mlp"), ``layers.3`` → (3, "resid"),
    ``layers.3.sae-NAME-HASH`` → (3, "sae"), ``layers.3.dir-NAME-HASH`` → (3, "directions");
    layer -1 when the hookpoint names none."""
    parts = hookpoint.split(".")
    layer = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    last = parts[-1]
    if last.startswith("sae-"):
        return layer, "sae"
    if last.startswith("dir-"):
        return layer, "directions"
    if last in SOURCES:
        return layer, last
    return layer, "resid"


def unit_domains(record: Any) -> list[str]:
    """Sorted corpus domains of the unit's top-activating windows (what ``--domain`` filters on)."""
    return sorted({w.domain for w in record.windows if w.kind == "top"})


def domains_field(domains: Iterable[str]) -> str:
    """Domains as one text column (``",code,docs,"``): ``LIKE '%,code,%'`` matches one of them."""
    return "," + ",".join(domains) + ","


def parse_domains(field: str) -> tuple[str, ...]:
    """The domains of a :func:`domains_field` text."""
    return tuple(d for d in field.split(",") if d)


@dataclass(frozen=True)
class IndexDoc:
    """What both search indexes hold about one ok explanation, computed from the source tables."""

    explanation_id: str
    unit_id: str
    collection_id: str
    model: str
    hookpoint: str
    explainer_model: str
    text: str
    domains: tuple[str, ...]
    score: Score | None
    """The score (``status``, ``value``, ``ci_low``, ``ci_high``, ``created_at``; no details) by the
    scorer :func:`iter_docs` was asked for (:data:`SEARCH_SCORER` unless told), if any."""
    name: str | None = None
    """The unit's own name (a direction named with ``--directions``): searchable by keyword."""
    indexed_at: datetime | None = None
    """When the explanation was last put in the vector index (``None``: never); as the database returns
    it, like the score's ``created_at`` (comparable with each other, naive on SQLite)."""

    def row(self) -> dict[str, Any]:
        """The ``keyword_docs`` row."""
        layer, source = hookpoint_fields(self.hookpoint)
        value = self.score.value if self.score is not None and self.score.status == "ok" else None
        return dict(
            explanation_id=self.explanation_id,
            unit_id=self.unit_id,
            collection_id=self.collection_id,
            model=self.model,
            hookpoint=self.hookpoint,
            layer=layer,
            source=source,
            explainer_model=self.explainer_model,
            domains=domains_field(self.domains),
            score=float(value) if value is not None else UNSCORED,
            text=f"{self.text}\n{self.name}" if self.name else self.text,
        )


def iter_docs(
    store: Any,
    explanation_ids: list[str] | None = None,
    batch: int = 1000,
    scorer: str = SEARCH_SCORER,
    conn: Any = None,
) -> Iterator[IndexDoc]:
    """Index documents of ok explanations (all of them, or those of ``explanation_ids``), by id: one
    query per ``batch`` (explanation, unit fields, ``scorer``'s score); a unit's record is read only for
    rows written before the units table kept its domains and name. ``conn``: read within that
    connection's transaction (else on a connection of its own per batch)."""
    from store.records import UnitRecord
    from store.schema import explanations, scores, units

    last = ""
    while True:
        q = (
            select(
                explanations.c.id,
                explanations.c.unit_id,
                explanations.c.collection_id,
                explanations.c.explainer_model,
                explanations.c.text,
                explanations.c.unit_row,
                explanations.c.indexed_at,
                units.c.model,
                units.c.hookpoint,
                units.c.top_domains,
                units.c.name,
                scores.c.status.label("score_status"),
                scores.c.value.label("score_value"),
                scores.c.ci_low.label("score_ci_low"),
                scores.c.ci_high.label("score_ci_high"),
                scores.c.created_at.label("score_at"),
            )
            .join(units, units.c.id == explanations.c.unit_row)
            .join(
                scores,
                (scores.c.explanation_id == explanations.c.id) & (scores.c.scorer == scorer),
                isouter=True,
            )
            .where(explanations.c.status == "ok", explanations.c.id > last)
            .order_by(explanations.c.id)
            .limit(batch)
        )
        if explanation_ids is not None:
            q = q.where(explanations.c.id.in_(explanation_ids))
        with nullcontext(conn) if conn is not None else store.engine.connect() as c:
            rows = c.execute(q).mappings().all()
            if not rows:
                return
            old = sorted({r["unit_row"] for r in rows if r["top_domains"] is None})
            blobs = dict(c.execute(select(units.c.id, units.c.record).where(units.c.id.in_(old))).all()) if old else {}
        records = {uid: UnitRecord.from_blob(b) for uid, b in blobs.items()}
        for r in rows:
            rec = records.get(r["unit_row"])
            score = (
                None
                if r["score_status"] is None
                else Score(
                    scorer=scorer,
                    value=r["score_value"],
                    ci_low=r["score_ci_low"],
                    ci_high=r["score_ci_high"],
                    status=r["score_status"],
                    created_at=r["score_at"],
                    explanation_id=r["id"],
                )
            )
            yield IndexDoc(
                r["id"],
                r["unit_id"],
                r["collection_id"],
                r["model"],
                r["hookpoint"],
                r["explainer_model"],
                r["text"],
                tuple(unit_domains(rec)) if rec is not None else parse_domains(r["top_domains"]),
                score,
                rec.name if rec is not None else r["name"],
                r["indexed_at"],
            )
        last = rows[-1]["id"]


def sync(store: Any, explanation_ids: list[str], conn: Any = None) -> None:
    """Bring the keyword rows of these explanations in line with the source tables (``conn``: within
    that connection's transaction, else in one of their own)."""
    if not explanation_ids:
        return
    if conn is None:
        with store.engine.begin() as own:
            sync(store, explanation_ids, own)
        return
    from store.schema import keyword_docs

    docs = [d.row() for d in iter_docs(store, explanation_ids, conn=conn)]
    gone = set(explanation_ids) - {d["explanation_id"] for d in docs}
    if gone:
        conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id.in_(sorted(gone))))
    store._upsert(keyword_docs, docs, ["explanation_id"], conn=conn)


def set_score(store: Any, explanation_id: str, value: float | None) -> None:
    """Put a new :data:`SEARCH_SCORER` value (``None``: no ok score) on the explanation's keyword row, if it
    has one (only ok explanations do): what :func:`sync` would compute, in one statement."""
    from sqlalchemy import update

    from store.schema import keyword_docs

    with store.engine.begin() as conn:
        conn.execute(
            update(keyword_docs)
            .where(keyword_docs.c.explanation_id == explanation_id)
            .values(score=float(value) if value is not None else UNSCORED)
        )


def rebuild(store: Any, batch: int = 2000) -> int:
    """Recompute every keyword row from the source tables; returns the number of rows."""
    from store.schema import keyword_docs

    seen: set[str] = set()
    buf: list[dict[str, Any]] = []
    for doc in iter_docs(store, batch=batch):
        buf.append(doc.row())
        seen.add(doc.explanation_id)
        if len(buf) >= batch:
            store._upsert(keyword_docs, buf, ["explanation_id"])
            buf = []
    store._upsert(keyword_docs, buf, ["explanation_id"])
    with store.engine.begin() as conn:
        stale = [e for e in conn.execute(select(keyword_docs.c.explanation_id)).scalars() if e not in seen]
        for s in range(0, len(stale), 500):
            conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id.in_(stale[s : s + 500])))
    return len(seen)


def scan_rows(
    store: Any, explanation_ids: list[str] | None = None, batch: int = 10_000
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(explanation id, text, filter metadata) of every keyword row, or of those of ``explanation_ids``:
    what the in-memory keyword ranking (``store/keyword_scan.py``) holds. Read by id, ``batch`` rows a query."""
    from store.schema import keyword_docs

    d = keyword_docs.c
    cols = (d.explanation_id, d.text, d.model, d.layer, d.source, d.score, d.domains)
    if explanation_ids is not None:
        for s in range(0, len(explanation_ids), 500):
            with store.engine.connect() as conn:
                rows = conn.execute(select(*cols).where(d.explanation_id.in_(explanation_ids[s : s + 500]))).all()
            yield from (_scan_row(*r) for r in rows)
        return
    last = ""
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(*cols).where(d.explanation_id > last).order_by(d.explanation_id).limit(batch)
            ).all()
        if not rows:
            return
        yield from (_scan_row(*r) for r in rows)
        last = rows[-1][0]


CHANGES_KEPT = 200_000
"""Change-log entries (``keyword_changes``) kept once the log holds twice as many; a keyword ranking
that had not read the dropped ones reloads itself whole."""
CHANGES_OVERLAP_PG = 1_000
"""PostgreSQL hands out sequence numbers at insert, not at commit, so a transaction can commit after
a later number was read: the ranking re-reads this many numbers behind its last (skipping those it
applied). SQLite commits one writer at a time, in number order."""


def changes_since(store: Any, after: int) -> tuple[list[tuple[int, str]], int | None, int | None]:
    """(seq, explanation id) of the keyword-row changes numbered above ``after``, in order, with the
    log's oldest and newest numbers; drops the oldest entries when the log is past twice
    :data:`CHANGES_KEPT`."""
    from sqlalchemy import func

    from store.schema import keyword_changes as kc

    with store.engine.connect() as conn:
        rows = [
            (int(s), str(e))
            for s, e in conn.execute(select(kc.c.seq, kc.c.explanation_id).where(kc.c.seq > after).order_by(kc.c.seq))
        ]
        oldest, newest = conn.execute(select(func.min(kc.c.seq), func.max(kc.c.seq))).one()
    if oldest is not None and newest - oldest > 2 * CHANGES_KEPT:
        with store.engine.begin() as conn:
            conn.execute(kc.delete().where(kc.c.seq <= newest - CHANGES_KEPT))
    return rows, oldest, newest


def _scan_row(
    eid: str, text: str, model: str, layer: int, source: str, score: float, domains: str
) -> tuple[str, str, dict[str, Any]]:
    meta = {"model": model, "layer": layer, "source": source, "score": score, "domains": parse_domains(domains)}
    return eid, text, meta


def all_rows(store: Any) -> dict[str, dict[str, Any]]:
    """Every keyword row by explanation id (for consistency checks)."""
    from store.schema import keyword_docs

    cols = [c for c in keyword_docs.c if c.name not in ("id", "tsv")]
    with store.engine.connect() as conn:
        return {r["explanation_id"]: dict(r) for r in conn.execute(select(*cols)).mappings()}


def query_terms(query: str) -> list[str]:
    """Lower-case alphanumeric terms of a free-text query, stop words and single letters dropped, at most
    :data:`MAX_TERMS`. Only these reach the full-text engine, so its query syntax cannot be injected."""
    terms = [
        t for t in re.findall(r"[^\W_]+", query.lower()) if t not in STOPWORDS and (len(t) > 1 or t.isdigit())
    ]  # "e-mail" must not match "é"
    return list(dict.fromkeys(terms))[:MAX_TERMS]


def search(
    store: Any,
    query: str,
    *,
    limit: int,
    model: str | None = None,
    layer: int | None = None,
    source: str | None = None,
    min_score: float | None = None,
    domain: str | None = None,
) -> list[tuple[str, float]]:
    """(explanation id, relevance) of the best keyword matches that pass the filters, best first.
    Any query term may match (OR); relevance is BM25 on SQLite and ``ts_rank`` on PostgreSQL."""
    terms = query_terms(query)
    if not terms or limit <= 0:
        return []
    conds: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for name, value, sql in (
        ("model", model, "d.model = :model"),
        ("layer", layer, "d.layer = :layer"),
        ("source", source, "d.source = :source"),
        ("min_score", min_score, "d.score >= :min_score"),
    ):
        if value is not None:
            conds.append(sql)
            params[name] = value
    if domain is not None:
        conds.append("d.domains LIKE :domain ESCAPE '\\'")
        params["domain"] = "%," + re.sub(r"([%_\\])", r"\\\1", domain) + ",%"
    where = "".join(f" AND {c}" for c in conds)
    if store.engine.dialect.name == "postgresql":
        params["q"] = " | ".join(terms)
        sql = (
            "SELECT d.explanation_id, ts_rank(d.tsv, q) AS rel FROM keyword_docs d, "
            f"to_tsquery('english', :q) q WHERE d.tsv @@ q{where} ORDER BY rel DESC, d.explanation_id LIMIT :limit"
        )
    else:
        params["q"] = " OR ".join(f'"{t}"' for t in terms)
        sql = (
            "SELECT d.explanation_id, -bm25(keyword_fts) AS rel FROM keyword_fts "
            "JOIN keyword_docs d ON d.id = keyword_fts.rowid "
            f"WHERE keyword_fts MATCH :q{where} ORDER BY bm25(keyword_fts), d.explanation_id LIMIT :limit"
        )
    with store.engine.connect() as conn:
        return [(eid, float(rel)) for eid, rel in conn.execute(text(sql), params).all()]
