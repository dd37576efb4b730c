"""The intervention benchmark on the tiny LLaMA (subject and judge): planted steering directions at
one of its blocks, every unit scored, the JSON line printed."""

from __future__ import annotations

import json

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


def test_every_unit_failing_is_reported_not_a_crash(tmp_path, tiny_model_dir, capsys):
    # the tiny random model's next-token distribution never moves by a KL of 50
    out = _run(tmp_path, tiny_model_dir, "--target-kl", "50")
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
