"""The SQL schema: every table of the store, defined once (SQLAlchemy Core).

- ``collections``: one per (model, hookpoint, corpus fingerprint, collect config);
- ``units``: one per (collection, unit id), with its record as a compressed blob; the same
  unit collected over two corpora has two records;
- ``explanations``: one per (unit, collection, explainer model, prompt hash); failures are
  rows with ``status='failed'`` and an ``error``, never a text;
- ``scores``: one per (explanation, scorer);
- ``keyword_docs``: the keyword index (:mod:`store.keyword`);
- ``runs`` and ``run_units``: labeling runs (:mod:`store.runs`);
- ``calibrations``: explanations re-scored on a user's corpus;
- ``collection_shards``: the finished state of each shard of a sharded collection (:mod:`store.shards`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

collections = Table(
    "collections",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("hookpoint", String(200), nullable=False),
    Column("corpus", Text, nullable=False),
    Column("corpus_hash", String(64), nullable=False),
    Column("config", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("n_tokens", Integer),
    Column("n_units", Integer),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

units = Table(
    "units",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("unit_id", String(300), nullable=False, index=True),
    Column("collection_id", String(64), ForeignKey("collections.id"), nullable=False, index=True),
    Column("model", String(200), nullable=False),
    Column("hookpoint", String(200), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("live", Boolean, nullable=False),
    Column("max_act", Float),
    Column("mean_act", Float),
    Column("std_act", Float),
    Column("density", Float),
    Column("record", LargeBinary, nullable=False),
    # What the keyword and vector indexes need of the record, kept beside it so that indexing an
    # explanation never parses the record: the domains of its top windows (",code,docs,") and the
    # unit's name. NULL in rows written before these columns existed (then the record is read).
    Column("top_domains", Text),
    Column("name", Text),
    UniqueConstraint("collection_id", "unit_id", name="uq_unit_in_collection"),
)

explanations = Table(
    "explanations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("unit_id", String(300), nullable=False, index=True),
    Column("collection_id", String(64), nullable=False),
    Column("unit_row", String(64), ForeignKey("units.id"), nullable=False, index=True),
    Column("explainer_model", String(200), nullable=False),
    Column("prompt_name", String(100), nullable=False),
    Column("prompt_version", String(32), nullable=False),
    Column("prompt_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("text", Text),
    Column("error", Text),
    Column("window_ids", Text),
    Column("settings", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("indexed_at", DateTime(timezone=True)),
    UniqueConstraint("unit_id", "collection_id", "explainer_model", "prompt_hash", name="uq_explanation_key"),
)

scores = Table(
    "scores",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("explanation_id", String(64), ForeignKey("explanations.id"), nullable=False, index=True),
    Column("scorer", String(100), nullable=False),
    Column("simulator_model", String(200)),
    Column("status", String(16), nullable=False),
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("per_domain", Text),
    Column("heldout_ids", Text),
    Column("n_tokens", Integer),
    Column("error", Text),
    Column("details", Text),  # JSON: how the score was computed (method, fidelity, extra figures)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("explanation_id", "scorer", name="uq_score_key"),
)

# The keyword index (see store/keyword.py): one row per ok explanation with the search filters as
# columns; its text is indexed by SQLite FTS5 (table ``keyword_fts``) or a PostgreSQL tsvector.
keyword_docs = Table(
    "keyword_docs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # the FTS5 rowid
    Column("explanation_id", String(64), ForeignKey("explanations.id"), nullable=False, unique=True),
    Column("unit_id", String(300), nullable=False),
    Column("collection_id", String(64), nullable=False),
    Column("model", String(200), nullable=False, index=True),
    Column("hookpoint", String(200), nullable=False),
    Column("layer", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("explainer_model", String(200), nullable=False),
    Column("domains", Text, nullable=False),  # ",code,docs," — domains of the unit's top windows
    Column("score", Float, nullable=False),  # keyword.UNSCORED when there is no ok score
    Column("text", Text, nullable=False),
)

# Every insert, update and delete of a keyword row, in commit order (written by triggers, store/keyword.py):
# what the in-memory keyword ranking of another process re-reads to stay equal to the SQL rows.
keyword_changes = Table(
    "keyword_changes",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("explanation_id", String(64), nullable=False),
    sqlite_autoincrement=True,  # numbers never reused, even after the oldest are dropped
)

# Labeling runs: one per (collection, label options, explain prompt hash); `explainer label` with the
# same options reuses it, so re-running continues it. A unit's state is read from the explanation and
# score rows its run_units row points at, never stored twice.
runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("collection_id", String(64), ForeignKey("collections.id"), nullable=False, index=True),
    Column("options", Text, nullable=False),  # JSON LabelOptions payload (no secrets, no retry flag)
    Column("explainer_model", String(200), nullable=False),
    Column("simulator", Text, nullable=False),  # JSON list of scorers; the first ranks search results
    Column("n_units", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # running | done | incomplete
    Column("n_done", Integer),
    Column("n_failed", Integer),
    Column("n_pending", Integer),  # at the last stop
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

run_units = Table(
    "run_units",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id"), primary_key=True),
    Column("unit_id", String(300), primary_key=True),
    Column("explanation_id", String(64), nullable=False, index=True),  # deterministic: the explanation key
)


# Workflow calibrations (`explainer calibrate`): an ok explanation re-scored on the held-out windows
# of the same unit collected over a user's own corpus; one per (explanation, scorer, that collection).
calibrations = Table(
    "calibrations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("explanation_id", String(64), ForeignKey("explanations.id"), nullable=False, index=True),
    Column("scorer", String(100), nullable=False),
    Column("collection_id", String(64), ForeignKey("collections.id"), nullable=False),
    Column("domain", String(200), nullable=False),  # the name reports show: "workflow domain NAME"
    Column("simulator_model", String(200)),
    Column("status", String(16), nullable=False),  # ok | failed
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("per_domain", Text),
    Column("heldout_ids", Text),
    Column("n_tokens", Integer),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("explanation_id", "scorer", "collection_id", name="uq_calibration_key"),
)


# Output-side descriptions: the tokens a unit promotes and suppresses, through the unembedding
# (method vocab-projection, explainer/intervene/output.py) and as measured when the unit is steered
# on the neutral prompts (method steering, by the intervention scorers). A property of the weights,
# not of a corpus: one row per unit id (the id names the model, hookpoint and SAE or directions) and method.
unit_outputs = Table(
    "unit_outputs",
    metadata,
    Column("unit_id", String(300), primary_key=True),
    Column("method", String(40), primary_key=True),
    Column("promoted", Text, nullable=False),  # JSON [{"token", …}], most raised first
    Column("suppressed", Text, nullable=False),  # JSON [{"token", …}], most lowered first
    Column("details", Text),  # JSON: how it was measured (steering: strength, KL, prompts)
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# Sharded collection (store/shards.py): the accumulator state of one finished shard of a collection
# split into n_shards, kept until the merge has written the collection's units. One row per shard
# index, so a shard run twice overwrites its row and is never merged twice.
collection_shards = Table(
    "collection_shards",
    metadata,
    Column("collection_id", String(64), primary_key=True),
    Column("n_shards", Integer, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("first_batch", Integer, nullable=False),
    Column("end_batch", Integer, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),  # torch.save of the collector state (CPU tensors)
    Column("seconds", Float),
    Column("finished_at", DateTime(timezone=True), nullable=False),
)
