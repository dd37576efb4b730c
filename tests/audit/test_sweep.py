"""`explainer audit --layers`: the layer sweep on the tiny LLaMA's planted failure. One forward pass
per batch gives every layer's statistics, equal to the single-layer audit's; each layer's held-out
AUROC is the full audit's pooled figure at that layer; each class's curve (the classes of
`directions make`) is the held-out AUROC along its mean-difference direction, and a class with too few
held-out cases is left out with the reason; the report comes in four formats."""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np
import pytest
from builders.audit import planted_cases
from builders.report import pdf_pages

from explainer.audit.analysis import analyse
from explainer.audit.cases import write_cases
from explainer.audit.probe import auroc_ci, split
from explainer.audit.stats import case_statistics, unit_space
from explainer.audit.sweep import layer_sweep, parse_layers, sweep_statistics, to_html, to_markdown
from workers.cli import main


@pytest.fixture(scope="module")
def swept(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    cases = planted_cases(per_class=12)
    write_cases(d / "cases.jsonl", cases)
    argv = ["audit", "--cases", str(d / "cases.jsonl"), "--model", str(tiny_model_dir), "--out", str(d / "out")]
    with open(d / "out.json", "w") as f, contextlib.redirect_stdout(f):  # module scope: no capsys
        assert main([*argv, "--layers", "0-3", "--json"]) == 0
    return d, cases, argv, json.loads((d / "out.json").read_text())


def test_one_pass_gives_each_layers_statistics(swept, tiny_model):
    _, cases, _, _ = swept
    many = sweep_statistics(tiny_model, [0, 2, 3], cases, batch=5)
    for layer in (0, 2, 3):
        one = case_statistics(tiny_model, unit_space(tiny_model, f"layers.{layer}.mlp"), cases)
        np.testing.assert_allclose(many[layer], one, rtol=1e-5, atol=1e-7)


def test_sweep_figures_equal_the_full_audits_and_the_report_is_written(swept, tiny_model):
    d, cases, _, r = swept
    assert [x["layer"] for x in r["layers"]] == [0, 1, 2, 3] and r["best_layer"] in (0, 1, 2, 3)
    best = max(x["pooled"]["auroc"] for x in r["layers"])
    assert next(x for x in r["layers"] if x["layer"] == r["best_layer"])["pooled"]["auroc"] == best
    x1 = case_statistics(tiny_model, unit_space(tiny_model, "layers.1.mlp"), cases)
    full = analyse(x1, cases, [f"u/{i}" for i in range(x1.shape[1])], random_draws=1, bootstrap=500)
    layer1 = r["layers"][1]
    assert layer1["pooled"]["auroc"] == full.summary["pooled"]["test"]["auroc"]
    assert set(layer1["per_domain"]) == {"alpha", "beta"} and layer1["units"] == 128
    assert "Layer sweep" in (d / "out" / "sweep.md").read_text()
    assert "<svg" in (d / "out" / "sweep.html").read_text()
    assert "Held-out AUROC by layer" in " ".join(pdf_pages((d / "out" / "sweep.pdf").read_bytes())[1])
    assert json.loads((d / "out" / "sweep.json").read_text())["best_layer"] == r["best_layer"]


def test_bad_ranges_are_refused(swept, capsys):
    _, _, argv, _ = swept
    for spec, message in (("5-2", "empty range"), ("0-9", "the model has 4 layers"), ("a", "expected a range")):
        assert main([*argv, "--layers", spec]) == 2
        assert message in capsys.readouterr().err
    assert main([*argv, "--layers", "0-1", "--sae", "x"]) == 2
    assert "takes no --sae" in capsys.readouterr().err
    assert parse_layers("0-2,7, 5") == [0, 1, 2, 5, 7]


def test_per_class_curves_equal_a_direct_computation(swept, tiny_model):
    d, cases, _, r = swept
    names = ["fail", "pass", "fail@alpha", "pass@alpha", "fail@beta", "pass@beta"]
    assert r["classes"] == names and r["classes_left_out"] == []
    x = case_statistics(tiny_model, unit_space(tiny_model, "layers.2.mlp"), cases).astype(np.float64)
    lab = np.array([c.label for c in cases])
    dom = np.array([c.domain for c in cases])
    test = split(dom, (lab == "fail").astype(int), 0.3, 0)
    layer2 = r["layers"][2]["classes"]
    for name in names:
        label, _, domain = name.partition("@")
        group = dom == domain if domain else np.ones(len(cases), bool)
        member, rest = group & (lab == label), group & (lab != label)
        direction = x[member & ~test].mean(0) - x[rest & ~test].mean(0)
        held = group & test
        want = auroc_ci((lab[held] == label).astype(int), x[held] @ direction, n=500, seed=0)
        got = layer2[name]
        assert got["auroc"] == want["auroc"] and got["ci"] == pytest.approx(want["ci"])
        assert got["held_out"] == [int((member & test).sum()), int((rest & test).sum())]
    # two labels: a class's pass curve is its fail curve
    assert [x["classes"]["pass@beta"]["auroc"] for x in r["layers"]] == [
        x["classes"]["fail@beta"]["auroc"] for x in r["layers"]
    ]
    assert set(r["class_best_layer"]) == set(names)
    md, page = (d / "out" / "sweep.md").read_text(), (d / "out" / "sweep.html").read_text()
    assert "## Per class" in md and "| layer | fail | pass | fail@alpha |" in md
    assert f"{layer2['fail@alpha']['auroc']:.3f} [" in md
    assert page.count("<polyline") == 1 + 2 + len(names)  # pooled, each domain; each class
    assert all(f"<title>{n}</title>" in page and f"</svg> {n}" in page for n in names)  # a line and a legend entry
    assert 'stroke-dasharray="6 4"' in page  # pass drawn dashed over its fail twin
    lines = re.findall(r'<polyline fill="none" stroke="(#\w+)"[^>]*><title>([^<]+)</title>', page)
    colour = {name: c for c, name in lines}  # the same colour for a domain in both plots
    assert colour["fail@alpha"] == colour["pass@alpha"] == colour["alpha"] != colour["fail@beta"] == colour["beta"]
    text = " ".join(pdf_pages((d / "out" / "sweep.pdf").read_bytes())[1])
    assert "per class: fail, pass, fail@alpha, pass@alpha" in text and "per class: fail@beta, pass@beta" in text
    assert json.loads((d / "out" / "sweep.json").read_text())["layers"][2]["classes"] == layer2


def test_classes_with_too_few_held_out_cases_are_left_out(tiny_model, tmp_path):
    cases = planted_cases(per_class=12) + planted_cases(per_class=3, domains=("gamma",))
    write_cases(tmp_path / "cases.jsonl", cases)
    r = layer_sweep(tiny_model, tmp_path / "cases.jsonl", "1", min_per_class=2, bootstrap=50)
    assert r["domains"] == ["alpha", "beta", "gamma"]  # gamma is usable (2 of each), but holds out 1 of each
    assert {c["class"] for c in r["classes_left_out"]} == {"fail@gamma", "pass@gamma"}
    reason = next(c["reason"] for c in r["classes_left_out"] if c["class"] == "fail@gamma")
    assert reason == "1 held-out fail@gamma case(s) against 1 other(s) of its group (needs 3 of each)"
    assert "fail@gamma" not in r["classes"] and set(r["layers"][0]["classes"]) == set(r["classes"])
    assert "fail@alpha" in r["classes"]
    assert "left out: fail@gamma: 1 held-out" in to_markdown(r)
    assert "<title>fail@gamma</title>" not in to_html(r) and "fail@gamma: 1 held-out" in to_html(r)
