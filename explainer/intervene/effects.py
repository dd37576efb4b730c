"""What an intervention does to the model's output: next-token KL divergence, the tokens whose
probability rose and fell most, greedy clean and steered continuations, and the strength that
reaches a target KL (bisection).

The KL is ``KL(P_clean ‖ P_steered)`` of the next-token distributions at the end of each prompt,
averaged over prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from explainer.errors import InterventionError
from explainer.intervene.hooks import MAX_STRENGTH, Edit, intervene


@dataclass(frozen=True)
class TokenChange:
    token: str
    p_clean: float
    p_steered: float


@dataclass(frozen=True)
class SteerResult:
    """One prompt, clean and steered."""

    prompt: str
    clean: str
    """Greedy continuation without the intervention."""
    steered: str
    """Greedy continuation with it."""
    kl: float
    """KL(P_clean ‖ P_steered) of the next-token distributions after the prompt (nats)."""
    risen: list[TokenChange] = field(default_factory=list)
    fallen: list[TokenChange] = field(default_factory=list)
    new_tokens: int = 0


@dataclass(frozen=True)
class Calibrated:
    """The strength bisection chose."""

    strength: float
    kl: float
    """Mean KL over the prompts at ``strength``."""
    steps: int
    """Forward passes over the prompt set spent searching."""


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InterventionError("the prompt is empty")
    return prompt


def _ids(lm: Any, prompt: str) -> Any:
    enc = lm.tokenizer(check_prompt(prompt), return_tensors="pt")
    return enc["input_ids"].to(lm.device)


def next_token_logprobs(lm: Any, prompts: list[str], edits: list[Edit] | None = None) -> Any:
    """Log-probabilities ``[len(prompts), vocab]`` of the token after each prompt."""
    import torch

    rows = []
    with torch.no_grad(), intervene(lm.model, edits or []):
        for p in prompts:
            logits = lm.model(input_ids=_ids(lm, p), use_cache=False).logits[0, -1].float()
            rows.append(torch.log_softmax(logits, dim=-1))
    return torch.stack(rows)


def kl_divergence(clean: Any, steered: Any) -> Any:
    """Per-row KL(clean ‖ steered) from log-probabilities."""
    return (clean.exp() * (clean - steered)).sum(-1).clamp_min(0.0)


def token_changes(lm: Any, clean: Any, steered: Any, k: int = 10) -> tuple[list[TokenChange], list[TokenChange]]:
    """The ``k`` tokens whose probability rose most and fell most (one prompt's log-probabilities)."""
    diff = steered.exp() - clean.exp()
    out = []
    for idx in (diff.topk(k).indices, (-diff).topk(k).indices):
        out.append(
            [
                TokenChange(lm.tokenizer.decode([int(i)]), float(clean[i].exp()), float(steered[i].exp()))
                for i in idx.tolist()
            ]
        )
    return out[0], out[1]


def generate(lm: Any, prompt: str, edits: list[Edit] | None = None, max_new_tokens: int = 20) -> str:
    """The greedy continuation of ``prompt`` (new text only)."""
    import torch

    ids = _ids(lm, prompt)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    with torch.no_grad(), intervene(lm.model, edits or []):
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    return str(lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def steer(lm: Any, prompt: str, edits: list[Edit], max_new_tokens: int = 20, k: int = 10) -> SteerResult:
    """Clean vs steered on one prompt: continuations, next-token KL and token changes."""
    check_prompt(prompt)
    clean = next_token_logprobs(lm, [prompt])
    steered = next_token_logprobs(lm, [prompt], edits)
    risen, fallen = token_changes(lm, clean[0], steered[0], k)
    return SteerResult(
        prompt,
        generate(lm, prompt, None, max_new_tokens),
        generate(lm, prompt, edits, max_new_tokens),
        float(kl_divergence(clean, steered)[0]),
        risen,
        fallen,
        max_new_tokens,
    )


def mean_kl(lm: Any, prompts: list[str], edits: list[Edit], clean: Any | None = None) -> float:
    if clean is None:
        clean = next_token_logprobs(lm, prompts)
    return float(kl_divergence(clean, next_token_logprobs(lm, prompts, edits)).mean())


def bisect_strength(
    lm: Any,
    make_edits: Callable[[float], list[Edit]],
    prompts: list[str],
    target_kl: float,
    *,
    tolerance: float | None = None,
    max_steps: int = 15,
    start: float = 1.0,
    base: float = 0.0,
    max_strength: float = MAX_STRENGTH,
) -> Calibrated:
    """The strength whose mean KL over ``prompts`` is within ``tolerance`` (default: 10% of the
    target) of ``target_kl``: double
    from ``start`` until the KL passes the target, then bisect (``max_steps`` steps). ``base`` is the
    strength that changes nothing (0 for ``add``, 1 for ``scale``). A target no strength up to
    ``max_strength`` reaches is an :class:`InterventionError` naming the largest KL reached."""
    import math

    if not math.isfinite(target_kl) or target_kl <= 0:
        raise InterventionError(f"target KL must be a positive number, not {target_kl}")
    if not prompts:
        raise InterventionError("no prompts to measure the KL on")
    if tolerance is None:
        tolerance = 0.1 * target_kl
    clean = next_token_logprobs(lm, prompts)
    steps = 0
    lo, hi = base, base + start
    kl_hi = mean_kl(lm, prompts, make_edits(hi), clean)
    steps += 1
    while kl_hi < target_kl - tolerance:
        if abs(hi - base) * 2 > max_strength:
            raise InterventionError(
                f"no strength up to {max_strength:g} reaches the target KL {target_kl:g}: "
                f"KL {kl_hi:.3g} at strength {hi:g}"
            )
        lo, hi = hi, base + (hi - base) * 2
        kl_hi = mean_kl(lm, prompts, make_edits(hi), clean)
        steps += 1
    best, best_kl = hi, kl_hi
    for _ in range(max_steps):
        if abs(best_kl - target_kl) <= tolerance:
            break
        mid = (lo + hi) / 2
        kl_mid = mean_kl(lm, prompts, make_edits(mid), clean)
        steps += 1
        if abs(kl_mid - target_kl) < abs(best_kl - target_kl):
            best, best_kl = mid, kl_mid
        if kl_mid < target_kl:
            lo = mid
        else:
            hi = mid
    if abs(best_kl - target_kl) > tolerance:
        raise InterventionError(
            f"bisection did not reach KL {target_kl:g} ± {tolerance:g} in {max_steps} steps "
            f"(closest: {best_kl:.3g} at strength {best:g})"
        )
    return Calibrated(best, best_kl, steps)
