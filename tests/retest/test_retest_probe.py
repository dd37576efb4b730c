"""A failure-mode probe re-tested on a new checkpoint with the same case set: the tiny LLaMA is
audited on a planted failure (the answer names an animal), then its probe is applied to the control
(the same weights saved again: nothing may move) and to a copy whose layer-1 MLP neurons are
permuted (the same function, the probe's units now other neurons: the probe must not hold)."""

from __future__ import annotations

import json

import pytest
from builders.audit import planted_cases
from builders.report import pdf_pages
from builders.retest import other_shape, permuted_neurons, retest_world, validate

from explainer.audit.cases import write_cases
from explainer.errors import InputError
from explainer.retest.probe import retest_probe
from workers.cli import main


@pytest.fixture(scope="module")
def world(tiny_model, tiny_model_dir, tmp_path_factory):
    """(settings, old collection id, explained unit ids, paths of corpus, control and fine-tuned model, root)."""
    yield from retest_world(tiny_model, tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def audited(tiny_model, tiny_model_dir, tmp_path_factory):
    """(probe file, case set, permuted checkpoint)."""
    d = tmp_path_factory.mktemp("probe-retest")
    write_cases(d / "cases.jsonl", planted_cases(per_class=12))
    argv = ["audit", "--cases", str(d / "cases.jsonl"), "--model", str(tiny_model_dir), "--layer", "1"]
    assert main([*argv, "--out", str(d / "out"), "--no-causal", "--json"]) == 0
    perm_dir = permuted_neurons(tiny_model.model, tiny_model.tokenizer, d / "tiny-llama-permuted", layer=1)
    return d / "out" / "probe.json", d / "cases.jsonl", perm_dir


def test_the_control_holds_in_every_domain(world, audited):
    probe, cases, _ = audited
    control = world[4]
    r = retest_probe(probe, cases, str(control), bootstrap=200)
    assert r["same_cases_as_audit"] and set(r["domains"]) == {"alpha", "beta"}
    for d in r["domains"].values():
        assert d["old"] == d["new"] and d["auroc_drop"] == 0.0 and d["threshold_calibrated"]
        assert d["verdict"] == "holds" and d["old"]["auroc"] >= 0.8 and d["n"] == 24 and d["fails"] == 12
    assert r["summary"] == {"holds": 2, "weakened": 0, "broken": 0}
    assert r["models"]["old"]["files"][0]["sha256"] == r["models"]["new"]["files"][0]["sha256"]


def test_permuted_neurons_break_the_probe(audited):
    probe, cases, permuted = audited
    r = retest_probe(probe, cases, str(permuted), bootstrap=200)
    assert r["pooled"]["new"]["auroc"] < r["pooled"]["old"]["auroc"] - 0.2
    assert {d["verdict"] for d in r["domains"].values()} <= {"weakened", "broken"}
    assert (
        r["summary"]["holds"] == 0
        and r["models"]["old"]["files"][0]["sha256"] != r["models"]["new"]["files"][0]["sha256"]
    )


def test_cli_gates_on_the_probe_and_reports_it_in_four_formats(world, audited, tmp_path, capsys):
    _, cid, _, _, control, _, _ = world
    probe, cases, permuted = audited
    outs = [str(tmp_path / f"drift.{fmt}") for fmt in ("json", "md", "html", "pdf")]
    argv = [
        "retest",
        "--from",
        cid,
        "--probe",
        str(probe),
        "--cases",
        str(cases),
        "--fail-if",
        "probe:broken+weakened>0",
    ]
    assert main([*argv, "--model", str(control), *[a for o in outs for a in ("-o", o)], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert doc["gate"]["failed"] == [] and doc["probe"]["summary"]["holds"] == 2
    assert (
        "Failure-mode probe" in (tmp_path / "drift.md").read_text() and "alpha" in (tmp_path / "drift.html").read_text()
    )
    _, texts = pdf_pages((tmp_path / "drift.pdf").read_bytes())
    assert "Failure-mode probe" in " ".join(texts)
    assert main([*argv, "--model", str(permuted)]) == 1
    assert "FAILED (probe:broken+weakened>0)" in capsys.readouterr().out


def test_bad_probe_input_is_refused_before_anything_runs(world, audited, tiny_model, smol_tokenizer, tmp_path, capsys):
    _, cid, _, _, control, _, _ = world
    probe, cases, _ = audited
    assert main(["retest", "--from", cid, "--model", str(control), "--probe", str(probe)]) == 2
    assert "--probe and --cases go together" in capsys.readouterr().err
    assert main(["retest", "--from", cid, "--model", str(control), "--fail-if", "probe:broken>0"]) == 2
    assert "needs --probe and --cases" in capsys.readouterr().err
    bad = tmp_path / "probe.json"
    bad.write_text("{}")
    assert main(["retest", "--from", cid, "--model", str(control), "--probe", str(bad), "--cases", str(cases)]) == 2
    assert "not a probe file" in capsys.readouterr().err
    narrow_dir = other_shape(smol_tokenizer, tmp_path / "tiny-llama-narrow", intermediate_size=96)
    with pytest.raises(InputError, match="gives layers.1.mlp 96 units; the probe was fitted on 128"):
        retest_probe(probe, cases, str(narrow_dir))


def test_probe_width_is_checked_before_the_units_are_collected(
    world, audited, smol_tokenizer, tmp_path, monkeypatch, capsys
):
    cid = world[1]
    probe, cases, _ = audited
    narrow_dir = other_shape(smol_tokenizer, tmp_path / "tiny-llama-narrow", intermediate_size=96)

    def collected(*args, **kwargs):
        raise AssertionError("the units were re-tested before the probe was checked")

    monkeypatch.setattr("explainer.retest.run.retest", collected)
    argv = ["retest", "--from", cid, "--model", str(narrow_dir), "--probe", str(probe), "--cases", str(cases)]
    assert main(argv) == 2
    assert "gives layers.1.mlp 96 units; the probe was fitted on 128" in capsys.readouterr().err
