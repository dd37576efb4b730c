"""Reports warn when an explanation predicts a unit's firing (simulation) but not its effect on the
output (intervention), or the reverse; an intervention score is judged on its own scale."""

from __future__ import annotations

from builders.report import make_entry, make_record, make_window

from explainer.report.model import ReportScore
from explainer.report.warnings import report_warnings


def _score(scorer, value, kind, ci=(None, None)):
    return ReportScore(
        scorer=scorer,
        value=value,
        ci_low=ci[0],
        ci_high=ci[1],
        per_domain={},
        status="ok",
        details={"kind": kind},
        discrimination={"auroc": 0.9},
    )


RECORD = make_record(3, [make_window(f"top-{i}", "top", "explain", ["a", " b"], [1.0, 0.0]) for i in range(4)])


def _codes(*scores):
    return {c: m for c, m in report_warnings(make_entry(RECORD, "the letter a", scores=scores))}


def test_fires_but_does_not_act():
    codes = _codes(_score("simulation-embedding", 0.7, "simulation"), _score("intervention", -0.4, "intervention"))
    assert "predicts when the unit fires" in codes["input_output_disagree"]
    assert "low_score" in codes  # the intervention score at or below 0


def test_acts_but_does_not_fire():
    codes = _codes(
        _score("simulation-embedding", 0.05, "simulation"), _score("intervention", 2.0, "intervention", (0.5, 3.0))
    )
    assert "predicts what the unit does to the output" in codes["input_output_disagree"]


def test_agreement_gives_no_disagreement_and_a_positive_intervention_is_not_low():
    codes = _codes(
        _score("simulation-embedding", 0.7, "simulation"), _score("intervention", 1.5, "intervention", (0.2, 2.5))
    )
    assert "input_output_disagree" not in codes
    assert not any("intervention" in m for c, m in codes.items() if c in ("low_score", "wide_interval"))
