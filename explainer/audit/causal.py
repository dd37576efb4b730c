"""The causal test: scale the selected units by α while the model answers held-out questions, and
measure the failure rate and the log-probability of the right answer, against as many random units
of the same hookpoint as a control.

Units are scaled with :mod:`explainer.intervene` (``scale`` edits; α = 1 changes nothing): MLP
neurons, other raw units, SAE features and directions alike. A question needs its accepted answers (``truth``); the answer is the greedy continuation up to the
first newline, right when it starts with an accepted answer (:func:`~explainer.audit.make.is_right`).
Intervals are 95% percentile bootstraps over questions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainer.audit.cases import Case, CaseSetError
from explainer.audit.make import is_right
from explainer.errors import InterventionError
from explainer.intervene import Edit, generate, intervene, resolve_unit

ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def _answer_logprob(lm: Any, prompt: str, answer: str, edits: list[Edit]) -> float:
    """log P(`` answer`` | prompt) summed over the answer's tokens."""
    import torch

    tok = lm.tokenizer
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(prompt + " " + answer, add_special_tokens=False)["input_ids"][len(p_ids) :]
    if not a_ids:
        return float("nan")
    ids = torch.tensor([p_ids + a_ids], device=lm.device)
    with torch.no_grad(), intervene(lm.model, edits):
        logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[len(p_ids) - 1 : -1], dim=-1)
    return float(logp.gather(1, torch.tensor(a_ids, device=lm.device)[:, None]).sum())


def _boot(values: np.ndarray, seed: int, n: int = 1000) -> list[float | None]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return [None, None]
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n)]
    return [round(float(v), 4) for v in np.percentile(means, [2.5, 97.5])]


def _curve(lm: Any, cases: list[Case], targets: list[Any], alphas: tuple[float, ...], seed: int, tokens: int) -> list:
    rows = []
    for alpha in alphas:
        edits = [Edit(t, "scale", float(alpha)) for t in targets]
        fails, logps = [], []
        for c in cases:
            text = generate(lm, c.prompt, edits, max_new_tokens=tokens).split("\n")[0]
            fails.append(0.0 if is_right(text, c.truth) else 1.0)
            logps.append(_answer_logprob(lm, c.prompt, c.truth[0], edits))
        f, lp = np.array(fails), np.array(logps)
        rows.append(
            {
                "alpha": alpha,
                "failure_rate": round(float(f.mean()), 4),
                "failure_ci": _boot(f, seed),
                "logp_right": round(float(np.nanmean(lp)), 4),
                "logp_ci": _boot(lp, seed),
            }
        )
    return rows


def causal_test(
    lm: Any,
    space: Any,
    selected: list[int],
    cases: list[Case],
    *,
    alphas: tuple[float, ...] = ALPHAS,
    seed: int = 0,
    max_cases: int = 24,
    new_tokens: int = 6,
) -> dict[str, Any]:
    """Failure rate and mean log P(right answer) per α, for the selected units and random units.

    The units are those of ``space``: raw units of its hookpoint (MLP neurons, or coordinates of
    another hookpoint), SAE features (their value scaled, the SAE's error term kept) or directions
    (the projection scaled); transcoder features are scaled too (read at the MLP input, the change
    written at its output). A unit the interventions refuse is a :class:`CaseSetError` naming why. When the space has fewer
    other units than selected ones (a small directions file), the random control has as many as
    there are; with none, its curve is empty.
    """
    usable = [c for c in cases if c.truth]
    if not usable:
        raise CaseSetError("the causal test needs held-out cases with their right answers (field 'truth')")
    if not selected:
        raise CaseSetError("no unit was selected: nothing to scale")
    rng = np.random.default_rng(seed)
    if len(usable) > max_cases:
        usable = [usable[i] for i in sorted(rng.choice(len(usable), max_cases, replace=False))]
    others = np.setdiff1d(np.arange(space.width), np.array(selected))
    n_random = min(len(selected), len(others))
    random_units = sorted(int(i) for i in rng.choice(others, n_random, replace=False))

    def targets(idx: list[int]) -> list[Any]:
        return [resolve_unit(lm, space.unit_id(i), sae=space.sae, directions=space.directions) for i in idx]

    try:
        chosen = targets(selected)
    except InterventionError as exc:
        raise CaseSetError(f"the causal test cannot scale these units: {exc}") from None
    return {
        "alphas": list(alphas),
        "questions": len(usable),
        "case_ids": [c.id for c in usable],
        "fail_share": round(float(np.mean([c.failed for c in usable])), 4),
        "selected": {"units": list(selected), "curve": _curve(lm, usable, chosen, alphas, seed, new_tokens)},
        "random": {
            "units": random_units,
            "curve": _curve(lm, usable, targets(random_units), alphas, seed, new_tokens) if random_units else [],
        },
    }
