"""Output-side descriptions: which tokens a unit promotes and suppresses.

VocabProj (Gur-Arieh et al. 2025): the unit's write direction in the residual stream (an MLP
neuron's ``down_proj`` column, an SAE feature's decoder row, a direction) through the final norm's
gain and the unembedding. The norm's scale is the same for every token, so only the gain is applied
(and, for LayerNorm, the centring); its bias does not depend on the unit and is left out. The
logits rank tokens: the highest are promoted, the lowest suppressed.
"""

from __future__ import annotations

from typing import Any

from explainer.errors import InterventionError
from explainer.intervene.units import UnitTarget, write_direction


def _final_norm(model: Any) -> Any:
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    return None


def vocab_projection(lm: Any, target: UnitTarget, k: int = 10) -> dict[str, Any]:
    """``{"promoted": [{token, logit}], "suppressed": [...]}``: the ``k`` tokens whose logits the
    unit's write direction raises most and lowers most (logits of the unit-length direction)."""
    import torch

    if k < 1:
        raise InterventionError(f"k must be at least 1, not {k}")
    head = lm.model.get_output_embeddings()
    if head is None:
        raise InterventionError(f"{type(lm.model).__name__} has no unembedding")
    with torch.no_grad():
        w = write_direction(lm, target).float().to(head.weight.device)
        norm = _final_norm(lm.model)
        if norm is not None and hasattr(norm, "bias") and norm.bias is not None:
            w = w - w.mean()  # LayerNorm centres its input
        w = w / w.norm().clamp_min(1e-12)
        if norm is not None and getattr(norm, "weight", None) is not None:
            w = w * norm.weight.float()
        logits = head.weight.float() @ w
        top, bottom = logits.topk(k), (-logits).topk(k)

    def rows(values: Any, idx: Any, sign: float) -> list[dict[str, Any]]:
        return [
            {"token": lm.tokenizer.decode([int(i)]), "logit": round(sign * float(v), 4)}
            for v, i in zip(values.tolist(), idx.tolist())
        ]

    return {
        "method": "vocab-projection",
        "promoted": rows(top.values, top.indices, 1.0),
        "suppressed": rows(bottom.values, bottom.indices, -1.0),
    }
