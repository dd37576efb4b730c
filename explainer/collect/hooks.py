"""Hookpoints: which tensor inside the subject model is a "unit", and how to read it.

Names follow the model's own module paths (``L`` is the block index):

- ``layers.L.mlp``: MLP neurons of block ``L``. For gated MLPs (LLaMA, Qwen, Gemma) the
  neuron value is ``act(gate_proj(x)) * up_proj(x)``, the *input* of ``down_proj``; for
  GPT-2-style MLPs it is the input of ``c_proj`` (the activation output). Read with a
  forward pre-hook on the output projection. Width: the MLP's hidden size.
- ``layers.L``: the residual stream after block ``L`` (the block's output).
- ``layers.L.mlp_in``: the input of the MLP module (after its pre-norm), what transcoders read.
- ``layers.L.mlp_out``: the output of the MLP module, before it is added to the residual.
- ``layers.L.attn_out``: the output of the attention module, before it is added to the residual.

All but ``layers.L.mlp`` have the model's hidden size as width. SAE libraries name the same
tensors differently; :func:`from_transformer_lens` and :func:`from_sparsify` translate
their names, and an unknown name lists the valid ones.

The forward pass is stopped as soon as the hooked tensor is captured, so later layers and
the LM head are never computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from explainer.errors import HookpointError

_OUT_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")

HookKind = Literal["mlp", "resid", "mlp_in", "mlp_out", "attn_out"]
_SUFFIX_KIND: dict[str, HookKind] = {
    "": "resid",
    ".mlp": "mlp",
    ".mlp_in": "mlp_in",
    ".mlp_out": "mlp_out",
    ".attn_out": "attn_out",
}


@dataclass(frozen=True)
class Hookpoint:
    name: str
    """Our name, e.g. ``layers.15.mlp``."""
    layer: int
    kind: HookKind
    width: int
    """Number of values per token at this hookpoint (units, or an SAE's ``d_in``)."""


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


def _attn(block: Any) -> Any:
    for name in _ATTN_NAMES:
        if hasattr(block, name):
            return getattr(block, name)
    raise HookpointError(f"cannot find the attention module of {type(block).__name__}")


def valid_hookpoints(model: Any) -> list[str]:
    n = len(decoder_layers(model))
    return [f"layers.{i}{suffix}" for suffix in (".mlp", "", ".mlp_in", ".mlp_out", ".attn_out") for i in range(n)]


def _valid_message(n: int) -> str:
    last = n - 1
    return (
        f"valid hookpoints are layers.0.mlp … layers.{last}.mlp (MLP neurons), layers.0 … layers.{last} "
        f"(residual stream after the block), and layers.L.mlp_in, layers.L.mlp_out, layers.L.attn_out "
        f"for L in 0…{last} (MLP input, MLP output, attention output)"
    )


def resolve_hookpoint(model: Any, name: str) -> Hookpoint:
    """Parse and check a hookpoint name; the error lists the valid ones."""
    layers = decoder_layers(model)
    m = re.fullmatch(r"layers\.(\d+)(\.mlp|\.mlp_in|\.mlp_out|\.attn_out)?", name.strip())
    if not m or int(m.group(1)) >= len(layers):
        raise HookpointError(f"unknown hookpoint {name!r}; {_valid_message(len(layers))}")
    layer, kind = int(m.group(1)), _SUFFIX_KIND[m.group(2) or ""]
    if kind == "mlp":
        proj = _out_proj(layers[layer])
        width = int(proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0])
    else:
        width = int(model.config.hidden_size)
    return Hookpoint(f"layers.{layer}{m.group(2) or ''}", layer, kind, width)


# -- names used by SAE libraries ----------------------------------------------------------

_TL_NAMES: tuple[tuple[str, str], ...] = (
    (r"blocks\.(\d+)\.hook_resid_post", "layers.{L}"),
    (r"blocks\.(\d+)\.hook_resid_pre", "layers.{Lm1}"),
    (r"blocks\.(\d+)\.mlp\.hook_post", "layers.{L}.mlp"),
    (r"blocks\.(\d+)\.hook_mlp_out", "layers.{L}.mlp_out"),
    (r"blocks\.(\d+)\.hook_attn_out", "layers.{L}.attn_out"),
    (r"blocks\.(\d+)\.ln2\.hook_normalized", "layers.{L}.mlp_in"),
)
TRANSFORMER_LENS_HELP = (
    "blocks.L.hook_resid_post → layers.L; blocks.L.hook_resid_pre → layers.(L-1); "
    "blocks.L.mlp.hook_post → layers.L.mlp; blocks.L.hook_mlp_out → layers.L.mlp_out; "
    "blocks.L.hook_attn_out → layers.L.attn_out; blocks.L.ln2.hook_normalized → layers.L.mlp_in"
)


def from_transformer_lens(name: str) -> str:
    """Our hookpoint for a TransformerLens/SAELens hook name, e.g. ``blocks.12.hook_resid_post`` →
    ``layers.12``; our own names pass through. Raises :class:`HookpointError` listing the mapping."""
    name = name.strip()
    if re.fullmatch(r"layers\.\d+(\.mlp|\.mlp_in|\.mlp_out|\.attn_out)?", name):
        return name
    for pattern, template in _TL_NAMES:
        m = re.fullmatch(pattern, name)
        if m:
            layer = int(m.group(1))
            if template == "layers.{Lm1}" and layer == 0:
                raise HookpointError(f"hook {name!r} reads the token embeddings, which are not a supported hookpoint")
            return template.format(L=layer, Lm1=layer - 1)
    raise HookpointError(f"unsupported TransformerLens/SAELens hook name {name!r}; supported: {TRANSFORMER_LENS_HELP}")


SPARSIFY_HELP = (
    "layers.L → layers.L; layers.L.mlp → layers.L.mlp_out (its input layers.L.mlp_in for transcoders); "
    "layers.L.self_attn → layers.L.attn_out; layers.L.mlp.down_proj → layers.L.mlp_out "
    "(its input, the neurons layers.L.mlp, for transcoders); prefixes model./transformer./gpt_neox. "
    "and h.L for layers.L are accepted"
)


def from_sparsify(name: str, transcode: bool = False) -> str:
    """Our hookpoint for a sparsify hookpoint (a module path whose *output* the SAE reads, or
    whose *input* a transcoder reads), e.g. ``layers.12`` → ``layers.12``, ``layers.12.mlp`` →
    ``layers.12.mlp_out``. Raises :class:`HookpointError` listing the mapping."""
    raw = name.strip()
    path = re.sub(r"^(base_model\.model\.|model\.|transformer\.|gpt_neox\.)", "", raw)
    path = re.sub(r"^h\.(\d+)", r"layers.\1", path)
    m = re.fullmatch(r"layers\.(\d+)(\.mlp|\.mlp\.down_proj|\.mlp\.c_proj|\.self_attn|\.attn|\.attention)?", path)
    if m:
        layer, sub = int(m.group(1)), m.group(2) or ""
        if sub == "":
            if not transcode:
                return f"layers.{layer}"
        elif sub == ".mlp":
            return f"layers.{layer}.mlp_in" if transcode else f"layers.{layer}.mlp_out"
        elif sub in (".mlp.down_proj", ".mlp.c_proj"):
            return f"layers.{layer}.mlp" if transcode else f"layers.{layer}.mlp_out"
        elif not transcode:
            return f"layers.{layer}.attn_out"
    kind = "transcoder" if transcode else "SAE"
    raise HookpointError(f"unsupported sparsify hookpoint {raw!r} for a {kind}; supported: {SPARSIFY_HELP}")


# -- capture ------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised inside a hook to end the forward pass once the tensor is captured."""


def hook_module(model: Any, hookpoint: Hookpoint) -> tuple[Any, Literal["pre", "post"]]:
    """The module whose input (``pre``) or output (``post``) is the hooked tensor; collection
    reads it there and interventions write it there."""
    block = decoder_layers(model)[hookpoint.layer]
    if hookpoint.kind == "mlp":
        return _out_proj(block), "pre"
    if hookpoint.kind == "mlp_in":
        return block.mlp, "pre"
    if hookpoint.kind == "mlp_out":
        return block.mlp, "post"
    if hookpoint.kind == "attn_out":
        return _attn(block), "post"
    return block, "post"


def _register(model: Any, hookpoint: Hookpoint, captured: list[Any]) -> Any:
    def pre_hook(_module: Any, args: tuple) -> None:
        captured.append(args[0].detach())
        raise _Stop

    def post_hook(_module: Any, _args: tuple, output: Any) -> None:
        captured.append((output[0] if isinstance(output, tuple) else output).detach())
        raise _Stop

    module, where = hook_module(model, hookpoint)
    if where == "pre":
        return module.register_forward_pre_hook(pre_hook)
    return module.register_forward_hook(post_hook)


def capture(model: Any, hookpoint: Hookpoint, input_ids: Any, attention_mask: Any) -> Any:
    """Run the model up to ``hookpoint`` and return its activations ``[batch, tokens, width]``
    (float32, raw units of the hooked tensor)."""
    import torch

    captured: list[Any] = []
    handle = _register(model, hookpoint, captured)
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


def capture_each(model: Any, hookpoints: list[Hookpoint], input_ids: Any, attention_mask: Any, consume: Any) -> None:
    """Run the model once, handing each hookpoint's activations ``[batch, tokens, width]`` (float32)
    to ``consume(hookpoint, acts)`` as soon as the forward pass reaches it, and stop the pass once
    the last of them is reached: one pass up to the deepest hookpoint, only one hooked tensor
    held at a time. Hookpoints must have distinct names."""
    import torch

    seen: list[str] = []

    def reached(hp: Hookpoint, t: Any) -> None:
        consume(hp, t.detach().float().clone())  # a copy: the pass goes on reading the original
        seen.append(hp.name)
        if len(seen) == len(hookpoints):
            raise _Stop

    handles = []
    for hp in hookpoints:
        module, where = hook_module(model, hp)
        if where == "pre":
            handles.append(module.register_forward_pre_hook(lambda _m, args, hp=hp: reached(hp, args[0])))
        else:
            handles.append(
                module.register_forward_hook(
                    lambda _m, _a, out, hp=hp: reached(hp, out[0] if isinstance(out, tuple) else out)
                )
            )
    try:
        with torch.no_grad():
            base = getattr(model, "model", None) or getattr(model, "transformer", model)
            base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [hp.name for hp in hookpoints if hp.name not in seen]
    if missing:
        raise HookpointError(f"hookpoint(s) {missing} were never reached in the forward pass")
