"""`explainer audit --layers`: the layer sweep on the tiny LLaMA's planted failure. One forward pass
per batch gives every layer's statistics, equal to the single-layer audit's; each layer's held-out
AUROC is the full audit's pooled figure at that layer; the report comes in four formats."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from builders.audit import planted_cases
from builders.report import pdf_pages

from explainer.audit.analysis import analyse
from explainer.audit.cases import write_cases
from explainer.audit.stats import case_statistics, unit_space
from explainer.audit.sweep import parse_layers, sweep_statistics
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
