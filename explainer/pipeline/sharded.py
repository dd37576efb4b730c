"""Sharded collection as pipeline stages: one stage per shard, and the merge.

``collect_shard_stage`` runs one shard of a collection (:mod:`explainer.collect.shards`) and
stores its finished state as a row of the SQL store keyed on (collection, shard count, shard
index); ``merge_shards_stage`` folds the rows into the collection's records, writes them like a
single-process collection (same collection id, so either path reuses the other's result) and
deletes the rows. Both are idempotent: a shard whose row exists, or any shard of a finished
collection, returns at once; a shard run twice overwrites its own row, so nothing is merged twice.
A shard killed part-way resumes from its checkpoint file when it runs again on the same host.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from explainer.collect.collector import CollectConfig
from explainer.collect.shards import merge_states, plan_shards, run_shard, state_from_bytes, state_to_bytes
from explainer.errors import ExplainerError
from explainer.pipeline.collection import plan_collection, start_collector
from explainer.runtime import get_store
from explainer.settings import Settings

log = logging.getLogger(__name__)


class ShardsMissingError(ExplainerError):
    """The merge found shards without a stored state (not run yet, or failed)."""


def collect_shard_stage(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    shard: int,
    n_shards: int,
    sae: str | None = None,
    directions: str | None = None,
) -> dict[str, Any]:
    """Run shard ``shard`` of ``n_shards`` of the collection and store its state; returns what
    was done (``ran``: false when the shard or the whole collection was already finished)."""
    from store import shards as rows

    plan = plan_collection(settings, model, hookpoint, corpus, cfg, sae, directions)
    cid, store = plan.collection_id, get_store(settings)
    out: dict[str, Any] = {"collection_id": cid, "shard": shard, "n_shards": n_shards, "ran": False}
    existing = store.get_collection(cid)
    if (existing and existing["status"] == "done") or shard in rows.done_shards(store, cid, n_shards):
        return out
    collector = start_collector(settings, plan, model, cfg, sae, directions, mark_running=False)
    part = plan_shards(collector.n_batches, n_shards)[shard]
    start = time.monotonic()
    checkpoint = settings.data_dir / "checkpoints" / f"{cid}.shard-{shard}-of-{n_shards}.pt"
    state = run_shard(collector, part, checkpoint=checkpoint)
    seconds = time.monotonic() - start
    n_tokens = int(state["stats.n_tokens"])
    rows.save_shard(
        store, cid, n_shards, shard, (part.first_batch, part.end_batch), n_tokens, state_to_bytes(state), seconds
    )
    return {**out, "ran": True, "batches": [part.first_batch, part.end_batch], "n_tokens": n_tokens, "seconds": seconds}


def merge_shards_stage(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    n_shards: int,
    sae: str | None = None,
    directions: str | None = None,
) -> str:
    """Merge the ``n_shards`` stored shard states into the collection's records; returns the
    collection id. Raises :class:`ShardsMissingError` naming the shards not finished."""
    from store import shards as rows

    plan = plan_collection(settings, model, hookpoint, corpus, cfg, sae, directions)
    cid, store = plan.collection_id, get_store(settings)
    existing = store.get_collection(cid)
    if existing and existing["status"] == "done":
        rows.clear_shards(store, cid)
        return cid
    done = rows.done_shards(store, cid, n_shards)
    missing = sorted(set(range(n_shards)) - set(done))
    if missing:
        raise ShardsMissingError(f"collection {cid[:12]}: shard(s) {missing} of {n_shards} have no finished state")
    collector = start_collector(settings, plan, model, cfg, sae, directions)
    try:
        expected = plan_shards(collector.n_batches, n_shards)
        for part in expected:
            if (done[part.index]["first_batch"], done[part.index]["end_batch"]) != (part.first_batch, part.end_batch):
                raise ExplainerError(
                    f"shard {part.index}'s stored batches differ from the plan: was the corpus changed?"
                )
        merged: dict[str, Any] | None = None
        for part in expected:  # one state at a time: the merge is associative
            blob = rows.shard_state(store, cid, n_shards, part.index)
            if blob is None:
                raise ShardsMissingError(f"collection {cid[:12]}: shard {part.index}'s state disappeared")
            state = state_from_bytes(blob)
            merged = state if merged is None else merge_states([merged, state])
        assert merged is not None
        collector.load(merged)
        collector.next_batch = collector.n_batches
        records = collector.records(names=getattr(plan.encoder, "names", None))
        store.finish_collection(cid, records, records[0].stats.n_tokens if records else 0)
    except BaseException as exc:
        store.fail_collection(cid, f"merge of {n_shards} shards: {type(exc).__name__}: {exc}")
        raise
    rows.clear_shards(store, cid)
    log.info("merged %d shards into collection %s", n_shards, cid)
    return cid
