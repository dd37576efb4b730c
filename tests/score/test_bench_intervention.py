"""The intervention benchmark on the tiny LLaMA (subject and judge): planted steering directions at
one of its blocks, every unit scored, the JSON line printed."""

from __future__ import annotations

import json
import time

TOKENS_ONLY = (
    "- {name: digits, description: digits and numbers, match: {regex: '\\d+'}}\n"
    "- {name: the, description: the word the, match: {words: [the]}}\n"
    "- {name: commas, description: commas between clauses, match: {regex: ','}}\n"
)


def _run(tmp_path, tiny_model_dir, *extra):
    import bench.bench_intervention as bench

    concepts = tmp_path / "concepts.yaml"
    concepts.write_text(TOKENS_ONLY)
    argv = ["--concepts", str(concepts), "--model", str(tiny_model_dir), "--layer", "2", "--windows", "60"]
    argv += ["--prompts", "2", "--new-tokens", "3", "-q", *extra]
    return bench.main(argv)


def _discrimination_file(tmp_path, monkeypatch):
    """A copy of the shipped discrimination file that the benches write to."""
    import bench.bench_discrimination as disc
    import bench.bench_intervention as bench
    from explainer.score.registry import DISCRIMINATION_FILE

    f = tmp_path / "scorer_discrimination.json"
    f.write_text(DISCRIMINATION_FILE.read_text())
    monkeypatch.setattr(bench, "DISCRIMINATION_FILE", f)
    monkeypatch.setattr(disc, "DISCRIMINATION_FILE", f)
    return f


def test_every_unit_failing_is_reported_not_a_crash(tmp_path, tiny_model_dir, capsys, monkeypatch):
    written = _discrimination_file(tmp_path, monkeypatch)
    before = written.read_text()
    # the tiny random model's next-token distribution never moves by a KL of 50
    out = _run(tmp_path, tiny_model_dir, "--target-kl", "50", "--write")
    printed = capsys.readouterr().out
    assert len(out["units"]) >= 2 and set(out["failed"]) == set(out["units"])
    assert all("no strength up to" in why for why in out["failed"].values())
    for m in ("intervention", "intervention-embedding"):
        assert out[m]["auroc"] is None and out[m]["n_units"] == 0 and out[m]["pairs_correct"] is None
    assert out["cost_per_unit"]["intervention"]["forward_passes"] is None
    assert out["strengths"] == {} and out["kl"] == {}
    last = printed.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(out))
    assert f"{len(out['units'])} of {len(out['units'])} units failed" in printed
    assert written.read_text() == before  # nothing measured: the stored figures stay


def test_disagreeing_units_follow_the_report_rule():
    from bench.bench_intervention import disagreements

    def row(value, lo, hi):
        texts = {"prompts": ["I think that"], "clean": [" it is"], "steered": [" 1 2 3"]}
        return {"right": {"intervention": {"value": value, "ci_low": lo, "ci_high": hi}}, "texts": texts}

    def sim(value):
        return {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}

    rows = {
        "fires_only": row(-0.2, -0.5, 0.1),  # simulation ≥ 0.2, intervention ≤ 0
        "acts_only": row(0.3, 0.1, 0.5),  # intervention > 0 with its interval above 0, simulation < 0.2
        "both": row(0.3, 0.1, 0.5),
        "neither_sure": row(0.3, -0.1, 0.6),  # interval reaches 0: no claim on the output side
        "no_input": row(-0.2, -0.5, 0.1),
    }
    inputs = {"fires_only": sim(0.5), "acts_only": sim(0.05), "both": sim(0.5), "neither_sure": sim(0.05)}
    out = disagreements(rows, inputs, "simulation-context", "intervention")
    assert [d["unit"] for d in out] == ["fires_only", "acts_only"]
    assert "predicts when the unit fires" in out[0]["why"] and "but not when it fires" in out[1]["why"]
    assert out[1]["steered"] == " 1 2 3" and out[1]["clean"] == " it is" and out[1]["simulation-context"] == 0.05


def test_units_are_scored_on_both_sides(tmp_path, tiny_model_dir, capsys, monkeypatch):
    written = _discrimination_file(tmp_path, monkeypatch)
    simulation_before = {k: v for k, v in json.loads(written.read_text())["scorers"].items() if "simulation" in k}
    out = _run(tmp_path, tiny_model_dir, "--target-kl", "0.01", "--write")
    printed = capsys.readouterr().out
    scored = [n for n in out["units"] if n not in out["failed"]]
    assert len(scored) >= 2 and out["intervention"]["n_units"] == len(scored)
    assert set(out["input_side"]) == set(out["units"]) and set(out["output_side"]) == set(scored)
    # the side-by-side normalisations rank the same judged gains, divided per description
    for v in ("intervention[per-token]", "intervention[prior-normalised]"):
        assert out["variants"][v]["n_pairs"] == out["intervention"]["n_pairs"]
    assert all(n > 0 for n in out["variants"]["normalisers"]["surprisal_with_no_text"].values())
    assert all(-1 <= s["value"] <= 1 for s in out["input_side"].values() if s)
    expected = []
    for n in scored:
        sim, causal = out["input_side"][n], out["output_side"][n]
        if sim is None:
            continue
        fires, lo = sim["value"] >= 0.2, causal["ci95"][0]
        if (fires and causal["value"] <= 0) or (not fires and causal["value"] > 0 and lo is not None and lo > 0):
            expected.append(n)
    assert [d["unit"] for d in out["disagree"]] == expected
    assert ("disagree_note" in out) == (len(expected) < 3)
    assert "input side (simulation-context) vs output side (intervention)" in printed

    # --write: the intervention scorers' discrimination on planted causal units, beside the others
    stored = json.loads(written.read_text())
    assert {k: v for k, v in stored["scorers"].items() if "simulation" in k} == simulation_before
    for m in ("intervention", "intervention-embedding"):
        entry = stored["scorers"][m]
        assert entry["auroc"] == out[m]["auroc"] and entry["n_concepts"] == entry["n_causal_units"] == len(scored)
        assert all(isinstance(v, (int, float)) for v in entry.values())  # reports and the API read numbers
        assert stored["measured_per_scorer"][m] == time.strftime("%Y-%m-%d")
    assert stored["causal"]["model"] == "tiny-llama" and "planted causal units" in stored["causal"]["units"]
    assert "--write" in stored["causal"]["command"]


def test_discrimination_bench_keeps_the_causal_entries(tmp_path, monkeypatch):
    import bench.bench_discrimination as disc
    import bench.bench_intervention as bench

    written = _discrimination_file(tmp_path, monkeypatch)
    figures = {"auroc": 0.6, "pairs_correct": 0.55, "mean_gap": 0.1, "n_units": 6, "n_pairs": 30}
    assert bench.write_causal_discrimination({"intervention": figures}, {"model": "m"}, "cmd") == ["intervention"]
    disc.write_discrimination({"simulation-context": {"auroc": 0.9}}, {"token": ["a"]}, [], "cmd2")
    stored = json.loads(written.read_text())
    assert stored["scorers"]["intervention"]["auroc"] == 0.6 and stored["causal"]["command"] == "cmd"
    assert stored["scorers"]["simulation-context"] == {"auroc": 0.9}


def test_readers_label_a_causal_entry(tmp_path, monkeypatch):
    """Reports say the figure was measured on planted causal units; the API's score view and the
    report JSON schema take the entry as it is stored."""
    from builders.report import make_entry, make_record, make_window, validate_report

    import bench.bench_intervention as bench
    from explainer.api.models import ScoreView
    from explainer.report.model import ReportScore
    from explainer.report.to_html import render_html
    from explainer.report.to_json import report_json

    written = _discrimination_file(tmp_path, monkeypatch)
    figures = {"auroc": 0.57, "pairs_correct": 0.5667, "mean_gap": 0.05, "n_units": 6, "n_pairs": 30}
    bench.write_causal_discrimination({"intervention": figures}, {}, "cmd")
    entry = json.loads(written.read_text())["scorers"]["intervention"]
    score = ReportScore("intervention", 0.4, 0.1, 0.8, {}, "ok", details={"kind": "intervention"}, discrimination=entry)
    record = make_record(3, [make_window(f"top-{i}", "top", "explain", ["a", " b"], [1.0, 0.0]) for i in range(4)])
    e = make_entry(record, "the letter a", scores=(score,))
    html = render_html([e])
    assert "AUROC 0.57, 57% of right/wrong pairs ranked correctly on 6 planted causal (steering) units" in html
    assert "barely tells right from wrong explanations (AUROC 0.57)" in html
    doc = report_json([e])
    assert doc["units"][0]["explanations"][0]["scores"][0]["discrimination"] == entry
    validate_report(doc)
    ScoreView.model_validate(
        {"scorer": "intervention", "status": "ok", "value": 0.4, "ci95": [0.1, 0.8], "per_domain": {}, "error": None}
        | {"simulator_model": "smollm2-135m", "n_tokens": 72}
        | {"discrimination": entry}
    )
