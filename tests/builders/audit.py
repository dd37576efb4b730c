"""Case sets for audit tests: a planted failure (the response names an animal) in two domains."""

from __future__ import annotations

import random
from typing import Any

from explainer.audit.cases import Case

ANIMALS = ["zebra", "tiger", "horse", "eagle", "shark", "camel", "otter", "whale"]
OTHERS = ["table", "green", "paper", "seven", "river", "stone", "music", "bread"]


def planted_cases(per_class: int = 12, domains: tuple[str, ...] = ("alpha", "beta"), seed: int = 0) -> list[Case]:
    """``per_class`` fail cases (an animal in the answer) and as many pass cases, per domain."""
    rng = random.Random(seed)
    cases = []
    for d in domains:
        for label, words in (("fail", ANIMALS), ("pass", OTHERS)):
            for i in range(per_class):
                w = rng.choice(words)
                cases.append(
                    Case(
                        f"Question {d} {i}: name one thing.\nAnswer:",
                        f" {w}",
                        label,
                        d,
                        (1, 1 + len(w)),
                        (w,),
                        f"{d}-{label}-{i}",
                    )  # type: ignore[arg-type]
                )
    return cases


def write_sae(path: Any, d_in: int = 64, d_sae: int = 96, hook: str = "blocks.1.hook_resid_post") -> dict[str, Any]:
    """A random ReLU SAE in the SAELens layout (``cfg.json``, ``sae_weights.safetensors``) at ``hook``;
    returns its weights."""
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.3,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g) * 0.3,
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(w, path / "sae_weights.safetensors")
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "hook_point": hook,
        "hook_point_layer": 1,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "dtype": "float32",
    }
    (path / "cfg.json").write_text(json.dumps(cfg))
    return w
