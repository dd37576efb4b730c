"""Thin Celery tasks: ids in, one library call, upserts out.

Settings are read once per process (:func:`workers.celery_app.worker_settings`), never per task.
Each task re-reads its state from the SQL store, so a message delivered twice does no harm.
Models (subject, local LLM, embedder) are loaded lazily on first use, once per worker process
(``explainer.collect.models.load_model`` and the runtime singletons), never at import or before a fork.
Transient LLM errors are retried with exponential backoff and jitter; on the last attempt
the stage records the failure instead of raising.
"""

from __future__ import annotations

from typing import Any

from explainer.errors import TransientLLMError
from explainer.pipeline import collection
from explainer.pipeline import stages as pipeline
from workers.batching import Batcher
from workers.celery_app import app, worker_settings

RETRY = dict(
    bind=True,
    autoretry_for=(TransientLLMError,),
    max_retries=3,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
)


@app.task(name="explainer.collect", bind=True)
def collect_task(
    self: Any,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    config: dict[str, Any],
    sae: str | None = None,
    directions: str | None = None,
) -> str:
    """Collect (or reuse) a collection on a worker of the ``collect`` queue (a GPU host). Paths
    (corpus, SAE, directions) are read on the worker, so they must exist there."""
    from explainer.collect.collector import CollectConfig

    return collection.collect_stage(
        worker_settings(),
        model,
        hookpoint,
        corpus,
        CollectConfig(**config),
        progress=False,
        sae=sae,
        directions=directions,
    )


@app.task(name="explainer.collect_shard", bind=True)
def collect_shard_task(
    self: Any,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    config: dict[str, Any],
    shard: int,
    n_shards: int,
    sae: str | None = None,
    directions: str | None = None,
) -> dict[str, Any]:
    """Run one shard of a sharded collection on a ``collect`` worker and store its state."""
    from explainer.collect.collector import CollectConfig
    from explainer.pipeline.sharded import collect_shard_stage

    cfg = CollectConfig(**config)
    return collect_shard_stage(worker_settings(), model, hookpoint, corpus, cfg, shard, n_shards, sae, directions)


@app.task(name="explainer.collect_merge", bind=True)
def collect_merge_task(
    self: Any,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    config: dict[str, Any],
    n_shards: int,
    sae: str | None = None,
    directions: str | None = None,
) -> str:
    """Merge the stored shard states of a sharded collection into its records; returns its id."""
    from explainer.collect.collector import CollectConfig
    from explainer.pipeline.sharded import merge_shards_stage

    cfg = CollectConfig(**config)
    return merge_shards_stage(worker_settings(), model, hookpoint, corpus, cfg, n_shards, sae, directions)


@app.task(name="explainer.audit", bind=True)
def audit_task(self: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A failure-mode audit on a ``collect`` worker (the subject model lives there); ``params`` are
    :func:`explainer.audit.service.run_audit`'s keyword arguments, paths as the worker sees them.
    The result goes back as JSON (numbers as plain floats)."""
    import json

    from explainer.audit.service import run_audit

    return dict(json.loads(json.dumps(run_audit(**params), default=_plain)))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


@app.task(name="explainer.label_group", **RETRY)
def label_group_task(
    self: Any, collection_id: str, unit_ids: list[str], options: dict[str, Any], score_options: dict[str, Any] | None
) -> dict[str, Any]:
    """Explain, then score with the scorers of ``score_options`` (``None``: explain only), a group of
    units side by side (:func:`explainer.pipeline.group.label_group`): one message, one pickup, one
    result and one transaction for the group instead of one per unit. A retry redoes only what is
    missing. Returns the group's explanation ids and the units that could not be labeled at all."""
    from explainer.pipeline.group import label_group

    final = self.request.retries >= self.max_retries
    score_opts = None if score_options is None else pipeline.LabelOptions.from_payload(score_options)
    result = label_group(
        worker_settings(), collection_id, unit_ids, pipeline.LabelOptions.from_payload(options), score_opts, final
    )
    return {"explanation_ids": result.explanation_ids, "errors": result.errors}


@app.task(name="explainer.score_subject", **RETRY)
def score_subject_task(self: Any, group: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The scorers that steer the subject model (``intervention``…) of a group's explanations, on a
    ``collect`` worker where that model lives; ``options`` names only those scorers."""
    final = self.request.retries >= self.max_retries
    opts = pipeline.LabelOptions.from_payload(options)
    for eid in group["explanation_ids"]:
        pipeline.score_stage(worker_settings(), eid, opts, final)
    return group


def _index_batch(scorer: str, explanation_ids: list[str]) -> None:
    from explainer.search.index import index_many

    index_many(worker_settings(), explanation_ids, scorer)


def _index_wait_s() -> float:
    settings = worker_settings()
    return 0.0 if settings.embedded_broker else settings.index_batch_wait_ms / 1000


INDEX_BATCHER: Batcher[str, str] = Batcher(_index_batch, name="index-batcher", wait_s=_index_wait_s)
"""Every index task of this process goes through it: tasks that run side by side (an index worker
with many threads) are embedded and upserted as one batch."""


@app.task(name="explainer.index_stats")
def index_stats_task() -> dict[str, int]:
    """How this index worker process batched so far (the benchmark asks it at the end of a run)."""
    return {"batches": INDEX_BATCHER.batches, "explanations": INDEX_BATCHER.items}


@app.task(name="explainer.index", bind=True)
def index_task(self: Any, group: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Embed and upsert a group's explanations (through the process's batcher, with those of the other
    index tasks running now); returns the units of the group that could not be labeled at all."""
    scorer = pipeline.LabelOptions.from_payload(options).scorers[0]
    for fut in [INDEX_BATCHER.submit(scorer, eid) for eid in group["explanation_ids"]]:
        fut.result()
    return {"errors": group.get("errors") or {}}


def group_chain(collection_id: str, unit_ids: list[str], options: dict[str, Any]) -> Any:
    """explain + simulate/score → index for a group of units of a collection (explaining and the scorers
    that call the LLM are one task on the ``llm`` queue). Scorers that steer the subject model run as
    their own step on the ``collect`` queue (after the others, before indexing)."""
    from celery import chain

    from explainer.score.registry import SUBJECT_MODEL_SCORERS

    subject = [s for s in options["scorers"] if s in SUBJECT_MODEL_SCORERS]
    others = [s for s in options["scorers"] if s not in SUBJECT_MODEL_SCORERS]
    steps = [label_group_task.s(collection_id, unit_ids, options, {**options, "scorers": others} if others else None)]
    if subject:
        steps.append(score_subject_task.s({**options, "scorers": subject}))
    return chain(*steps, index_task.s(options))
