"""Steering a stored unit by id: what ``explainer steer`` and ``POST /api/v1/steer`` call.

The unit's model, SAE or directions file and mean activation come from its collection in the
store; the model is loaded here (a unit whose model cannot be loaded on this machine is a
:class:`~explainer.errors.ModelLoadError`). Without a strength, ``add`` and ``scale`` find one by
bisection to ``target_kl`` on the prompt.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from explainer.errors import InterventionError
from explainer.intervene.effects import bisect_strength, check_prompt, steer
from explainer.intervene.hooks import MODES, Edit, check_strength
from explainer.intervene.units import UnitTarget, resolve_unit, unit_source

DEFAULT_TARGET_KL = 1.0
MAX_NEW_TOKENS = 64


def load_unit(settings: Any, unit_id: str) -> tuple[Any, UnitTarget]:
    """The loaded model and the :class:`UnitTarget` of a stored unit."""
    from explainer.collect.models import load_model
    from explainer.runtime import get_store

    src = unit_source(get_store(settings), unit_id)
    lm = load_model(src.model, settings.device)
    return lm, resolve_unit(lm, unit_id, sae=src.sae, directions=src.directions, mean=src.mean, name=src.name)


def steer_unit(
    settings: Any,
    unit_id: str,
    prompt: str,
    *,
    mode: str = "add",
    strength: float | None = None,
    target_kl: float | None = None,
    ablate_to: str = "zero",
    max_new_tokens: int = 20,
    top: int = 10,
    loaded: tuple[Any, UnitTarget] | None = None,
) -> dict[str, Any]:
    """Clean vs steered continuations of ``prompt``, next-token KL and token changes, as JSON.
    Everything is checked before the model is loaded."""
    check_prompt(prompt)
    if mode not in MODES:
        raise InterventionError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    if ablate_to not in ("zero", "mean"):
        raise InterventionError(f"ablate to 'zero' or 'mean', not {ablate_to!r}")
    if strength is not None and target_kl is not None:
        raise InterventionError("give a strength or a target KL, not both")
    if strength is not None:
        strength = check_strength(strength)
    elif mode == "clamp":
        raise InterventionError("mode clamp needs a strength (the value to clamp to)")
    elif mode in ("add", "scale"):
        target_kl = DEFAULT_TARGET_KL if target_kl is None else check_strength(target_kl)
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InterventionError(f"new tokens must be 1…{MAX_NEW_TOKENS}, not {max_new_tokens}")
    started = time.perf_counter()
    lm, target = loaded or load_unit(settings, unit_id)
    how = "ablate_to" if mode == "ablate" else None

    def edits(s: float) -> list[Edit]:
        return [Edit(target, mode, s, ablate_to)]  # type: ignore[arg-type]

    steps = 0
    if strength is None and mode != "ablate":
        cal = bisect_strength(
            lm, edits, [prompt], float(target_kl or DEFAULT_TARGET_KL), base=1.0 if mode == "scale" else 0.0
        )
        strength, steps = cal.strength, cal.steps
    result = steer(lm, prompt, edits(strength or 0.0), max_new_tokens=max_new_tokens, k=top)
    return {
        "unit_id": unit_id,
        "kind": target.kind,
        "mode": mode,
        "strength": None if mode == "ablate" else strength,
        **({how: ablate_to} if how else {}),
        "target_kl": target_kl,
        "bisection_steps": steps,
        "kl": result.kl,
        "prompt": prompt,
        "clean": result.clean,
        "steered": result.steered,
        "risen": [asdict(t) for t in result.risen],
        "fallen": [asdict(t) for t in result.fallen],
        "new_tokens": result.new_tokens,
        "seconds": round(time.perf_counter() - started, 2),
    }


def output_side(
    settings: Any, unit_id: str, k: int = 10, loaded: tuple[Any, UnitTarget] | None = None
) -> dict[str, Any]:
    """The tokens a stored unit promotes and suppresses through the unembedding (VocabProj), stored
    with the unit (the default ``k`` only) for ``show``, the unit page, reports and the explainer."""
    from explainer.intervene.output import vocab_projection
    from explainer.runtime import get_store

    lm, target = loaded or load_unit(settings, unit_id)
    side = vocab_projection(lm, target, k)
    if k == OUTPUT_TOKENS:
        get_store(settings).save_output_sides({unit_id: side})
    return side


OUTPUT_TOKENS = 10
"""Tokens stored per side (promoted, suppressed)."""


def ensure_output_sides(settings: Any, unit_ids: list[str], notice: Any = None) -> dict[str, str]:
    """Compute and store the output side of every unit of ``unit_ids`` that has none (one model load;
    the units of one labeling command, so all of one collection). Returns unit id → why it has none
    (e.g. a unit read at the MLP input writes nothing to the residual stream); the others are stored."""
    from explainer.intervene.output import vocab_projection
    from explainer.runtime import get_store

    store = get_store(settings)
    stored = store.output_sides(unit_ids)
    todo = [u for u in unit_ids if u not in stored]
    if not todo:
        return {}
    if notice:
        notice(f"output sides: the tokens {len(todo)} unit(s) promote and suppress through the unembedding")
    lm, first = load_unit(settings, todo[0])
    src = unit_source(store, todo[0])
    sides, skipped = {}, {}
    for uid in todo:
        try:
            target = first if uid == todo[0] else resolve_unit(lm, uid, sae=src.sae, directions=src.directions)
            sides[uid] = vocab_projection(lm, target, OUTPUT_TOKENS)
        except InterventionError as exc:
            skipped[uid] = str(exc)
    store.save_output_sides(sides)
    return skipped
