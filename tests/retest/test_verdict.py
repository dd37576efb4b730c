"""Verdict rules and ``--fail-if`` gates, on hand-made figures."""

from __future__ import annotations

import pytest

from explainer.retest.verdict import Figure, activation_drift, gate_failures, is_dead, parse_rule, score_verdict
from store.records import UnitStats


@pytest.mark.parametrize(
    ("old", "new", "chance", "verdict"),
    [
        (Figure(0.6, 0.5, 0.7), Figure(0.6, 0.5, 0.7), 0.0, "holds"),  # unchanged
        (Figure(0.6, 0.5, 0.7), Figure(0.8, 0.7, 0.9), 0.0, "holds"),  # rose
        (Figure(0.6, 0.5, 0.7), Figure(0.52, 0.4, 0.6), 0.0, "holds"),  # inside the old interval
        (Figure(0.6, 0.5, 0.7), Figure(0.45, 0.35, 0.55), 0.0, "weakened"),  # below it, keeps 75% of its margin
        (Figure(0.6, 0.5, 0.7), Figure(0.25, 0.1, 0.4), 0.0, "broken"),  # lost more than half
        (Figure(0.6, 0.5, 0.7), Figure(0.35, -0.05, 0.7), 0.0, "broken"),  # new interval reaches chance
        (Figure(0.9, 0.85, 0.95), Figure(0.68, 0.6, 0.8), 0.5, "broken"),  # AUROC: 0.4 → 0.18 over chance
        (Figure(0.9, 0.85, 0.95), Figure(0.8, 0.75, 0.85), 0.5, "weakened"),
        (Figure(0.6), Figure(0.55), 0.0, "holds"),  # no interval: a drop of 0.05 is not significant
        (Figure(0.6), Figure(0.45), 0.0, "weakened"),
        (Figure(0.6), Figure(0.2), 0.0, "broken"),
        (Figure(0.05, -0.1, 0.2), Figure(-0.2, -0.3, -0.1), 0.0, "weakened"),  # never above chance: cannot break
    ],
)
def test_score_verdict(old, new, chance, verdict):
    assert score_verdict(old, new, chance) == verdict


def test_dead_and_drift():
    assert is_dead(0.0, 0.0) and is_dead(1.0, 0.0) and not is_dead(1.0, 0.3)
    old = UnitStats(max=2.0, mean=0.1, std=0.3, density=0.2, n_tokens=100, quantiles=(0.5, 1.0))
    new = UnitStats(max=0.5, mean=0.05, std=0.1, density=0.1, n_tokens=100, quantiles=(0.1, 0.3))
    d = activation_drift(old, new)
    assert d["max"] == {"old": 2.0, "new": 0.5, "ratio": 0.25} and d["shift"] == pytest.approx(2.0)
    assert d["density"]["ratio"] == pytest.approx(0.5) and d["quantiles"] == {"old": [0.5, 1.0], "new": [0.1, 0.3]}
    dead = UnitStats(max=0.0, mean=0.0, std=0.0, density=0.0, n_tokens=100)
    assert activation_drift(old, dead)["shift"] is None


def test_gate_rules():
    summary = {"units": 20, "holds": 15, "weakened": 2, "broken": 2, "dead": 1}
    assert gate_failures(["broken>5%"], summary) == ["broken>5%"]  # 10% > 5%
    assert gate_failures(["broken>10%", "broken>=2", "dead>1"], summary) == ["broken>=2"]
    assert gate_failures(["broken+dead>0.1"], summary) == ["broken+dead>0.1"]  # 15% as a share
    assert gate_failures(["broken > 2"], summary) == []  # a count
    assert gate_failures(["broken>0%"], {"units": 0, "broken": 0}) == []
    assert parse_rule("weakened>=25%") == (("weakened",), ">=", 0.25, True)
    for bad, msg in [
        ("broken", "expected VERDICT>LIMIT"),
        ("borked>5%", "must be one of"),
        ("broken>five", "must be a number"),
        ("broken>-1", ">= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_rule(bad)


def _unit(verdict, drop=None):
    return {"verdict": verdict, "drop": drop, "domain": "code", "drift": None}


def test_failed_units_count_in_every_share_and_trip_the_gate():
    from explainer.retest.summary import summarize

    every_score_failed = summarize([_unit(None) for _ in range(4)])
    assert every_score_failed["failed"] == 4 and every_score_failed["failed_share"] == 1.0
    assert every_score_failed["broken_share"] == 0.0
    # nothing could be shown to hold: a broken-share gate must not pass
    assert gate_failures(["broken>5%"], every_score_failed) == ["failed>0"]
    some = summarize([_unit("holds", 0.0), _unit("broken", 0.4), _unit(None), _unit(None)])
    assert (some["broken_share"], some["holds_share"], some["failed_share"]) == (0.25, 0.25, 0.5)
    assert sum(some[f"{v}_share"] for v in ("holds", "weakened", "broken", "dead", "failed")) == 1.0
    # a rule that names failed decides how many failures are tolerated
    assert gate_failures(["broken>30%", "failed>60%"], some) == []
    assert gate_failures(["broken+failed>50%"], some) == ["broken+failed>50%"]
    assert gate_failures(["failed>=2"], some) == ["failed>=2"]
    assert gate_failures(["broken>5%"], summarize([_unit("holds", 0.0)])) == []
    assert parse_rule("failed>0") == (("failed",), ">", 0.0, False)
