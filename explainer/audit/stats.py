"""Per-case unit statistics over the answer tokens: the features an audit probe is fitted on.

- MLP neurons (hookpoint ``layers.L.mlp``): the *contribution* of neuron ``j`` to the MLP output,
  ``|x_j| × ‖W_down[:, j]‖ / ‖W_down x‖`` where ``x`` is the input of ``down_proj`` at a token
  (the H-neurons statistic), averaged over the answer tokens;
- any other hookpoint, an SAE's features or a file of directions: the activation (raw value,
  SAE encoding, or projection), averaged over the answer tokens.

The forward pass stops at the hookpoint (collection's :func:`~explainer.collect.hooks.capture`),
so later layers and the LM head are never computed. Cases run in padded batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from explainer.audit.cases import Case, CaseSetError
from explainer.collect.hooks import Hookpoint, capture, hook_module, resolve_hookpoint

Statistic = Literal["contribution", "activation"]


@dataclass(frozen=True)
class UnitSpace:
    """The units a probe reads: a hookpoint, optionally through an SAE or directions file."""

    model: str
    hookpoint: Hookpoint
    statistic: Statistic
    encoder: Any = None
    """An SAE or :class:`~explainer.collect.directions.Directions` (``encode``), or ``None`` for raw units."""
    sae: str | None = None
    directions: str | None = None

    @property
    def width(self) -> int:
        if self.encoder is None:
            return self.hookpoint.width
        return int(getattr(self.encoder, "d_sae", None) or self.encoder.width)

    @property
    def id_prefix(self) -> str:
        from explainer.collect.collector import unit_hookpoint

        return f"{self.model}/{unit_hookpoint(self.hookpoint, self.encoder)}"

    def unit_id(self, index: int) -> str:
        return f"{self.id_prefix}/{index}"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hookpoint": self.hookpoint.name,
            "statistic": self.statistic,
            "sae": self.sae,
            "directions": self.directions,
            "units": self.width,
        }


def unit_space(lm: Any, hookpoint: str, *, sae: str | None = None, directions: str | None = None) -> UnitSpace:
    """The unit space of a loaded model at ``hookpoint`` (``layers.L.mlp`` gives neuron contributions)."""
    hp = resolve_hookpoint(lm.model, hookpoint)
    if sae and directions:
        raise CaseSetError("give an SAE or a directions file, not both")
    if sae:
        from explainer.collect.sae import load_sae

        enc = load_sae(sae, hp.name)
        enc.check_hookpoint(hp)
        return UnitSpace(lm.name, hp, "activation", enc, sae=sae)
    if directions:
        from explainer.collect.directions import load_directions

        dirs = load_directions(directions)
        dirs.check_hookpoint(hp)
        return UnitSpace(lm.name, hp, "activation", dirs, directions=directions)
    return UnitSpace(lm.name, hp, "contribution" if hp.kind == "mlp" else "activation")


def encode_case(lm: Any, case: Case) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt + response`` and the positions of the answer's tokens."""
    text = case.prompt + case.response
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    start, end = case.span
    a0, a1 = len(case.prompt) + start, len(case.prompt) + end
    pos = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < a1 and e > a0]
    if not pos:
        raise CaseSetError(f"case {case.id or case.prompt[:40]!r}: its answer covers no token")
    return list(enc["input_ids"]), pos


def token_stats(lm: Any, space: UnitSpace, x: Any) -> Any:
    """``[tokens, units]`` statistics from the hooked tensor ``x [tokens, width]``."""
    import torch

    if space.statistic == "contribution":
        proj, _ = hook_module(lm.model, space.hookpoint)
        w = proj.weight.float()  # [hidden, mlp]
        out_norm = (x @ w.T).norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return x.abs() * w.norm(dim=0) / out_norm
    if space.encoder is not None:
        with torch.no_grad():
            return space.encoder.encode(x).float()
    return x


def case_batches(lm: Any, cases: list[Case], batch: int) -> Iterator[tuple[Any, Any, list[list[int]]]]:
    """Cases in padded batches: ``(input_ids, attention_mask, answer positions per case)``, on the
    model's device; what every per-case statistic runs the model over."""
    import torch

    encoded = [encode_case(lm, c) for c in cases]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        n = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), n), dtype=torch.long)
        for i, (tok, _) in enumerate(chunk):
            ids[i, : len(tok)] = torch.tensor(tok)
            mask[i, : len(tok)] = 1
        yield ids.to(lm.device), mask.to(lm.device), [pos for _, pos in chunk]


def answer_means(lm: Any, space: UnitSpace, acts: Any, positions: list[list[int]]) -> list[np.ndarray]:
    """Each case's statistics averaged over its answer tokens, from a batch's hooked tensor."""
    import torch

    with torch.no_grad():
        return [
            token_stats(lm, space, acts[i, pos]).mean(0).cpu().numpy().astype(np.float32)
            for i, pos in enumerate(positions)
        ]


def case_statistics(lm: Any, space: UnitSpace, cases: list[Case], batch: int = 8) -> np.ndarray:
    """``[len(cases), units]`` (float32): each unit's statistic averaged over each case's answer tokens."""
    rows: list[np.ndarray] = []
    for ids, mask, positions in case_batches(lm, cases, batch):
        rows += answer_means(lm, space, capture(lm.model, space.hookpoint, ids, mask), positions)
    return np.stack(rows)


def token_statistics(lm: Any, space: UnitSpace, case: Case) -> tuple[list[tuple[int, int]], np.ndarray]:
    """For one case, the character span (inside the response) of each answer token and its
    statistics ``[answer tokens, units]``: what :func:`case_statistics` averages."""
    import torch

    ids, pos = encode_case(lm, case)
    offsets = lm.tokenizer(case.prompt + case.response, return_offsets_mapping=True, add_special_tokens=False)[
        "offset_mapping"
    ]
    t = torch.tensor([ids], device=lm.device)
    acts = capture(lm.model, space.hookpoint, t, torch.ones_like(t))
    with torch.no_grad():
        stats = token_stats(lm, space, acts[0, pos]).cpu().numpy()
    n = len(case.prompt)
    return [(offsets[i][0] - n, offsets[i][1] - n) for i in pos], stats
