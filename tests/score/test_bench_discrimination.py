"""The discrimination benchmark runs end to end on two small concept sets (embedding scorers only)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_discrimination_benchmark_on_two_small_sets(tmp_path, capsys, monkeypatch):
    import bench.bench_discrimination as bench

    assert bench.auroc([0.9, 0.8], [0.1, 0.8]) == pytest.approx(0.875)
    assert bench.set_label("bench/concepts.yaml") == "token"
    assert bench.set_label("bench/concepts_context.yaml") == "context"
    token = tmp_path / "concepts.yaml"
    token.write_text(
        "- {name: return, description: the Python keyword return, match: {regex: '\\breturn\\b'}}\n"
        "- {name: license, description: 'legal terms: license, warranty', match: {words: [license, warranty]}}\n"
    )
    context = tmp_path / "concepts_context.yaml"
    context.write_text(
        "- {name: imported_module, description: module names right after import or from,"
        " match: {regex: '(?<=import )\\w+|(?<=from )\\w+'}}\n"
        "- {name: version_parts, description: numbers inside a dotted version number such as 2.0 or 3.11,"
        " match: {regex: '\\d+(?=\\.\\d)|(?<=\\d\\.)\\d+'}}\n"
    )
    written = tmp_path / "scorer_discrimination.json"
    monkeypatch.setattr(bench, "DISCRIMINATION_FILE", written)
    out = bench.main(
        ["--concepts", str(token), str(context), "--skip-llm", "--scorers", "simulation-embedding,simulation-context"]
        + ["--write", "-q"]
    )
    assert out["concepts"] == {"token": 2, "context": 2}
    for name in ("simulation-embedding", "simulation-context"):
        f = out["scorers"][name]
        # each set: 2 concepts, 1 wrong description each; the union: 4 concepts, 3 wrong each
        assert f["n_pairs_token"] == 2 and f["n_pairs_context"] == 2 and f["n_pairs"] == 12
        assert 0 <= f["auroc_context"] <= 1 and f["simulations_per_s"] > 0
    assert out["scorers"]["simulation-context"]["auroc"] > 0.8
    assert out["best_on_union"] in ("simulation-embedding", "simulation-context")
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.split()[:2] == ["simulation-context", "context"] for line in lines)
    assert any(line.split()[:2] == ["simulation-context", "union"] for line in lines)
    assert lines[-1].startswith('{"benchmark": "discrimination"')
    stored = json.loads(written.read_text())
    assert stored["concepts"] == {"token": 2, "context": 2}
    assert set(stored["scorers"]) == {"simulation-embedding", "simulation-context"}


def test_discrimination_benchmark_rejects_clashing_sets(tmp_path):
    from bench.bench_discrimination import main

    a = tmp_path / "a" / "concepts_x.yaml"
    b = tmp_path / "b" / "concepts_x.yaml"
    for f in (a, b):
        f.parent.mkdir()
        f.write_text("- {name: digits, description: digits, match: {regex: '\\d+'}}\n")
    with pytest.raises(SystemExit, match="distinct names"):
        main(["--concepts", str(a), str(b), "--skip-llm", "-q"])
