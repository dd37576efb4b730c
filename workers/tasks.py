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
from explainer.pipeline import stages as pipeline
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

    return pipeline.collect_stage(
        worker_settings(),
        model,
        hookpoint,
        corpus,
        CollectConfig(**config),
        progress=False,
        sae=sae,
        directions=directions,
    )


@app.task(name="explainer.explain", **RETRY)
def explain_task(self: Any, collection_id: str, unit_id: str, options: dict[str, Any]) -> str:
    final = self.request.retries >= self.max_retries
    opts = pipeline.LabelOptions.from_payload(options)
    return pipeline.explain_stage(worker_settings(), collection_id, unit_id, opts, final)


@app.task(name="explainer.score", **RETRY)
def score_task(self: Any, explanation_id: str, options: dict[str, Any]) -> str:
    final = self.request.retries >= self.max_retries
    return pipeline.score_stage(worker_settings(), explanation_id, pipeline.LabelOptions.from_payload(options), final)


@app.task(name="explainer.index", bind=True)
def index_task(self: Any, explanation_id: str, options: dict[str, Any]) -> str:
    scorer = pipeline.LabelOptions.from_payload(options).scorers[0]
    return pipeline.index_stage(worker_settings(), explanation_id, scorer)


def unit_chain(collection_id: str, unit_id: str, options: dict[str, Any]) -> Any:
    """explain → simulate/score → index for one unit of a collection."""
    from celery import chain

    return chain(explain_task.s(collection_id, unit_id, options), score_task.s(options), index_task.s(options))
