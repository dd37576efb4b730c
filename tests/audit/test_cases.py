"""Case sets: reading, every refusal, the per-domain fitting rules, and the answer matcher."""

from __future__ import annotations

import json

import pytest
from builders.audit import planted_cases

from explainer.audit.cases import CaseSetError, case_set_hash, read_cases, usable_domains, write_cases
from explainer.audit.make import _questions, is_right, normalise
from explainer.cli.audit import DEFAULT_CASES


def _write(tmp_path, rows):
    p = tmp_path / "cases.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


GOOD = {"prompt": "Q: capital of France?\nA:", "response": " Paris", "label": "pass", "domain": "capitals"}


def test_round_trip_keeps_every_field(tmp_path):
    cases = planted_cases(per_class=3)
    write_cases(tmp_path / "c.jsonl", cases)
    again = read_cases(tmp_path / "c.jsonl")
    assert again == cases
    assert case_set_hash(again) == case_set_hash(cases)
    assert again[0].span == (1, 1 + len(again[0].truth[0]))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "label"}, r"line 2: missing field\(s\) label"),
        ({**GOOD, "label": "maybe"}, "label must be 'fail' or 'pass'"),
        ({**GOOD, "response": "  "}, "the response is empty"),
        ({**GOOD, "answer_span": [3, 99]}, "answer_span must be"),
        ({**GOOD, "truth": 3}, "truth must be a string or a list"),
        ("{not json", "line 2: not JSON"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_lines_are_named(tmp_path, row, message):
    with pytest.raises(CaseSetError, match=message):
        read_cases(_write(tmp_path, [GOOD, row]))


def test_empty_or_missing_file(tmp_path):
    with pytest.raises(CaseSetError, match="no cases"):
        read_cases(_write(tmp_path, [""]))
    with pytest.raises(CaseSetError, match="cannot read case set"):
        read_cases(tmp_path / "absent.jsonl")


def test_one_class_and_too_few_cases_are_refused():
    cases = [c for c in planted_cases(per_class=8) if c.label == "pass"]
    with pytest.raises(CaseSetError, match="only one class"):
        usable_domains(cases)
    few = planted_cases(per_class=2)
    with pytest.raises(CaseSetError, match="too few cases to fit"):
        usable_domains(few)


def test_a_small_domain_is_warned_about_and_left_out():
    cases = planted_cases(per_class=8, domains=("alpha",)) + planted_cases(per_class=2, domains=("tiny",))
    usable, warnings = usable_domains(cases, min_per_class=6)
    assert usable == ["alpha"]
    assert len(warnings) == 1 and "domain 'tiny' left out" in warnings[0] and "2 fail / 2 pass" in warnings[0]


def test_matcher_normalises_and_needs_a_word_boundary():
    assert normalise("  Brasília!! ") == "brasilia"
    assert is_right(" Paris, France", ["Paris"])
    assert is_right("'HOUSE'", ["'HOUSE'", "HOUSE"])
    assert not is_right(" F", ["Fe"]) and not is_right(" Fe", ["F"])
    assert not is_right("43", ["4"])


def test_questions_cover_five_domains_with_true_answers():
    import random

    qs = _questions(random.Random(0), 5)
    assert {q.domain for q in qs} == {"capitals", "elements", "arithmetic", "python", "dates"}
    arith = [q for q in qs if q.domain == "arithmetic"]
    for q in arith:
        expr = q.text.removeprefix("What is ").rstrip("?")
        assert str(eval(expr)) == q.truth[0]


def test_arithmetic_asks_each_difficulty_band_in_equal_shares():
    """The 135M model gets only the easy band right: without it the domain has almost no passes."""
    import random

    from explainer.audit.make import arithmetic_band

    qs = [q for q in _questions(random.Random(0), 90) if q.domain == "arithmetic"]
    assert len(qs) == len({q.text for q in qs}) == 90
    bands = [arithmetic_band(q.text) for q in qs]
    assert [bands.count(i) for i in range(3)] == [30, 30, 30]
    assert all(q.text not in ("What is 3 + 4?", "What is 6 * 2?") for q in qs)  # the prompt's own examples


def test_shipped_case_set_reads_and_has_two_classes():
    cases = read_cases(DEFAULT_CASES)
    usable, _ = usable_domains(cases)
    assert len(cases) >= 60 and usable
    assert all(c.truth for c in cases)


def test_make_cases_keeps_only_consistent_questions(tiny_model):
    from explainer.audit.make import make_cases

    cases, stats = make_cases(tiny_model, per_domain=2, samples=2, max_new_tokens=2, batch=5)
    assert set(stats) == {"capitals", "elements", "arithmetic", "python", "dates"}
    for s in stats.values():
        assert s["asked"] == 2 and s["right"] + s["wrong"] + s["mixed"] == 2 and 0 <= s["sample_accuracy"] <= 1
    assert len(cases) == sum(s["right"] + s["wrong"] for s in stats.values())
    for c in cases:
        assert c.prompt.endswith("Answer:") and c.truth
        assert (c.label == "pass") == is_right(c.response, c.truth)


def test_a_held_out_split_without_both_classes_is_a_case_set_error():
    import numpy as np

    from explainer.audit.analysis import analyse

    cases = [c for c in planted_cases(per_class=8) if c.label == "pass"]
    cases += [c for c in planted_cases(per_class=1) if c.label == "fail"]  # one fail per domain: all kept to train
    x = np.random.default_rng(0).normal(size=(len(cases), 4))
    with pytest.raises(CaseSetError, match="held-out split .* lost a class"):
        analyse(x, cases, [f"u{i}" for i in range(4)], min_per_class=1)
