"""``make bench-audit`` end to end on the tiny LLaMA: planted concepts, the top units labelled by the
no-LLM baseline over their top windows from a collection of the bench's lines, and the count of
explanations that name the concept; then the QA part on a small planted case set."""

from __future__ import annotations

from builders.audit import planted_cases

from explainer.audit.cases import write_cases
from explainer.collect.planted import load_concepts


def test_an_explanation_is_on_the_concept_when_a_listed_token_matches():
    from bench.bench_audit import on_concept

    c = {x.name: x for x in load_concepts(None)}
    assert on_concept(c["return"], 'the tokens "return", "if" (often after "    ")')
    assert on_concept(c["digits"], 'the token "1990"') and on_concept(c["negations"], 'the tokens "x", "not"')
    assert not on_concept(c["return"], 'the tokens "def", "self" (often after "return")')  # context only
    assert not on_concept(c["self"], 'the tokens "selfish"') and not on_concept(c["self"], None)


def test_bench_labels_the_top_units_and_counts_those_on_the_concept(tiny_model_dir, tmp_path, capsys):
    import bench.bench_audit as bench
    from explainer.collect.models import load_model
    from explainer.explain.baseline import baseline_explanation

    write_cases(tmp_path / "qa.jsonl", planted_cases(per_class=8))
    argv = ["--model", str(tiny_model_dir), "--layer", "1", "--names", "return,self", "--per-class", "10"]
    out = bench.main([*argv, "--top", "5", "--cases", str(tmp_path / "qa.jsonl")])
    concepts = {x.name: x for x in load_concepts(None)}
    lm = load_model(str(tiny_model_dir))
    records = bench.label_units(lm, "layers.1.mlp", bench.bench_corpus(bench._lines()))
    assert len(records) == 128
    for name in ("return", "self"):
        p = out["planted"][name]
        labels = p["top_units_explanations"]
        assert len(labels) == p["top_units"] <= 5
        assert p["explanations_on_concept"] == sum(bench.on_concept(concepts[name], e) for e in labels)
        assert labels == [baseline_explanation(records[i]) for i in p["top_unit_indices"]]
        r = out["random_units"][name]
        assert 0 <= r["explanations_on_concept"] <= r["units"]
    assert sum(out["planted"][n]["top_units"] for n in ("return", "self")) > 0
    assert out["qa"]["cases"] == 32
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"planted": {')
