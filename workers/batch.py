"""Batch labeling through Celery: one task chain per unit, progress while waiting.

With no broker configured, an in-process worker is started first; otherwise the chains go
to the configured broker and separate ``celery -A workers worker`` processes run them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from explainer.config import Settings
from explainer.pipeline import LabelOptions


@dataclass(frozen=True)
class BatchResult:
    unit_ids: list[str]
    task_errors: dict[str, str]
    """Unit id → error of a chain that raised (a bug or an infrastructure fault), not a recorded failure."""
    seconds: float


def label_units(settings: Settings, collection_id: str, unit_ids: list[str], opts: LabelOptions, progress: bool = True,
                timeout_s: float | None = None) -> BatchResult:
    from tqdm.auto import tqdm

    from .celery_app import configure
    from .tasks import unit_chain

    app = configure(settings)
    if settings.embedded_broker:
        from .embedded import start_embedded_worker

        start_embedded_worker(app)
    start = time.monotonic()
    payload = opts.to_payload()
    pending: dict[str, Any] = {uid: unit_chain(collection_id, uid, payload).apply_async() for uid in unit_ids}
    errors: dict[str, str] = {}
    with tqdm(total=len(unit_ids), desc="label units", unit="unit", disable=not progress) as bar:
        while pending:
            for uid, res in list(pending.items()):
                if res.ready():
                    if res.failed():
                        errors[uid] = _chain_error(res)
                    pending.pop(uid)
                    bar.update(1)
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                for uid in pending:
                    errors[uid] = f"not finished after {timeout_s:.0f} s"
                break
            if pending:
                time.sleep(0.05)
    return BatchResult(list(unit_ids), errors, time.monotonic() - start)


def _chain_error(res: Any) -> str:
    node = res
    while node is not None:
        if node.failed():
            return f"{type(node.result).__name__}: {node.result}"
        node = node.parent
    return "failed"
