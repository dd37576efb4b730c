"""Edits written into the forward pass, at the modules collection reads from.

An :class:`Edit` is one unit, a mode and a strength:

- ``add``: the unit moves by ``strength`` (``x += strength * w``): a direction or SAE feature
  is steered by ``strength × unit vector`` or ``strength × decoder row``;
- ``scale``: the unit's value is multiplied by ``strength``;
- ``clamp``: the unit's value is set to ``strength``;
- ``ablate``: the unit's value is set to 0 (``ablate_to="zero"``) or to its mean activation over
  its collection corpus (``"mean"``); ``strength`` is ignored.

All edits at one hookpoint read the *unedited* tensor and are applied together, so several units
at once (a whole layer's neurons, a set of SAE features) compose exactly. :func:`intervene` is a
context manager that installs the hooks for the length of a ``with`` block, on every position of
every forward pass (generation included).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from explainer.collect.hooks import hook_module
from explainer.errors import InterventionError
from explainer.intervene.units import UnitTarget

Mode = Literal["add", "scale", "clamp", "ablate"]
MODES: tuple[str, ...] = get_args(Mode)
MAX_STRENGTH = 1e4
"""Largest accepted ``|strength|``: anything beyond swamps every activation of these models."""


@dataclass(frozen=True)
class Edit:
    """One unit's intervention."""

    target: UnitTarget
    mode: Mode = "add"
    strength: float = 0.0
    """``add``: units of the unit's value to add; ``scale``: the factor; ``clamp``: the value."""
    ablate_to: Literal["zero", "mean"] = "zero"


def check_strength(strength: float) -> float:
    """``strength`` as a float, or an :class:`InterventionError` when it is NaN, infinite or absurd."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise InterventionError(f"strength {strength!r} is not a number") from None
    if not math.isfinite(s):
        raise InterventionError(f"strength must be a finite number, not {s}")
    if abs(s) > MAX_STRENGTH:
        raise InterventionError(f"strength {s:g} is out of range (|strength| <= {MAX_STRENGTH:g})")
    return s


def check_edit(edit: Edit) -> None:
    """Refuse an edit before anything runs."""
    if edit.mode not in MODES:
        raise InterventionError(f"unknown mode {edit.mode!r}; modes: {', '.join(MODES)}")
    check_strength(edit.strength)
    if edit.mode != "add" and not edit.target.clampable:
        raise InterventionError(
            f"{edit.target.unit_id}: a transcoder feature is read at {edit.target.read_at.name} and written at "
            f"{edit.target.write_at.name}; only mode 'add' is supported"
        )
    if edit.mode == "ablate" and edit.ablate_to == "mean" and edit.target.mean is None:
        raise InterventionError(f"{edit.target.unit_id}: its mean activation is unknown; ablate to zero instead")


def apply_edits(x: Any, edits: list[Edit]) -> Any:
    """``x`` ``[..., width]`` with every edit applied; every read is of the unedited ``x``."""
    out = x
    for edit in edits:
        w = edit.target.write.to(device=x.device, dtype=x.dtype)
        if edit.mode == "add":
            out = out + edit.strength * w
            continue
        value = edit.target.read(x).to(x.dtype)
        if edit.mode == "scale":
            delta = (edit.strength - 1.0) * value
        elif edit.mode == "clamp":
            delta = edit.strength - value
        else:
            to = edit.target.mean if edit.ablate_to == "mean" else 0.0
            delta = float(to or 0.0) - value
        out = out + delta.unsqueeze(-1) * w
    return out


def _install(model: Any, edits: list[Edit]) -> Any:
    hp = edits[0].target.write_at
    module, where = hook_module(model, hp)

    if where == "pre":

        def pre_hook(_module: Any, args: tuple) -> tuple:
            return (apply_edits(args[0], edits), *args[1:])

        return module.register_forward_pre_hook(pre_hook)

    def post_hook(_module: Any, _args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (apply_edits(output[0], edits), *output[1:])
        return apply_edits(output, edits)

    return module.register_forward_hook(post_hook)


@contextmanager
def intervene(model: Any, edits: list[Edit]) -> Iterator[None]:
    """Within the block, every forward pass of ``model`` runs with ``edits`` applied."""
    for edit in edits:
        check_edit(edit)
    by_hook: dict[str, list[Edit]] = {}
    for edit in edits:
        by_hook.setdefault(edit.target.write_at.name, []).append(edit)
    handles = [_install(model, group) for group in by_hook.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
