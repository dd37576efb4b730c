"""Many hookpoints per pass as a pipeline stage: one collection per hookpoint, one forward pass.

Each hookpoint is its own collection, with the id a separate ``collect`` of it would have (so
either reuses the other); hookpoints whose collection is already done are skipped, the others are
collected together (:class:`~explainer.collect.multi.MultiCollector`) and written one by one.
Raw units only (MLP neurons, residual dimensions): an SAE or directions name one hookpoint.
"""

from __future__ import annotations

import logging

from explainer.collect.collector import CollectConfig
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.models import load_model
from explainer.collect.multi import MultiCollector
from explainer.pipeline.collection import plan_collection, start_collector
from explainer.runtime import get_store
from explainer.settings import Settings

log = logging.getLogger(__name__)


def collect_many_stage(
    settings: Settings, model: str, hookpoints: list[str], corpus: str | None, cfg: CollectConfig, progress: bool = True
) -> list[str]:
    """Collect every hookpoint of ``hookpoints`` in shared forward passes; returns their collection
    ids in the order given. A failure marks every collection of the pass as failed."""
    store = get_store(settings)
    plans = {hp: plan_collection(settings, model, hp, corpus, cfg) for hp in dict.fromkeys(hookpoints)}
    todo = []
    for hp, plan in plans.items():
        existing = store.get_collection(plan.collection_id)
        if existing and existing["status"] == "done":
            log.info("reusing collection %s of %s", plan.collection_id, hp)
        else:
            todo.append(plan)
    if todo:
        lm = load_model(model, settings.device)
        for plan in todo:  # every hookpoint exists before any collection is marked running
            resolve_hookpoint(lm.model, plan.hookpoint)
        seqs = todo[0].seqs  # every plan cut the same corpus with the same tokenizer
        collectors = [start_collector(settings, plan, model, cfg, seqs=seqs) for plan in todo]
        try:
            MultiCollector(collectors).run(progress=progress)
            for plan, col in zip(todo, collectors):
                records = col.records()
                store.finish_collection(plan.collection_id, records, records[0].stats.n_tokens if records else 0)
        except BaseException as exc:
            for plan in todo:
                if (store.get_collection(plan.collection_id) or {}).get("status") != "done":
                    store.fail_collection(plan.collection_id, f"{type(exc).__name__}: {exc}")
            raise
    return [plans[hp].collection_id for hp in hookpoints]
