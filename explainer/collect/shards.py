"""Sharded collection: the shard plan, running one shard, and merging shard states.

A collection's sequences are cut into ``n`` shards of *whole batches* (contiguous batch ranges
whose sizes differ by at most one batch). Each shard runs an ordinary
:class:`~explainer.collect.collector.Collector` built over the **whole** sequence list, but steps
only through its own batches, so every sequence keeps its global id and every batch is exactly the
batch a single-process run would have formed (same rows, same padding, same activations). A shard's
result is the collector's state (:meth:`Collector.state`); :func:`merge_states` combines the states
of all shards into the state a single process would have reached, and the records are built from it
as usual. Why the merged result equals a single-process run:

- **top windows**: each shard keeps its ``top_k`` candidates under one total order (max activation
  descending, then sequence id ascending, :func:`~explainer.collect.evidence.rank_key`); the
  ``top_k`` best of the union of the shards' top windows are the ``top_k`` best of the corpus.
- **quantile windows** come from a bottom-k reservoir: every (sequence, unit) pair where the unit
  fires gets a uniform random key drawn from a generator seeded by ``(seed, global batch index)``,
  and the pool keeps the pairs with the largest keys. A pair's key depends only on the seed, the
  batch size and its sequence id, never on the shard that drew it, so the pool of the union is the
  ``pool`` largest keys of the shards' pools: the same uniform sample a single process draws.
- **random windows**: the sequences and offsets are drawn once from ``Random(seed)`` over the global
  sequence count (the same in every shard); the shard that owns a sequence fills its row and the
  others leave zeros, so the merge is a sum.
- **statistics**: sums, squares, firing counts, token counts and histograms add; maxima take the max.
  Sums are float64 added in a different order, equal to a single-process run to ~1e-12 relative.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainer.collect.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from explainer.collect.evidence import rank_key
from explainer.errors import InputError

TOP_FIELDS = ("score", "value", "seq", "start", "acts")
SUM_FIELDS = ("sum", "sq_sum", "fire", "hist", "n_tokens")


@dataclass(frozen=True)
class Shard:
    """One shard of a collection: batches ``first_batch`` … ``end_batch - 1`` of ``n_shards``."""

    index: int
    n_shards: int
    first_batch: int
    end_batch: int

    @property
    def batches(self) -> range:
        return range(self.first_batch, self.end_batch)


def plan_shards(n_batches: int, n_shards: int) -> list[Shard]:
    """``n_shards`` contiguous ranges of whole batches, sizes differing by at most one; an empty
    plan is impossible (fewer batches than shards is an :class:`InputError`)."""
    if n_shards < 1:
        raise InputError(f"--shards must be at least 1, got {n_shards}")
    if n_shards > n_batches:
        raise InputError(
            f"{n_shards} shards for {n_batches} batches: a shard needs at least one batch "
            "(use fewer shards, a smaller --batch-size or more --max-tokens)"
        )
    base, extra = divmod(n_batches, n_shards)
    out, first = [], 0
    for i in range(n_shards):
        end = first + base + (1 if i < extra else 0)
        out.append(Shard(i, n_shards, first, end))
        first = end
    return out


def shard_key(collector: Any, shard: Shard) -> str:
    """Names a shard's work: the collection's key plus the shard's batch range."""
    tail = f"\x1eshard {shard.index}/{shard.n_shards}: {shard.first_batch}-{shard.end_batch}"
    return hashlib.sha256((collector.key() + tail).encode()).hexdigest()


def run_shard(
    collector: Any, shard: Shard, checkpoint: str | Path | None = None, checkpoint_every: int = 0
) -> dict[str, Any]:
    """Step ``collector`` (fresh, built over the whole sequence list) through ``shard``'s batches
    and return its state on the CPU. With ``checkpoint`` the state is saved every
    ``checkpoint_every`` batches (0: about every 5% of the shard) and a killed shard resumes there."""
    if shard.end_batch > collector.n_batches:
        raise InputError(f"shard {shard.index} ends at batch {shard.end_batch} of {collector.n_batches}")
    key = shard_key(collector, shard) if checkpoint is not None else ""
    first = shard.first_batch
    resumed = load_checkpoint(checkpoint, key)
    if resumed is not None:
        first = resumed[0]
        collector.load(resumed[1])
    every = checkpoint_every or max(1, len(shard.batches) // 20)
    for b in range(first, shard.end_batch):
        collector.step(b)
        if checkpoint is not None and (b + 1 - shard.first_batch) % every == 0 and b + 1 < shard.end_batch:
            save_checkpoint(checkpoint, key, b + 1, collector.state())
    state = {name: t.detach().cpu() for name, t in collector.state().items()}
    remove_checkpoint(checkpoint)
    return state


def merge_top(parts: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """The ``k`` best slots per unit of several :class:`~explainer.collect.evidence.TopWindows`
    states (``score``, ``value``, ``seq``, ``start`` ``[U, k]``, ``acts`` ``[U, k, W]``), best
    first, under :func:`rank_key`'s order (score descending, then sequence id ascending)."""
    import torch

    cat = {f: torch.cat([p[f] for p in parts], dim=1) for f in TOP_FIELDS}
    idx = rank_key(cat["score"], cat["seq"]).topk(k, dim=1).indices
    out = {f: cat[f].gather(1, idx) for f in TOP_FIELDS if f != "acts"}
    out["acts"] = cat["acts"].gather(1, idx.unsqueeze(2).expand(-1, -1, cat["acts"].shape[2]))
    return out


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The collector state of the union of shards, given their states in shard order (see the
    module docstring for why it equals a single-process run)."""
    import torch

    if not states:
        raise ValueError("nothing to merge")
    out: dict[str, Any] = {}
    for part in ("top", "pool"):
        k = states[0][f"{part}.score"].shape[1]
        merged = merge_top([{f: s[f"{part}.{f}"] for f in TOP_FIELDS} for s in states], k)
        out.update({f"{part}.{f}": t for f, t in merged.items()})
    for f in SUM_FIELDS:
        out[f"stats.{f}"] = sum(s[f"stats.{f}"] for s in states[1:]) + states[0][f"stats.{f}"]
    out["stats.max"] = torch.stack([s["stats.max"] for s in states]).amax(dim=0)
    out["stats.sparse"] = states[-1]["stats.sparse"].clone()
    out["rand_acts"] = sum(s["rand_acts"] for s in states[1:]) + states[0]["rand_acts"]
    return out


def state_to_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({name: t.detach().cpu() for name, t in state.items()}, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    import torch

    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("a shard state must be a dict of tensors")
    return state


def collect_sharded(loaded: Any, hookpoint: Any, seqs: list[Any], cfg: Any, n_shards: int, encoder: Any = None) -> Any:
    """Run every shard in this process, one after another, and return the merged
    :class:`~explainer.collect.collector.Collector` (its records are the collection's): the
    reference the distributed path (one Celery task per shard) is tested against."""
    from explainer.collect.collector import Collector

    def fresh() -> Collector:
        return Collector(loaded, hookpoint, seqs, cfg, encoder)

    merged = fresh()
    states = [run_shard(fresh(), shard) for shard in plan_shards(merged.n_batches, n_shards)]
    merged.load(merge_states(states))
    merged.next_batch = merged.n_batches
    return merged
