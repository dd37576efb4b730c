"""Edits written into the forward pass, at the modules collection reads from.

An :class:`Edit` is one unit, a mode and a strength:

- ``add``: the unit moves by ``strength`` (``x += strength * w``): a direction or SAE feature
  is steered by ``strength × unit vector`` or ``strength × decoder row``;
- ``scale``: the unit's value is multiplied by ``strength``;
- ``clamp``: the unit's value is set to ``strength``;
- ``ablate``: the unit's value is set to 0 (``ablate_to="zero"``) or to its mean activation over
  its collection corpus (``"mean"``); ``strength`` is ignored.

All edits at one hookpoint read the *unedited* tensor and are applied together, so several units
at once (a whole layer's neurons, a set of SAE features) compose exactly. A transcoder feature is
read at the MLP input and written at the MLP output: its value (the transcoder's encoding of the
MLP input, as the MLP receives it) is captured by a hook at the read site in the same forward pass,
and the change ``(new value − value) × decoder row`` is added to the MLP output, which keeps the
transcoder's error term as it was. :func:`intervene` is a context manager that installs the hooks
for the length of a ``with`` block, on every position of every forward pass (generation included).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
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
    if edit.mode == "ablate" and edit.ablate_to == "mean" and edit.target.mean is None:
        raise InterventionError(f"{edit.target.unit_id}: its mean activation is unknown; ablate to zero instead")


def apply_edits(x: Any, edits: list[Edit], values: Sequence[Any] | None = None) -> Any:
    """``x`` ``[..., width]`` with every edit applied; every read is of the unedited ``x``, except
    that ``values[i]`` (when given and not ``None``) is edit ``i``'s value read elsewhere in the same
    forward pass (a transcoder feature, read at the MLP input)."""
    out = x
    for i, edit in enumerate(edits):
        w = edit.target.write.to(device=x.device, dtype=x.dtype)
        if edit.mode == "add":
            out = out + edit.strength * w
            continue
        read = values[i] if values is not None else None
        value = (edit.target.read(x) if read is None else read).to(device=x.device, dtype=x.dtype)
        if edit.mode == "scale":
            delta = (edit.strength - 1.0) * value
        elif edit.mode == "clamp":
            delta = edit.strength - value
        else:
            to = edit.target.mean if edit.ablate_to == "mean" else 0.0
            delta = float(to or 0.0) - value
        out = out + delta.unsqueeze(-1) * w
    return out


def _reads_elsewhere(edit: Edit) -> bool:
    """Whether the edit needs the unit's value from another hookpoint (a transcoder feature's, read at
    the MLP input and written at the MLP output; ``add`` needs no value)."""
    return edit.mode != "add" and edit.target.read_at != edit.target.write_at


def _install(model: Any, group: list[tuple[int, Edit]], read: dict[int, Any]) -> Any:
    """The hook that writes ``group`` (``(index, edit)`` pairs, one write hookpoint); the values of
    edits read elsewhere come from ``read`` (filled by :func:`_install_read` in the same pass)."""
    edits = [e for _, e in group]
    module, where = hook_module(model, edits[0].target.write_at)

    def edit(x: Any) -> Any:
        values = None
        if any(_reads_elsewhere(e) for e in edits):
            missing = [e for i, e in group if _reads_elsewhere(e) and i not in read]
            if missing:
                raise InterventionError(
                    f"{missing[0].target.unit_id}: its value was not read at {missing[0].target.read_at.name}"
                )
            values = [read.get(i) if _reads_elsewhere(e) else None for i, e in group]
        return apply_edits(x, edits, values)

    if where == "pre":

        def pre_hook(_module: Any, args: tuple) -> tuple:
            return (edit(args[0]), *args[1:])

        return module.register_forward_pre_hook(pre_hook)

    def post_hook(_module: Any, _args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    return module.register_forward_hook(post_hook)


def _install_read(model: Any, group: list[tuple[int, Edit]], read: dict[int, Any]) -> Any:
    """The hook that stores, in ``read``, the value of each edit of ``group`` at its read hookpoint
    (the tensor as the module receives it: after any edit written there)."""
    module, where = hook_module(model, group[0][1].target.read_at)

    def store(x: Any) -> None:
        for i, e in group:
            read[i] = e.target.read(x)

    if where == "pre":

        def pre_hook(_module: Any, args: tuple) -> None:
            store(args[0])

        return module.register_forward_pre_hook(pre_hook)

    def post_hook(_module: Any, _args: tuple, output: Any) -> None:
        store(output[0] if isinstance(output, tuple) else output)

    return module.register_forward_hook(post_hook)


@contextmanager
def intervene(model: Any, edits: list[Edit]) -> Iterator[None]:
    """Within the block, every forward pass of ``model`` runs with ``edits`` applied."""
    for edit in edits:
        check_edit(edit)
    by_hook: dict[str, list[tuple[int, Edit]]] = {}
    by_read: dict[str, list[tuple[int, Edit]]] = {}
    for i, edit in enumerate(edits):
        by_hook.setdefault(edit.target.write_at.name, []).append((i, edit))
        if _reads_elsewhere(edit):
            by_read.setdefault(edit.target.read_at.name, []).append((i, edit))
    read: dict[int, Any] = {}
    # the writing hooks first: a read hook on the same module then sees what the module receives
    handles = [_install(model, group, read) for group in by_hook.values()]
    handles += [_install_read(model, group, read) for group in by_read.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        read.clear()
