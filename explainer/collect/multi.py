"""Many hookpoints per pass: one forward pass over each batch feeds one collector per hookpoint.

The pass stops at the deepest hookpoint (:func:`~explainer.collect.hooks.capture_each`), and each
hookpoint's tensor is handed to its collector as soon as the pass reaches it, so one hooked tensor
of one batch is alive at a time. Each hookpoint keeps its own state (its own collection), exactly
what a separate collection over the same sequences would keep: memory is the sum over hookpoints
of units × (top_k + pool + random) × window (see the README for SmolLM2 and an 8B model).
"""

from __future__ import annotations

from typing import Any

from explainer.collect.collector import CollectConfig, Collector, Sequence
from explainer.collect.hooks import Hookpoint, capture_each
from explainer.errors import InputError


def parse_layers(spec: str, n_layers: int | None = None) -> list[int]:
    """``"0-29"``, ``"3"`` or ``"0-3,8,10-11"`` → sorted distinct layer indices."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            if a < 0 or b < a:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise InputError(f"--layers takes A-B, A or a comma-separated list of them (e.g. 0-29), got {spec!r}") from None
    if n_layers is not None and max(out) >= n_layers:
        raise InputError(f"--layers {spec}: the model has layers 0-{n_layers - 1}")
    return sorted(out)


class MultiCollector:
    """One :class:`Collector` per hookpoint over the same sequences, stepped by shared forward passes."""

    def __init__(self, collectors: list[Collector]):
        names = [c.hookpoint.name for c in collectors]
        if not collectors or len(set(names)) != len(names):
            raise InputError(f"need distinct hookpoints, got {names}")
        first = collectors[0]
        if any(c.seqs is not first.seqs or c.cfg != first.cfg or c.loaded is not first.loaded for c in collectors):
            raise ValueError("the collectors of one pass share the model, the sequences and the config")
        self.loaded = first.loaded
        self.collectors = {c.hookpoint.name: c for c in collectors}
        self.hookpoints = [c.hookpoint for c in collectors]
        self.n_batches = first.n_batches

    @classmethod
    def build(
        cls, loaded: Any, hookpoints: list[Hookpoint], seqs: list[Sequence], cfg: CollectConfig
    ) -> MultiCollector:
        return cls([Collector(loaded, hp, seqs, cfg) for hp in hookpoints])

    def step(self, b: int) -> int:
        """Run batch ``b`` once for every hookpoint; returns its number of tokens."""
        first = next(iter(self.collectors.values()))
        ids, mask = first.batch_inputs(b)
        n_tokens: list[int] = []

        def consume(hp: Hookpoint, acts: Any) -> None:
            n_tokens.append(self.collectors[hp.name].step(b, (ids, mask), hooked=acts))

        capture_each(self.loaded.model, self.hookpoints, ids.to(first.device), mask.to(first.device), consume)
        return n_tokens[0]

    def run(self, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        total = sum(len(s.token_ids) for s in next(iter(self.collectors.values())).seqs)
        with tqdm(
            total=total, unit="tok", desc=f"collect {len(self.hookpoints)} hookpoints", disable=not progress
        ) as bar:
            for b in range(self.n_batches):
                bar.update(self.step(b))
