"""Database plumbing shared by the store's repositories: the engine, the generic upsert,
additive migrations and the decoding of JSON and timestamp columns."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, create_engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from store.schema import metadata

if TYPE_CHECKING:
    from store.keyword_scan import KeywordScan


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC as its zone: SQLite drops the tzinfo on the way back; the store only writes UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def decode_json(row: dict[str, Any], *fields: str) -> dict[str, Any]:
    """``row`` with the JSON text of ``fields`` parsed and its timestamps in UTC (in place)."""
    for f in fields:
        if isinstance(row.get(f), str):
            row[f] = json.loads(row[f])
    for f in ("created_at", "finished_at", "indexed_at"):
        if f in row:
            row[f] = as_utc(row[f])
    return row


def dialect_insert(engine: Engine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the engine's dialect (PostgreSQL or SQLite); both know ``ON CONFLICT``."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


SCHEMA_LOCK_KEY = 0x6578706C  # any constant: the PostgreSQL advisory lock taken while the schema is made


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """One process at a time creates or upgrades the schema: workers starting together on a fresh
    database would otherwise race to create the same tables ("table ... already exists"). PostgreSQL:
    a session advisory lock; SQLite: a lock file beside the database (``filelock``)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    from filelock import FileLock

    with FileLock(f"{database}.schema.lock", timeout=300):
        yield


class StoreBase:
    """One database: its engine (tables created, missing nullable columns added) and the upsert
    every write goes through. Safe to share between threads."""

    def __init__(self, url: str):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **kwargs)
        self.keyword_scan: KeywordScan | None = None
        """The in-memory keyword ranking, once ``load_keyword_scan`` filled it (``store/keyword_scan.py``)."""
        self._keyword_scan_lock = threading.Lock()
        self._keyword_scan_rebuilding = False
        if url.startswith("sqlite"):
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

        from store import keyword

        with schema_lock(self.engine):
            metadata.create_all(self.engine)
            add_missing_columns(self.engine)
            keyword.ensure_schema(self.engine)

    def _upsert(
        self, table: Table, rows: list[dict[str, Any]], keys: list[str], where: Any = None, conn: Any = None
    ) -> None:
        """Insert or update on the key; with ``where``, only existing rows that match it are updated.
        ``conn``: a connection whose transaction the statements join (else one of their own)."""
        if not rows:
            return
        stmt = dialect_insert(self.engine, table)
        cols = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
        stmt = (
            stmt.on_conflict_do_update(index_elements=keys, set_=cols, where=where)
            if cols
            else stmt.on_conflict_do_nothing()
        )
        if conn is None:
            with self.engine.begin() as own:
                for start in range(0, len(rows), 500):
                    own.execute(stmt, rows[start : start + 500])
            return
        for start in range(0, len(rows), 500):
            conn.execute(stmt, rows[start : start + 500])

    def sync_keyword_index(self, explanation_ids: list[str]) -> None:
        """Update the keyword-index rows of these explanations from the source tables."""
        from store import keyword

        keyword.sync(self, explanation_ids)


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
                raise RuntimeError(
                    f"the store's table {table.name} lacks the required column {col.name}: "
                    "migrate it or start from an empty database"
                )
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
