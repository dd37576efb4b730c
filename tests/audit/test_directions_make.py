"""`explainer directions make`: a direction per class from a case set's answers on the tiny LLaMA (the
planted failure: the answer names an animal), written in the directions format, then loaded,
audited and steered like any other unit."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from builders.audit import planted_cases

from explainer.audit.cases import write_cases
from explainer.audit.stats import case_statistics, unit_space
from explainer.collect.directions import load_directions
from explainer.intervene import resolve_unit
from explainer.intervene.effects import steer
from explainer.intervene.hooks import Edit
from workers.cli import main


@pytest.fixture(scope="module")
def made(tiny_model_dir, tmp_path_factory):
    """(folder, cases, the directions file made with the default method, the command, its JSON output)."""
    d = tmp_path_factory.mktemp("directions")
    cases = planted_cases(per_class=12)
    write_cases(d / "cases.jsonl", cases)
    out = d / "fail.safetensors"
    argv = ["directions", "make", "--cases", str(d / "cases.jsonl"), "--model", str(tiny_model_dir), "--layer", "1"]
    log = d / "out.json"  # module scope has no capsys: the JSON goes to a file
    with open(log, "w") as f, contextlib.redirect_stdout(f):
        assert main([*argv, "-o", str(out), "--json"]) == 0
    return d, cases, out, argv, json.loads(log.read_text())


def test_mean_difference_directions_per_class_and_domain(made, tiny_model):
    d, cases, out, argv, r = made
    names = [x["name"] for x in r["directions"]]
    assert names == ["fail", "pass", "fail@alpha", "pass@alpha", "fail@beta", "pass@beta"]
    auc = {x["name"]: x["train_auroc"] for x in r["directions"]}
    assert auc["fail"] >= 0.9 and auc["pass"] == pytest.approx(1 - auc["fail"])
    dirs = load_directions(out)
    assert dirs.names == names and dirs.hookpoint == "layers.1" and dirs.width == 6 and dirs.d_in == 64
    # the pooled direction is the normalised difference of the class means of the answers' activations
    x = case_statistics(tiny_model, unit_space(tiny_model, "layers.1"), cases).astype(np.float64)
    y = np.array([c.label == "fail" for c in cases])
    want = x[y].mean(0) - x[~y].mean(0)
    np.testing.assert_allclose(dirs.vectors[0].numpy(), want / np.linalg.norm(want), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dirs.vectors[1].numpy(), -dirs.vectors[0].numpy())


def test_the_directions_audit_and_steer_like_any_unit(made, tiny_model, tiny_model_dir, capsys):
    d, _, out, argv, _ = made
    audit = ["audit", "--cases", str(d / "cases.jsonl"), "--model", str(tiny_model_dir), "--hookpoint", "layers.1"]
    assert main([*audit, "--directions", str(out), "--out", str(d / "audit"), "--no-causal", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["provenance"]["unit_space"]["units"] == 6 and r["pooled"]["test"]["auroc"] >= 0.8
    unit = unit_space(tiny_model, "layers.1", directions=str(out)).unit_id(0)
    target = resolve_unit(tiny_model, unit, directions=str(out))
    assert target.kind == "direction" and target.name == "fail"
    torch.testing.assert_close(target.write, load_directions(out).vectors[0])
    assert steer(tiny_model, "Answer:", [Edit(target, "add", 8.0)], max_new_tokens=2).kl > 0


def test_probe_method_and_refusals(made, capsys, tmp_path):
    d, _, _, argv, _ = made
    assert main([*argv, "--method", "probe", "-o", str(tmp_path / "p.safetensors"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "probe" and r["directions"][0]["train_auroc"] >= 0.9
    mlp = ["directions", "make", "--cases", str(d / "cases.jsonl"), "--model", argv[5], "--hookpoint", "layers.1.mlp"]
    assert main([*mlp, "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "contribution, not an activation" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "d.npy")]) == 2
    assert "written as a .safetensors file" in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    write_cases(one, [c for c in planted_cases(per_class=12) if c.label == "fail"])
    assert (
        main(
            [
                "directions",
                "make",
                "--cases",
                str(one),
                "--model",
                argv[5],
                "--layer",
                "1",
                "-o",
                str(tmp_path / "o.safetensors"),
            ]
        )
        == 2
    )
    assert "one class" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "m.safetensors").exists()
