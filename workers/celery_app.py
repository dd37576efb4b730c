"""The Celery application. Its configuration comes from :class:`explainer.settings.Settings`, read once
per process at its entry point, never at import:

- the ``explainer`` command (CLI, HTTP API) reads its settings and hands them to :func:`configure`
  before it sends a task or starts the in-process worker;
- a ``celery -A workers …`` process (a worker, flower) reads the environment the first time Celery
  asks for its configuration, which is that command's start, before it connects to anything.

Brokers:

- ``EXPLAINER_BROKER_URL`` unset: memory transport, for the in-process worker the CLI starts.
- ``EXPLAINER_BROKER_URL=redis://…``: Redis broker and result backend; run workers with
  ``celery -A workers worker -Q collect`` (GPU hosts), ``-Q llm`` and ``-Q index``.

Queues: ``collect`` (run the subject model over the corpus: GPU workers), ``llm`` (explain,
simulate and score) and ``index`` (embed and upsert into Chroma).
With a Chroma *directory*, run exactly one worker process on ``index`` (a Chroma directory
is not safe to share between processes); with a Chroma server, any number.
"""

from __future__ import annotations

import sys

from celery import Celery

from explainer.errors import ConfigError
from explainer.settings import Settings, load_settings


def celery_config(settings: Settings) -> dict:
    broker = settings.broker_url or "memory://localhost/"
    backend = settings.result_backend or ("cache+memory://" if settings.embedded_broker else broker)
    return dict(
        broker_url=broker,
        result_backend=backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_routes={
            "explainer.collect": {"queue": "collect"},
            "explainer.collect_shard": {"queue": "collect"},
            "explainer.collect_merge": {"queue": "collect"},
            "explainer.audit": {"queue": "collect"},
            "explainer.label_group": {"queue": "llm"},
            "explainer.score_subject": {"queue": "collect"},  # steers the subject model
            "explainer.index": {"queue": "index"},
            "explainer.index_stats": {"queue": "index"},
        },
        task_default_queue="llm",
        result_expires=24 * 3600,
        result_extended=True,
        worker_redirect_stdouts=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"polling_interval": 0.01}
        if settings.embedded_broker
        else {
            "visibility_timeout": settings.visibility_timeout_s,
            # Look for tasks a dead worker held every few seconds (kombu's default scans every
            # 100 s), so they are delivered again soon after the visibility timeout.
            "unacked_restore_interval": max(1.0, min(10.0, settings.visibility_timeout_s / 2)),
            "unacked_restore_throttle": 1,
        },
        # A restarted broker: keep reconnecting instead of giving up after 100 tries.
        broker_connection_max_retries=None,
        # A worker that sends the next task of a chain while the broker restarts keeps trying
        # (about a minute) instead of failing the chain.
        task_publish_retry_policy={"max_retries": 40, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0},
        result_backend_always_retry=True,
        result_backend_max_retries=30,
    )


app = Celery("explainer", include=["workers.tasks"])
_settings: list[Settings] = []


def configure(settings: Settings) -> Celery:
    """Point the app at ``settings``' broker before the first task is sent from this process, and
    make them the settings this process's tasks, LLM rate limits and model cache use."""
    _use(settings)
    app.conf.update(celery_config(settings))
    return app


def worker_settings() -> Settings:
    """The settings tasks run with: those the entry point of this process handed to :func:`configure`,
    or, in a process the ``celery`` command started, those read from the environment at its start."""
    return _settings_at_start()


def _use(settings: Settings) -> None:
    from explainer import runtime
    from explainer.llm import ratelimit

    _settings[:] = [settings]
    ratelimit.configure(settings)
    runtime.configure(settings)


def _settings_at_start() -> Settings:
    """The settings of a process the ``celery`` command started (a worker, flower): read from the
    environment once, the first time Celery asks for its configuration, before it connects to
    anything. A bad value ends the command with one line on stderr and exit status 2, as the CLI
    does. A process the ``explainer`` command started has handed its own to :func:`configure` first."""
    if not _settings:
        try:
            _use(load_settings())
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return _settings[0]


app.add_defaults(lambda: celery_config(_settings_at_start()))
