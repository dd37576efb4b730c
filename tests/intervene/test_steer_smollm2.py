"""On the real SmolLM2-135M: a steering direction built from its own residuals (positions followed by
a digit minus the rest) makes digits more likely when added. Its vocabulary projection at this middle
layer does not promote digits (it reads the direction as if no later block ran): the measured change,
not the projection, is the output-side evidence for mid-layer units."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.collect.models import load_model
from explainer.intervene import Edit, resolve_unit, steer
from explainer.intervene.output import vocab_projection

TEXT = (
    "In 1984 there were 312 people, by 1990 there were 4500, and in 2003 the count reached 12000. "
    "The shop sells apples and pears; the baker bakes bread every morning before the market opens. "
) * 3


@pytest.mark.slow
def test_a_planted_digit_direction_raises_digits(tmp_path):
    lm = load_model("smollm2-135m")
    hp = resolve_hookpoint(lm.model, "layers.15")
    ids = lm.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    resid = capture(lm.model, hp, ids, torch.ones_like(ids))[0]
    tokens = [lm.tokenizer.decode([i]) for i in ids[0].tolist()]
    before_digit = torch.tensor([t.strip()[:1].isdigit() for t in tokens[1:]] + [False])
    v = resid[before_digit].mean(0) - resid[~before_digit].mean(0)
    save_file({"directions": v[None].contiguous()}, tmp_path / "d.safetensors", metadata={"hookpoint": "layers.15"})
    target = resolve_unit(lm, "smollm2-135m/layers.15.dir-d-000000/0", directions=str(tmp_path / "d.safetensors"))
    r = steer(lm, "Here is what happened:", [Edit(target, "add", 160.0)], max_new_tokens=6, k=10)
    assert r.kl > 0.1
    assert sum(t.token.strip()[:1].isdigit() for t in r.risen) >= 3, r.risen
    proj = vocab_projection(lm, target, k=20)
    assert len(proj["promoted"]) == len(proj["suppressed"]) == 20
    assert proj["promoted"][-1]["logit"] > proj["suppressed"][0]["logit"]
