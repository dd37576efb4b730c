"""Memory budget of a collection, checked before anything is allocated or stored.

A collection holds, per unit, its top and quantile-pool windows, running statistics and the random
windows, and each batch runs ``batch_size × (context + 1)`` tokens through the model. Sizes the user
can set (``--top-k``, ``--context``, ``--window``, ``--random``, ``--quantiles``) multiply into that,
so an absurd value (``--top-k 1000000000``) would exhaust memory deep inside torch. :func:`check_budget`
estimates the bytes first and refuses, naming the flag that costs most, when they exceed what the
device has available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explainer.collect.evidence import HIST_BINS
from explainer.errors import InputError

HEADROOM = 0.8
"""Share of the available memory a collection may plan to use."""
MERGE_FACTOR = 2
"""Top-k merging holds the kept and the candidate windows at once."""


@dataclass(frozen=True)
class Budget:
    """Estimated bytes of one collection's state, by the flag that drives each part."""

    parts: dict[str, int]
    """``--top-k``, ``--quantiles``, ``--random``: per-unit evidence; ``--context``: one batch's
    forward pass; ``units``: the statistics every unit keeps whatever the flags."""

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def estimate(cfg: Any, units: int, model_config: Any = None) -> Budget:
    """Bytes a collection with ``cfg`` (a :class:`CollectConfig`) over ``units`` units needs."""
    per_slot = 4 + 4 + 8 + 8 + 4 * cfg.window  # score, value, sequence, start, activations
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    inner = int(getattr(model_config, "intermediate_size", 0) or 4 * hidden)
    heads = int(getattr(model_config, "num_attention_heads", 0) or 1)
    tokens = cfg.batch_size * (cfg.context + 1)
    forward = 4 * tokens * (6 * hidden + 3 * inner + 2 * units) + 4 * cfg.batch_size * heads * (cfg.context + 1) ** 2
    return Budget(
        {
            "--top-k": MERGE_FACTOR * units * cfg.top_k * per_slot,
            "--quantiles": MERGE_FACTOR * units * max(1, cfg.n_quantiles * cfg.pool_per_quantile) * per_slot,
            "--random": 4 * cfg.n_random * cfg.window * units,
            "--context": forward,
            "units": units * (8 * 3 + 4 + 8 * HIST_BINS),
        }
    )


def available_bytes(device: str = "cpu") -> int:
    """Memory free for a new allocation on ``device`` (host RAM for ``cpu``)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**60 else f"{n / 2**30:.2g} GiB"


def check_budget(
    cfg: Any, units: int, model_config: Any = None, device: str = "cpu", available: int | None = None
) -> Budget:
    """Raise :class:`InputError` when the collection would need more than :data:`HEADROOM` of the
    available memory; the message names the flag whose part is largest and its value."""
    budget = estimate(cfg, units, model_config)
    free = available_bytes(device) if available is None else available
    if budget.total <= HEADROOM * free:
        return budget
    flag = max((k for k in budget.parts if k != "units"), key=lambda k: budget.parts[k])
    value = {"--top-k": cfg.top_k, "--quantiles": cfg.n_quantiles, "--random": cfg.n_random, "--context": cfg.context}
    raise InputError(
        f"{flag} {value[flag]} needs about {_gib(budget.total)} for {units:,} units (window {cfg.window}, "
        f"context {cfg.context}); {_gib(free)} is available on {device}: lower {flag}"
    )
