"""Batch labeling through Celery: runs, resume, and a bounded window of chains in flight.

``label_units`` opens (or reuses) the *run* of (collection, options, explain prompt hash) in the
SQL store, adds the units to it, and sends one ``label_group → index`` chain per group of
``units_per_task`` units that are not done yet (failed units too with ``retry_failed``): an llm
worker explains and scores a group's units side by side and writes them in one transaction. At most
``window`` units are in flight: a 131,072-unit run never builds one giant message, and the client
holds at most ``window`` results. Progress (tqdm, with ETA) counts the units a previous invocation already finished.

With no broker configured, an in-process worker is started first; otherwise the chains go to
the configured broker and separate ``celery -A workers worker`` processes run them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from explainer.pipeline.backend import BatchResult
from explainer.pipeline.options import LabelOptions
from explainer.progress import Eta
from explainer.settings import Settings

log = logging.getLogger(__name__)


def run_options(opts: LabelOptions) -> dict[str, Any]:
    """The options that define a run: everything but the retry flag."""
    payload = opts.to_payload()
    payload.pop("retry_failed", None)
    return payload


def run_key(collection_id: str, opts: LabelOptions) -> str:
    """The run id of (collection, options, explain prompt hash): the same command gives the same run."""
    from explainer.llm.prompts import load_template
    from store.sql import key_id

    template = load_template(opts.explain_prompt)
    return key_id("run", collection_id, json.dumps(run_options(opts), sort_keys=True), template.sha256)


def open_run(settings: Settings, collection_id: str, unit_ids: Iterable[str], opts: LabelOptions) -> str:
    """Create or reuse the run and add ``unit_ids`` to it (each with its explanation's key)."""
    from explainer.llm.prompts import load_template
    from explainer.runtime import get_store
    from store import runs
    from store.records import make_explanation_id

    store = get_store(settings)
    run_id = run_key(collection_id, opts)
    runs.open_run(store, run_id, collection_id, run_options(opts), opts.explainer.model, list(opts.scorers))
    sha = load_template(opts.explain_prompt).sha256
    # The key of pipeline.explanation_key, without re-reading the template per unit.
    runs.add_units(
        store, run_id, ((uid, make_explanation_id(uid, collection_id, opts.explainer.model, sha)) for uid in unit_ids)
    )
    return run_id


def label_units(
    settings: Settings,
    collection_id: str,
    unit_ids: list[str],
    opts: LabelOptions,
    progress: bool = True,
    timeout_s: float | None = None,
    window: int | None = None,
    units_per_task: int | None = None,
) -> BatchResult:
    """Label ``unit_ids`` as one run (see the module docstring); returns when every chain this
    invocation sent has finished, or after ``timeout_s``. ``window``: units in flight at most
    (default ``settings.batch_window``); ``units_per_task``: units per chain (default
    ``settings.task_units``)."""
    from tqdm.auto import tqdm

    from explainer.runtime import get_store
    from store import runs
    from workers.celery_app import configure

    app = configure(settings)
    if settings.embedded_broker:
        from workers.embedded import start_embedded_worker

        start_embedded_worker(app)
    start = time.monotonic()
    store = get_store(settings)
    run_id = open_run(settings, collection_id, unit_ids, opts)
    wanted = set(unit_ids)
    redo = {"pending", "failed"} if opts.retry_failed else {"pending"}
    todo = [uid for uid, state in runs.unit_states(store, run_id) if uid in wanted and state in redo]
    skipped = len(wanted) - len(todo)
    errors: dict[str, str] = {}
    try:
        with tqdm(
            total=len(wanted),
            initial=skipped,
            desc="label units",
            unit="unit",
            disable=not progress,
            dynamic_ncols=True,
            # tqdm's own estimate averages in the warm-up (model loads): ours leaves it out
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        ) as bar:
            errors = _run_window(
                app,
                settings,
                collection_id,
                todo,
                opts,
                window or settings.batch_window,
                bar,
                None if timeout_s is None else start + timeout_s,
                units_per_task or settings.task_units,
            )
    except BaseException as exc:
        runs.finish_run(store, run_id, error=f"interrupted: {type(exc).__name__}")
        raise
    note = f"{len(errors)} chain(s) raised; first: {next(iter(errors.values()))}" if errors else None
    runs.finish_run(store, run_id, error=note)
    return BatchResult(
        run_id, list(unit_ids), errors, time.monotonic() - start, len(todo), skipped, runs.run_counts(store, run_id)
    )


def _run_window(
    app: Any,
    settings: Settings,
    collection_id: str,
    todo: list[str],
    opts: LabelOptions,
    window: int,
    bar: Any,
    deadline: float | None,
    units_per_task: int = 1,
) -> dict[str, str]:
    """Send ``todo`` as chains of ``units_per_task`` units each, keeping at most ``window`` units in
    flight, until it is exhausted; unit id → chain error (or the unit's own, reported by its group)."""
    from workers.tasks import group_chain

    payload = opts.to_payload()
    size = max(1, units_per_task)
    in_flight: dict[tuple[str, ...], Any] = {}
    errors: dict[str, str] = {}
    queue = iter([tuple(todo[i : i + size]) for i in range(0, len(todo), size)])
    poll = 0.02 if settings.embedded_broker else 0.1
    exhausted, held = False, None
    again: list[tuple[str, ...]] = []  # chains broken by the infrastructure, sent once more (idempotent)
    resent: dict[tuple[str, ...], int] = {}
    eta, notes = Eta(len(todo)), {}

    def show(refresh: bool = False, **note: object) -> None:
        notes.update(note)
        bar.set_postfix_str(", ".join([eta.text()] + [f"{k}={v}" for k, v in notes.items() if v]), refresh=refresh)

    show(refresh=True)
    shown_at = time.monotonic()
    units_in_flight = 0
    while True:
        try:
            while not exhausted and units_in_flight < max(1, window):
                group = held or (again.pop() if again else next(queue, None))
                if group is None:
                    exhausted = not again
                    break
                held = group  # kept until the broker took it
                in_flight[group] = group_chain(collection_id, list(group), payload).apply_async()
                units_in_flight += len(group)
                held = None
            if not in_flight:
                return errors
            finished = _finished(app, in_flight)
        except BROKER_ERRORS as exc:  # a restarting broker: wait and carry on where we were
            if deadline is not None and time.monotonic() > deadline:
                return _timed_out(errors, in_flight, held, again, queue)
            log.warning("broker or result backend unreachable (%s); retrying in 1 s", exc)
            show(refresh=True, broker="unreachable")
            time.sleep(1.0)
            continue
        if notes.get("broker"):
            show(refresh=True, broker=None)
        for group, outcome in finished.items():
            res = in_flight.pop(group)
            units_in_flight -= len(group)
            _forget(res)
            error = outcome.error
            if error is not None and error.kind in INFRASTRUCTURE_ERRORS and resent.get(group, 0) < RESEND:
                resent[group] = resent.get(group, 0) + 1  # e.g. the broker was away when a worker sent the next step
                again.append(group)
                exhausted = False
                continue
            errors.update({uid: error.text for uid in group} if error is not None else outcome.unit_errors)
            eta.update(len(group))
            show(chain_errors=len(errors))
            bar.update(len(group))
        if deadline is not None and time.monotonic() > deadline:
            return _timed_out(errors, in_flight, held, again, queue)
        if not finished:
            time.sleep(poll)
            if time.monotonic() - shown_at >= 1.0:  # the elapsed time keeps moving during a slow unit (or the warm-up)
                shown_at = time.monotonic()
                bar.refresh()


def _timed_out(
    errors: dict[str, str],
    in_flight: dict[tuple[str, ...], Any],
    held: tuple[str, ...] | None,
    again: list[tuple[str, ...]],
    queue: Any,
) -> dict[str, str]:
    """``errors`` plus every unit the timeout left unfinished: in flight, or never sent."""
    for group in in_flight:
        for uid in group:
            errors[uid] = "not finished before the timeout"
    for group in ([held] if held and held not in in_flight else []) + again + list(queue):
        for uid in group:
            errors.setdefault(uid, "not sent before the timeout")
    return errors


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (OperationalError, RedisConnectionError, RedisTimeoutError, ConnectionError)


BROKER_ERRORS = _broker_errors()
INFRASTRUCTURE_ERRORS = {
    "OperationalError",
    "ConnectionError",
    "TimeoutError",
    "WorkerLostError",
    "ConnectionRefusedError",
}
"""Chain errors that say nothing about the unit: its chain is sent again (at most RESEND times)."""
RESEND = 3


class ChainError(NamedTuple):
    """Why a chain failed: the class name of the earliest failed task's error and its text."""

    kind: str
    text: str


class ChainOutcome(NamedTuple):
    """A finished chain: its error (``None``: it succeeded), or the units its group could not label."""

    error: ChainError | None
    unit_errors: dict[str, str]


def _finished(app: Any, in_flight: dict[Any, Any]) -> dict[Any, ChainOutcome]:
    """Chains of ``in_flight`` whose last task is ready (a failure anywhere in a chain is
    propagated to its last task), with how they ended; one round trip to the backend."""
    from celery import states

    backend = app.backend
    keys_in = list(in_flight)
    if hasattr(backend, "mget") and hasattr(backend, "get_key_for_task"):
        keys = [backend.get_key_for_task(in_flight[k].id) for k in keys_in]
        values = backend.mget(keys)
        if isinstance(values, dict):  # the cache backend answers by key
            values = [values.get(k) for k in keys]
        metas = [backend.decode_result(v) if v else None for v in values]
        ready = {k: m for k, m in zip(keys_in, metas) if m and m["status"] in states.READY_STATES}
    else:  # pragma: no cover - other backends
        ready = {
            k: {"status": in_flight[k].state, "result": in_flight[k].result} for k in keys_in if in_flight[k].ready()
        }
    return {
        k: ChainOutcome(None, _unit_errors(m.get("result")))
        if m["status"] == states.SUCCESS
        else ChainOutcome(_chain_error(in_flight[k]), {})
        for k, m in ready.items()
    }


def _unit_errors(result: Any) -> dict[str, str]:
    """The units a group's chain reported it could not label (its last task's result)."""
    errors = result.get("errors") if isinstance(result, dict) else None
    return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}


def _chain_error(res: Any) -> ChainError:
    node, first = res, None
    while node is not None:  # the earliest failed task holds the original error
        if node.failed():
            first = node
        node = node.parent
    if first is None:
        return ChainError("", "failed")
    kind = type(first.result).__name__
    return ChainError(kind, f"{kind}: {first.result}")


def _forget(res: Any) -> None:
    """Drop a finished chain's results from the backend: the SQL store holds what matters, and a
    131k-unit run must not leave 400k results in Redis."""
    node = res
    while node is not None:
        try:
            node.forget()
        except Exception:  # noqa: BLE001 - best effort; results also expire on their own
            pass
        node = node.parent


def collect_on_worker(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    config: dict[str, Any],
    sae: str | None,
    directions: str | None,
    notice: Any = None,
) -> str:
    """Run the collection on a worker of the ``collect`` queue and wait for its collection id."""
    from workers.celery_app import configure
    from workers.tasks import collect_task

    configure(settings)
    return str(
        _wait_for(collect_task.apply_async((model, hookpoint, corpus, config, sae, directions)), "collection", notice)
    )


def audit_on_worker(settings: Settings, params: dict[str, Any], notice: Any = None) -> dict[str, Any]:
    """Run a failure-mode audit (``explainer.audit.service.run_audit`` keyword arguments) on a worker
    of the ``collect`` queue, where the subject model lives, and wait for its result."""
    from workers.celery_app import configure
    from workers.tasks import audit_task

    configure(settings)
    return dict(_wait_for(audit_task.apply_async((params,)), "audit", notice))


def _wait_for(res: Any, what: str, notice: Any) -> Any:
    """The result of a task sent to the ``collect`` queue, saying now and then that it waits for a
    worker; a failure on the worker is raised here (ours as it is, any other named)."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from explainer.errors import ExplainerError

    waited = 0.0
    while True:
        try:
            value = res.get(timeout=10, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeout:
            waited += 10
            if notice is not None and (waited in (10, 60) or waited % 600 == 0):
                notice(f"waiting for a worker on the 'collect' queue ({waited:.0f} s)")
            continue
        if res.failed():
            exc = res.result
            res.forget()
            if isinstance(exc, ExplainerError):
                raise exc
            raise ExplainerError(f"{what} failed on the worker: {type(exc).__name__}: {exc}")
        res.forget()
        return value
