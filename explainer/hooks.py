"""Hookpoints: which tensor inside the subject model is a "unit", and how to read it.

Names follow the model's own module paths:

- ``layers.{i}.mlp``: MLP neurons of block ``i``. For gated MLPs (LLaMA, Qwen, Gemma) the
  neuron value is ``act(gate_proj(x)) * up_proj(x)``, the *input* of ``down_proj``; for
  GPT-2-style MLPs it is the input of ``c_proj`` (the activation output). Read with a
  forward pre-hook on the output projection.
- ``layers.{i}``: the residual stream after block ``i``.

The forward pass is stopped as soon as the hooked tensor is captured, so later layers and
the LM head are never computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .errors import HookpointError

_OUT_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")


@dataclass(frozen=True)
class Hookpoint:
    name: str
    layer: int
    kind: Literal["mlp", "resid"]
    width: int
    """Number of units at this hookpoint."""


def decoder_layers(model: Any) -> Any:
    """The list of transformer blocks of a causal LM (LLaMA-style or GPT-2-style)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise HookpointError(f"cannot find the transformer blocks of {type(model).__name__}")


def _out_proj(block: Any) -> Any:
    mlp = block.mlp
    for name in _OUT_PROJ_NAMES:
        if hasattr(mlp, name):
            return getattr(mlp, name)
    raise HookpointError(f"cannot find the output projection of {type(mlp).__name__}")


def valid_hookpoints(model: Any) -> list[str]:
    n = len(decoder_layers(model))
    return [f"layers.{i}.mlp" for i in range(n)] + [f"layers.{i}" for i in range(n)]


def resolve_hookpoint(model: Any, name: str) -> Hookpoint:
    """Parse and check a hookpoint name; the error lists the valid ones."""
    layers = decoder_layers(model)
    m = re.fullmatch(r"layers\.(\d+)(\.mlp)?", name.strip())
    if not m or int(m.group(1)) >= len(layers):
        n = len(layers)
        raise HookpointError(
            f"unknown hookpoint {name!r}; valid hookpoints are layers.0.mlp … layers.{n - 1}.mlp "
            f"(MLP neurons) and layers.0 … layers.{n - 1} (residual stream after the block)"
        )
    layer = int(m.group(1))
    if m.group(2):
        proj = _out_proj(layers[layer])
        return Hookpoint(f"layers.{layer}.mlp", layer, "mlp", int(proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0]))
    return Hookpoint(f"layers.{layer}", layer, "resid", int(model.config.hidden_size))


class _Stop(Exception):
    """Raised inside a hook to end the forward pass once the tensor is captured."""


def capture(model: Any, hookpoint: Hookpoint, input_ids: Any, attention_mask: Any) -> Any:
    """Run the model up to ``hookpoint`` and return its activations ``[batch, tokens, units]``."""
    import torch

    captured: list[Any] = []
    block = decoder_layers(model)[hookpoint.layer]
    if hookpoint.kind == "mlp":
        def pre_hook(_module: Any, args: tuple) -> None:
            captured.append(args[0].detach())
            raise _Stop

        handle = _out_proj(block).register_forward_pre_hook(pre_hook)
    else:
        def post_hook(_module: Any, _args: tuple, output: Any) -> None:
            captured.append((output[0] if isinstance(output, tuple) else output).detach())
            raise _Stop

        handle = block.register_forward_hook(post_hook)
    try:
        with torch.no_grad():
            base = getattr(model, "model", None) or getattr(model, "transformer", model)
            base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise HookpointError(f"hookpoint {hookpoint.name} was never reached in the forward pass")
    return captured[0].float()
