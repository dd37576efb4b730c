"""The discrimination benchmark runs end to end on a small concepts file (embedding scorers only)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_discrimination_benchmark_on_three_concepts(tmp_path, capsys):
    from bench.bench_discrimination import auroc, main

    assert auroc([0.9, 0.8], [0.1, 0.8]) == pytest.approx(0.875)
    concepts = tmp_path / "c.yaml"
    concepts.write_text(
        "- {name: return, description: the Python keyword return, match: {regex: '\\breturn\\b'}}\n"
        "- {name: license, description: 'legal terms: license, warranty', match: {words: [license, warranty]}}\n"
        "- {name: digits, description: digits and numbers, match: {regex: '\\d+'}}\n"
    )
    out = main(["--concepts", str(concepts), "--skip-llm", "-q"])
    emb = out["scorers"]["simulation-embedding"]
    assert out["concepts"] == 3 and emb["n_pairs"] == 6
    assert emb["pairs_correct"] >= 5 / 6 and emb["auroc"] > 0.8
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"benchmark": "discrimination"')
