"""Synthetic unit records stored as a finished collection: fast units for worker tests and benchmarks
(no subject model is run; every record has explain, held-out and random windows like a collected one)."""

from __future__ import annotations

import random
from typing import Any

from store.records import UnitRecord, UnitStats, Window

_WORDS = (
    "def",
    " return",
    " (",
    ")",
    ":",
    " self",
    " import",
    " the",
    " license",
    " value",
    ",",
    " 0",
    " None",
    " class",
    " for",
    " in",
    " if",
    " else",
    ".",
    " data",
)


def synthetic_record(index: int, model: str = "synth", hookpoint: str = "layers.0.mlp", window: int = 12) -> UnitRecord:
    """Unit ``index`` fires on one word of the vocabulary above; six top windows, two random ones."""
    rng = random.Random(index)
    target = _WORDS[index % len(_WORDS)]
    windows = []
    for r in range(8):
        toks = [rng.choice(_WORDS) for _ in range(window)]
        if r < 6:
            toks[rng.randrange(window)] = target
        kind = "top" if r < 6 else "random"
        split = "explain" if r < 6 and r % 2 == 0 else "heldout"
        acts = tuple(round(rng.uniform(2, 5), 3) if t == target else 0.0 for t in toks)
        wid = f"top-{r}" if r < 6 else f"random-{r - 6}"
        windows.append(Window(wid, kind, split, f"code:doc{r}.py", "code" if r % 2 else "docs", tuple(toks), acts))
    stats = UnitStats(max=5.0, mean=0.2, std=0.8, density=0.05, n_tokens=8 * window)
    return UnitRecord(f"{model}/{hookpoint}/{index}", model, hookpoint, index, stats, tuple(windows))


def store_synthetic_collection(store: Any, n: int, collection_id: str = "synthetic", model: str = "synth") -> list[str]:
    """Store ``n`` synthetic units as the finished collection ``collection_id``; returns their unit ids."""
    records = [synthetic_record(i, model=model) for i in range(n)]
    store.start_collection(collection_id, model, "layers.0.mlp", "synthetic", "0" * 64, {"synthetic": n})
    store.finish_collection(collection_id, records, sum(r.stats.n_tokens for r in records))
    return [r.unit_id for r in records]
