"""Sharded collection through Celery: one task per shard on the ``collect`` queue, then a merge task.

The client sends every shard's task at once (any ``collect`` worker takes any shard), waits for
them, sends one shard again when its worker was lost (the same infrastructure errors as labeling,
at most ``RESEND`` times), and sends the merge once every shard has stored its state. A shard that
fails for any other reason stops the command with its error; the other shards still finish and
store their states, so running the same command again runs only the missing shards. With no
broker configured, the in-process worker consumes the ``collect`` queue too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from explainer.errors import ExplainerError
from explainer.settings import Settings


def collect_sharded(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    config: dict[str, Any],
    sae: str | None,
    directions: str | None,
    n_shards: int,
    notice: Callable[[str], None] | None = None,
) -> str:
    """Run the collection as ``n_shards`` shard tasks and a merge task; returns its collection id."""
    from workers.batch import INFRASTRUCTURE_ERRORS, RESEND
    from workers.celery_app import configure
    from workers.tasks import collect_merge_task, collect_shard_task

    if n_shards < 1:
        from explainer.errors import InputError

        raise InputError(f"--shards must be at least 1, got {n_shards}")
    app = configure(settings)
    if settings.embedded_broker:
        from workers.embedded import start_embedded_worker

        start_embedded_worker(app)
    poll = 0.02 if settings.embedded_broker else 0.5
    common = (model, hookpoint, corpus, config)

    def send(i: int) -> Any:
        return collect_shard_task.apply_async((*common, i, n_shards, sae, directions))

    pending = {i: send(i) for i in range(n_shards)}
    resent: dict[int, int] = {}
    started, told = time.monotonic(), 0
    while pending:
        for i, res in list(pending.items()):
            if not res.ready():
                continue
            del pending[i]
            failed, exc = res.failed(), res.result
            res.forget()
            if not failed:
                continue
            if type(exc).__name__ in INFRASTRUCTURE_ERRORS and resent.get(i, 0) < RESEND:
                resent[i] = resent.get(i, 0) + 1
                pending[i] = send(i)
                continue
            if isinstance(exc, ExplainerError):
                raise exc
            raise ExplainerError(f"shard {i} of {n_shards} failed on the worker: {type(exc).__name__}: {exc}")
        waited = time.monotonic() - started
        if pending and notice is not None and waited > 60 * (told + 1):
            told += 1
            notice(f"{n_shards - len(pending)} of {n_shards} shards done after {waited:.0f} s")
        if pending:
            time.sleep(poll)
    res = collect_merge_task.apply_async((*common, n_shards, sae, directions))
    cid = res.get(propagate=False, disable_sync_subtasks=False)
    failed, exc = res.failed(), res.result
    res.forget()
    if failed:
        if isinstance(exc, ExplainerError):
            raise exc
        raise ExplainerError(f"the merge of {n_shards} shards failed on the worker: {type(exc).__name__}: {exc}")
    return str(cid)
