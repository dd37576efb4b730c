"""Scoring: Pearson correlation and the pooled simulation score, checked on hand-computed values."""

import math

import pytest

from explainer.score.correlation import SimulationScore, pearson, score_simulation

# -- pearson ------------------------------------------------------------------------------


def test_pearson_perfect_positive_and_negative():
    assert pearson([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0, abs=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0, abs=1e-12)
    # invariant to affine rescaling of either side
    assert pearson([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0, abs=1e-12)
    assert pearson([1, 2, 3], [-5, -7, -9]) == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize(
    "x, y, expected",
    [
        # dx = [-1.5,-.5,.5,1.5], dy = [-.5,-1.5,1.5,.5]: sxy = 3, sxx = syy = 5 -> 0.6
        ([1, 2, 3, 4], [2, 1, 4, 3], 0.6),
        # dx = [-1,0,1], dy = [-1,1,0]: sxy = 1, sxx = syy = 2 -> 0.5
        ([1, 2, 3], [1, 3, 2], 0.5),
        # dx = [-1,0,1], dy = [-1/3,-1/3,2/3]: sxy = 1, sxx = 2, syy = 2/3 -> sqrt(3)/2
        ([0, 1, 2], [0, 0, 1], math.sqrt(3) / 2),
        # uncorrelated: dx = [-1,0,1], dy = [1/3,-2/3,1/3] -> sxy = 0
        ([0, 1, 2], [1, 0, 1], 0.0),
    ],
)
def test_pearson_known_values(x, y, expected):
    assert pearson(x, y) == pytest.approx(expected, abs=1e-9)
    assert pearson(y, x) == pytest.approx(expected, abs=1e-9)  # symmetric


def test_pearson_constant_or_too_short_is_zero():
    assert pearson([2, 2, 2], [1, 2, 3]) == 0.0
    assert pearson([1, 2, 3], [0, 0, 0]) == 0.0
    assert pearson([5], [7]) == 0.0
    assert pearson([], []) == 0.0


def test_pearson_length_mismatch_raises():
    with pytest.raises(ValueError, match="length mismatch: 3 vs 2"):
        pearson([1, 2, 3], [1, 2])


# -- score_simulation ---------------------------------------------------------------------

TRUE = [[0, 1, 2], [3, 0]]
PRED = [[0, 0, 1], [2, 1]]


def test_pooled_value_is_pearson_over_concatenated_tokens():
    s = score_simulation(TRUE, PRED, ["code", "docs"], n_boot=50)
    assert isinstance(s, SimulationScore)
    # x = [0,1,2,3,0], y = [0,0,1,2,1]; means 1.2, 0.8; sxy = 3.2, sxx = 6.8, syy = 2.8
    assert s.value == pytest.approx(3.2 / math.sqrt(6.8 * 2.8), abs=1e-12)
    assert s.value == pytest.approx(pearson([0, 1, 2, 3, 0], [0, 0, 1, 2, 1]), abs=1e-12)
    assert s.n_tokens == 5


def test_pooled_differs_from_mean_of_per_window_correlations():
    # two windows each perfectly correlated (+1), but at different offsets: the pooled score is negative
    true = [[0, 1], [10, 11]]
    pred = [[5, 6], [0, 1]]
    assert pearson(true[0], pred[0]) == pytest.approx(1.0) and pearson(true[1], pred[1]) == pytest.approx(1.0)
    s = score_simulation(true, pred, ["a", "a"], n_boot=20)
    # x = [0,1,10,11] (mean 5.5), y = [5,6,0,1] (mean 3): sxy = -49, sxx = 101, syy = 26
    assert s.value == pytest.approx(-49 / math.sqrt(101 * 26), abs=1e-12)


def test_per_domain_keys_and_values():
    s = score_simulation(TRUE + [[1, 2, 3]], PRED + [[3, 2, 1]], ["docs", "code", "docs"], n_boot=20)
    assert list(s.per_domain) == ["code", "docs"]  # sorted
    # code: only window 2: [3,0] vs [2,1] -> two points, +1
    assert s.per_domain["code"] == pytest.approx(1.0, abs=1e-12)
    # docs: windows 1 and 3 pooled: x = [0,1,2,1,2,3], y = [0,0,1,3,2,1]
    assert s.per_domain["docs"] == pytest.approx(pearson([0, 1, 2, 1, 2, 3], [0, 0, 1, 3, 2, 1]), abs=1e-12)
    # hand value: means 1.5 and 7/6; sxy = 1.5, sxx = 5.5, syy = 41/6
    assert s.per_domain["docs"] == pytest.approx(1.5 / math.sqrt(5.5 * 41 / 6), abs=1e-12)
    assert s.n_tokens == 8


def _decent_case(n_windows=40, length=8):
    import random

    rng = random.Random(123)
    true, pred, domains = [], [], []
    for w in range(n_windows):
        t = [max(0.0, rng.gauss(0, 1)) for _ in range(length)]
        true.append(t)
        pred.append([a + rng.gauss(0, 0.5) for a in t])
        domains.append("code" if w % 2 else "docs")
    return true, pred, domains


def test_confidence_interval_contains_value_and_is_reproducible():
    true, pred, domains = _decent_case()
    a = score_simulation(true, pred, domains, n_boot=300, seed=7)
    b = score_simulation(true, pred, domains, n_boot=300, seed=7)
    c = score_simulation(true, pred, domains, n_boot=300, seed=8)
    assert 0.6 < a.value < 0.95
    assert a.ci_low < a.value < a.ci_high
    assert a.ci_high - a.ci_low < 0.3
    assert -1.0 <= a.ci_low and a.ci_high <= 1.0
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)  # the seed is actually used
    assert c.value == a.value  # the point estimate does not depend on the seed


def test_single_window_has_degenerate_interval():
    s = score_simulation([[0, 1, 2]], [[0, 0, 1]], ["code"], n_boot=25)
    assert s.value == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    assert s.ci_low == s.ci_high == s.value


def test_constant_prediction_scores_zero():
    s = score_simulation([[0, 1, 2], [3, 1]], [[5, 5, 5], [5, 5]], ["code", "code"], n_boot=10)
    assert s.value == 0.0 and s.ci_low == 0.0 and s.ci_high == 0.0
    assert s.per_domain == {"code": 0.0}


@pytest.mark.parametrize(
    "true, pred, domains, message",
    [
        ([], [], [], "one prediction"),
        ([[1, 2]], [], ["code"], "one prediction"),
        ([[1, 2]], [[1, 2]], [], "one prediction"),
        ([[1, 2], [3, 4]], [[1, 2]], ["a", "b"], "one prediction"),
        ([[1, 2, 3]], [[1, 2]], ["code"], "window length mismatch: 3 true vs 2 predicted"),
        ([[1, 2], [1]], [[1, 2], [1, 2]], ["a", "b"], "window length mismatch: 1 true vs 2 predicted"),
    ],
)
def test_score_simulation_rejects_mismatched_inputs(true, pred, domains, message):
    with pytest.raises(ValueError, match=message):
        score_simulation(true, pred, domains, n_boot=5)
