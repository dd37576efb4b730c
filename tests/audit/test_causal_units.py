"""The causal test scales SAE features and directions as it scales MLP neurons (tiny LLaMA, a random
SAE and a random directions file at the residual stream after block 1): at α = 1 the answers, the
failure rate and log P(right answer) are exactly the unedited model's; at α = 0 the most active
units change log P(right answer); a unit the interventions cannot scale is a case-set error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders.audit import planted_cases, write_sae
from safetensors.torch import save_file

from explainer.audit.causal import _answer_logprob, causal_test
from explainer.audit.make import is_right
from explainer.audit.stats import case_statistics, unit_space
from explainer.intervene import generate


def _space(kind, tiny_model, tmp_path):
    if kind == "sae":
        write_sae(tmp_path / "sae")
        return unit_space(tiny_model, "layers.1", sae=str(tmp_path / "sae"))
    v = torch.randn(6, 64, generator=torch.Generator().manual_seed(2))
    save_file({"directions": v}, tmp_path / "d.safetensors", metadata={"hookpoint": "layers.1"})
    return unit_space(tiny_model, "layers.1", directions=str(tmp_path / "d.safetensors"))


@pytest.mark.parametrize("kind", ["sae", "directions"])
def test_scaling_sae_features_and_directions(kind, tiny_model, tmp_path):
    cases = planted_cases(per_class=2)  # 8 questions, all of them used
    space = _space(kind, tiny_model, tmp_path)
    x = case_statistics(tiny_model, space, cases)
    selected = sorted(int(i) for i in np.argsort(-np.abs(x).mean(0))[:2])  # the units most active on the answers
    r = causal_test(tiny_model, space, selected, cases, alphas=(0.0, 1.0), max_cases=len(cases))
    assert r["questions"] == len(cases) and r["selected"]["units"] == selected
    assert len(r["random"]["units"]) == 2 and set(r["random"]["units"]).isdisjoint(selected)
    clean_fail = np.mean(
        [not is_right(generate(tiny_model, c.prompt, [], max_new_tokens=6).split("\n")[0], c.truth) for c in cases]
    )
    clean_logp = np.mean([_answer_logprob(tiny_model, c.prompt, c.truth[0], []) for c in cases])
    for curve in (r["selected"]["curve"], r["random"]["curve"]):
        at = {row["alpha"]: row for row in curve}
        assert at[1.0]["failure_rate"] == round(float(clean_fail), 4)
        assert at[1.0]["logp_right"] == round(float(clean_logp), 4)
    sel = {row["alpha"]: row for row in r["selected"]["curve"]}
    assert abs(sel[0.0]["logp_right"] - sel[1.0]["logp_right"]) > 1e-3


def test_a_small_directions_file_gives_the_random_control_what_is_left(tiny_model, tmp_path):
    from explainer.audit.report import _tables

    space = _space("directions", tiny_model, tmp_path)
    cases = planted_cases(per_class=1)
    r = causal_test(tiny_model, space, [0, 1, 2, 3], cases, alphas=(1.0,))
    assert r["random"]["units"] == [4, 5]
    r = causal_test(tiny_model, space, list(range(6)), cases, alphas=(0.0, 1.0))
    assert r["random"] == {"units": [], "curve": []} and len(r["selected"]["curve"]) == 2
    result = {
        "domains": {},
        "transfer": {"domains": []},
        "selected_units": {"ids": [], "weights": [], "count": 6, "of": 6, "share": 1.0},
        "causal": r,
    }
    (_, header, rows), *_ = [t for t in _tables(result) if t[0].startswith("Scaling")]
    assert header[2] == "failure rate (random)" and [row[2] for row in rows] == ["—", "—"]


def test_a_unit_that_cannot_be_scaled_is_a_case_set_error(tiny_model, tmp_path, monkeypatch):
    """A unit the interventions refuse (resolving it raises) is named in a case-set error, which the
    audit records as "causal test skipped", not a crash."""
    from explainer.audit import causal
    from explainer.audit.cases import CaseSetError
    from explainer.errors import InterventionError

    def refuse(lm, unit_id, **kw):
        raise InterventionError(f"{unit_id}: this SAE has no decoder to write with")

    monkeypatch.setattr(causal, "resolve_unit", refuse)
    space = _space("sae", tiny_model, tmp_path)
    with pytest.raises(CaseSetError, match="the causal test cannot scale these units: .* no decoder to write with"):
        causal_test(tiny_model, space, [0], planted_cases(per_class=1))
