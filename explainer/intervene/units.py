"""What an intervention acts on: a unit id resolved to a read and a write at one hookpoint.

Every unit reads one number per token from the hooked tensor ``x`` and has a *write vector*
``w`` such that adding ``delta * w`` to ``x`` moves the unit by ``delta``:

- a raw unit (an MLP neuron, the input of ``down_proj``; or one coordinate of any other
  hookpoint): reads ``x[..., i]``, writes the basis vector ``e_i``;
- an SAE or transcoder feature: reads ``encode(x)[..., i]``, writes the decoder row ``W_dec[i]``
  (at the SAE's own hookpoint; for a transcoder, at the MLP output of its block, its value read at
  the MLP input in the same forward pass). Moving a feature this way keeps the SAE's error term
  ``x - decode(encode(x))`` untouched, in every mode;
- a direction: reads the projection ``x · v`` (``v`` of unit length), writes ``v``.

:func:`resolve_unit` makes a :class:`UnitTarget` from a unit id and the SAE or directions file
its collection used; :func:`unit_source` finds those in the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from explainer.collect.hooks import Hookpoint, resolve_hookpoint
from explainer.errors import InterventionError, UnknownUnitError

UnitKind = Literal["neuron", "feature", "direction"]

_UNIT_HOOK = re.compile(r"(layers\.\d+(?:\.mlp|\.mlp_in|\.mlp_out|\.attn_out)?)(?:\.(sae|dir)-(.+))?")


@dataclass(frozen=True)
class UnitTarget:
    """One unit, ready to be read and written inside a forward pass."""

    unit_id: str
    kind: UnitKind
    index: int
    read_at: Hookpoint
    """Where the unit's value is read."""
    write_at: Hookpoint
    """Where ``delta * write`` is added (the same hookpoint, except for transcoder features)."""
    write: Any
    """The write vector ``[write_at.width]`` (float32): one unit of change of the unit's value."""
    read: Callable[[Any], Any]
    """``x [..., read_at.width]`` → the unit's value ``[...]`` (read at ``read_at``)."""
    mean: float | None = None
    """The unit's mean activation over its collection corpus (for mean ablation), when known."""
    name: str | None = None


@dataclass(frozen=True)
class UnitSource:
    """Where a stored unit came from: what :func:`resolve_unit` needs besides the model."""

    unit_id: str
    model: str
    """The model as the collection was given it (a packaged name or an absolute path)."""
    sae: str | None
    directions: str | None
    mean: float | None
    name: str | None


def parse_unit(unit_id: str) -> tuple[str, str, str | None, int]:
    """``(model, hookpoint, 'sae'|'dir'|None, index)`` of a unit id; a malformed id is an
    :class:`InterventionError`."""
    try:
        model, hook, index = unit_id.rsplit("/", 2)
        idx = int(index)
    except ValueError:
        raise InterventionError(f"malformed unit id {unit_id!r}: expected MODEL/HOOKPOINT/INDEX") from None
    m = _UNIT_HOOK.fullmatch(hook)
    if not m or idx < 0:
        raise InterventionError(f"malformed unit id {unit_id!r}: unknown hookpoint part {hook!r}")
    return model, m.group(1), m.group(2), idx


def unit_source(store: Any, unit_id: str) -> UnitSource:
    """The model, SAE or directions file and mean activation recorded with ``unit_id``'s latest
    collection; :class:`UnknownUnitError` when the store does not hold the unit."""
    found = store.get_records([unit_id]).get(unit_id)
    if found is None:
        raise UnknownUnitError([unit_id])
    collection_id, record = found
    collection = store.get_collection(collection_id) or {}
    try:
        config = json.loads(collection.get("config") or "{}")
    except (TypeError, ValueError):
        config = {}
    prov = config.get("provenance") or {}
    given = (prov.get("model") or {}).get("given") or record.model
    return UnitSource(unit_id, given, prov.get("sae"), prov.get("directions"), record.stats.mean, record.name)


def _decoder(sae_path: str, encoder: Any) -> Any:
    """``W_dec [d_sae, d_out]`` of the SAE folder (read with safetensors, like the encoder)."""
    from safetensors.torch import load_file

    from explainer.collect.sae import CFG, SAELENS_WEIGHTS, SPARSIFY_WEIGHTS

    folder = Path(sae_path).expanduser()
    if not (folder / CFG).is_file():
        folder = folder / encoder.name
    for fname in (SAELENS_WEIGHTS, SPARSIFY_WEIGHTS):
        if (folder / fname).is_file():
            weights = load_file(str(folder / fname))
            if "W_dec" not in weights:
                raise InterventionError(f"{folder / fname} has no W_dec: its features cannot be steered")
            w_dec = weights["W_dec"].float()
            if w_dec.shape[0] != encoder.d_sae:
                raise InterventionError(f"{folder / fname}: W_dec has {w_dec.shape[0]} rows, not {encoder.d_sae}")
            return w_dec
    raise InterventionError(f"no SAE weights file in {folder}")


def resolve_unit(
    lm: Any,
    unit_id: str,
    *,
    sae: str | None = None,
    directions: str | None = None,
    mean: float | None = None,
    name: str | None = None,
) -> UnitTarget:
    """The :class:`UnitTarget` of ``unit_id`` in the loaded model ``lm``; SAE features need the
    ``sae`` folder and directions the ``directions`` file their collection read."""
    import torch

    model_name, hook, kind, idx = parse_unit(unit_id)
    if model_name != lm.name:
        raise InterventionError(f"unit {unit_id!r} belongs to model {model_name!r}, but {lm.name!r} is loaded")
    hp = resolve_hookpoint(lm.model, hook)
    if kind is None:
        if idx >= hp.width:
            raise UnknownUnitError([unit_id])
        e = torch.zeros(hp.width)
        e[idx] = 1.0

        def read_raw(x: Any) -> Any:
            return x[..., idx]

        return UnitTarget(unit_id, "neuron", idx, hp, hp, e, read_raw, mean, name)
    if kind == "dir":
        if not directions:
            raise InterventionError(f"unit {unit_id!r} is a direction: the directions file is needed to steer it")
        from explainer.collect.directions import load_directions

        dirs = load_directions(directions)
        dirs.check_hookpoint(hp)
        if idx >= dirs.width:
            raise UnknownUnitError([unit_id])
        v = dirs.vectors[idx].float()

        def read_dir(x: Any) -> Any:
            return x.float() @ v.to(x.device)

        return UnitTarget(unit_id, "direction", idx, hp, hp, v, read_dir, mean, name or dirs.names[idx])
    if not sae:
        raise InterventionError(f"unit {unit_id!r} is an SAE feature: the SAE folder is needed to steer it")
    from explainer.collect.sae import load_sae

    encoder = load_sae(sae, hp.name)
    encoder.check_hookpoint(hp)
    if idx >= encoder.d_sae:
        raise UnknownUnitError([unit_id])
    w_dec = _decoder(sae, encoder)
    write_at = hp
    if "transcoder" in encoder.architecture:
        write_at = resolve_hookpoint(lm.model, f"layers.{hp.layer}.mlp_out")
    if w_dec.shape[1] != write_at.width:
        raise InterventionError(f"W_dec rows have width {w_dec.shape[1]}, but {write_at.name} has {write_at.width}")

    def read_feature(x: Any) -> Any:
        return encoder.encode(x)[..., idx]

    return UnitTarget(unit_id, "feature", idx, hp, write_at, w_dec[idx], read_feature, mean, name)


def write_direction(lm: Any, target: UnitTarget) -> Any:
    """The unit's write vector in the residual stream (``[hidden]``): an MLP-neuron-space vector
    goes through ``down_proj``; MLP-input-space vectors have no residual write and are refused."""
    import torch

    from explainer.collect.hooks import hook_module

    if target.write_at.kind == "mlp":
        proj, _ = hook_module(lm.model, target.write_at)
        with torch.no_grad():
            return proj.weight.float() @ target.write.to(proj.weight.device)
    if target.write_at.kind == "mlp_in":
        raise InterventionError(f"{target.unit_id}: a unit read at the MLP input writes nothing to the residual stream")
    return target.write
