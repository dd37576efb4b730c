"""The audit on the tiny LLaMA with a planted failure (an animal in the answer): the statistic, the
probe and its held-out figures, the probe file, the monitor and its refusals, the causal test and
the report, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders.audit import ANIMALS, OTHERS, planted_cases

from explainer.audit.cases import Case, write_cases
from explainer.audit.probefile import (
    ProbeFileError,
    UncalibratedDomainError,
    check_probe,
    monitor,
    read_probe,
    score_rows,
)
from explainer.audit.stats import case_statistics, unit_space
from explainer.cli.main import main


def test_contribution_statistic_matches_its_definition(tiny_model):
    import torch

    from explainer.collect.hooks import decoder_layers

    case = Case("Name an animal:", " zebra stripes", "fail", "d", (1, 6))
    space = unit_space(tiny_model, "layers.1.mlp")
    assert space.statistic == "contribution" and space.width == 128
    got = case_statistics(tiny_model, space, [case])[0]
    mlp = decoder_layers(tiny_model.model)[1].mlp
    seen: list = []
    h = mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0][0].detach()))
    ids = tiny_model.tokenizer(case.prompt + case.response, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        tiny_model.model(**ids)
    h.remove()
    offsets = tiny_model.tokenizer(case.prompt + case.response, return_offsets_mapping=True, add_special_tokens=False)[
        "offset_mapping"
    ]
    a0, a1 = len(case.prompt) + 1, len(case.prompt) + 6
    pos = [i for i, (s, e) in enumerate(offsets) if s < a1 and e > a0]
    x = seen[0][pos]
    w = mlp.down_proj.weight
    want = (x.abs() * w.norm(dim=0) / (x @ w.T).norm(dim=-1, keepdim=True)).mean(0)
    assert np.allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-6)
    acts = case_statistics(tiny_model, unit_space(tiny_model, "layers.1"), [case])
    assert acts.shape == (1, 64)


@pytest.fixture(scope="module")
def audited(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    write_cases(d / "cases.jsonl", planted_cases(per_class=12))
    argv = ["audit", "--cases", str(d / "cases.jsonl"), "--model", str(tiny_model_dir), "--layer", "1"]
    assert main([*argv, "--out", str(d / "out"), "--causal-cases", "3", "--alphas", "0,1,3", "--json"]) == 0
    return d, json.loads((d / "out" / "audit.json").read_text())


def test_audit_finds_the_planted_failure(audited):
    _, r = audited
    assert r["pooled"]["test"]["auroc"] >= 0.8
    lo, hi = r["pooled"]["test"]["ci"]
    assert lo <= r["pooled"]["test"]["auroc"] <= hi
    t = r["transfer"]
    assert t["domains"] == ["alpha", "beta"] and len(t["matrix"]) == 2 and all(len(row) == 2 for row in t["matrix"])
    s = r["selected_units"]
    assert (
        s["count"] == len(s["ids"]) > 0 and s["of"] == 128 and s["share"] == pytest.approx(s["count"] / 128, rel=1e-4)
    )
    assert all(u.startswith("tiny-llama/layers.1.mlp/") for u in s["ids"])
    rnd = r["random_units"]
    assert rnd["units"] == s["count"] and rnd["random_draws"] > 0 and rnd["selected_auroc"] is not None
    assert r["provenance"]["case_set_sha256"] and r["provenance"]["unit_space"]["hookpoint"] == "layers.1.mlp"


def test_causal_curve_is_unchanged_at_alpha_one_and_moves_elsewhere(audited):
    _, r = audited
    c = r["causal"]
    assert c["alphas"] == [0.0, 1.0, 3.0] and c["questions"] == 3
    sel = {row["alpha"]: row for row in c["selected"]["curve"]}
    rnd = {row["alpha"]: row for row in c["random"]["curve"]}
    assert sel[1.0]["logp_right"] == pytest.approx(rnd[1.0]["logp_right"], abs=1e-3)  # α = 1 is the clean model
    assert sel[0.0]["logp_right"] != pytest.approx(sel[1.0]["logp_right"], abs=1e-4)
    assert set(c["random"]["units"]).isdisjoint(c["selected"]["units"])
    assert all(0 <= row["failure_rate"] <= 1 for row in c["selected"]["curve"])


def test_report_files(audited):
    d, r = audited
    md = (d / "out" / "audit.md").read_text()
    assert "## Transfer matrix" in md and "## Selected units" in md and "## Scaling the units" in md
    assert "heat" not in md and "<table" in (d / "out" / "audit.html").read_text()
    from builders.report import pdf_pages

    _, texts = pdf_pages((d / "out" / "audit.pdf").read_bytes())
    text = " ".join(texts)
    assert "Failure-mode audit" in text and "Transfer matrix" in text and "Selected units" in text


def test_monitor_scores_new_pairs_and_refuses_unknown_domains(audited, tiny_model_dir, tmp_path, capsys):
    d, _ = audited
    probe = d / "out" / "probe.json"
    doc = read_probe(probe)
    assert doc["model"] == "tiny-llama" and doc["units"] and set(doc["domains"]) == {"alpha", "beta"}
    items = [
        {"prompt": "Question alpha 99: name one thing.\nAnswer:", "response": f" {w}", "domain": "alpha"}
        for w in ANIMALS[:4] + OTHERS[:4]
    ]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    argv = ["monitor", "--probe", str(probe), "--cases", str(tmp_path / "new.jsonl"), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    p = [x["p_fail"] for x in res]
    assert np.mean(p[:4]) > np.mean(p[4:]) and all(x["calibrated"] for x in res)
    (tmp_path / "other.jsonl").write_text(json.dumps({**items[0], "domain": "gamma"}) + "\n")
    argv = ["monitor", "--probe", str(probe), "--cases", str(tmp_path / "other.jsonl")]
    assert main(argv) == 2
    assert "not calibrated on domain 'gamma'" in capsys.readouterr().err
    assert main([*argv, "--allow-uncalibrated", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["calibrated"] is False


def test_probe_file_validation(audited):
    d, _ = audited
    doc = read_probe(d / "out" / "probe.json")
    for broken, message in (
        ({**doc, "format": "x"}, "not a probe file"),
        ({**doc, "version": 9}, "unsupported probe version 9"),
        ({**doc, "units": []}, "no units"),
        ({**doc, "units": [{**doc["units"][0], "scale": 0}]}, "scale must be positive"),
        ({**doc, "intercept": float("nan")}, "intercept must be a finite number"),
        ({**doc, "domains": {"alpha": {"threshold": 0}}}, "domain 'alpha' needs a threshold and a calibration"),
    ):
        with pytest.raises(ProbeFileError, match=message):
            check_probe(broken)
    with pytest.raises(UncalibratedDomainError):
        score_rows(doc, np.zeros((1, 128)), ["gamma"], False)


def test_monitor_refuses_another_model(audited, tiny_model):
    d, _ = audited
    doc = {**read_probe(d / "out" / "probe.json"), "model": "other"}
    with pytest.raises(ProbeFileError, match="fitted on model 'other'"):
        monitor(tiny_model, doc, [{"prompt": "a", "response": " b", "domain": "alpha"}])


def test_audit_cli_refusals(tmp_path, capsys):
    one = [c for c in planted_cases(per_class=8) if c.label == "fail"]
    write_cases(tmp_path / "one.jsonl", one)
    argv = ["audit", "--cases", str(tmp_path / "one.jsonl"), "--layer", "1", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "only one class" in capsys.readouterr().err
    assert main(["cases", "check", str(tmp_path / "one.jsonl")]) == 2


def test_token_statistics_average_to_the_case_statistic(tiny_model):
    from explainer.audit.stats import token_statistics

    case = Case("Say:", " not today, never", "fail", "d")
    space = unit_space(tiny_model, "layers.2.mlp")
    spans, per_token = token_statistics(tiny_model, space, case)
    assert spans[0][0] <= 1 and spans[-1][1] == len(case.response) and per_token.shape == (len(spans), 128)
    assert np.allclose(per_token.mean(0), case_statistics(tiny_model, space, [case])[0], rtol=1e-4, atol=1e-6)
