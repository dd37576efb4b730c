"""Scores: how well simulated activations match the real ones.

The headline score is the Pearson correlation pooled over every held-out token (top and
random windows together), as in Bills et al. (2023). A bootstrap over windows gives a 95%
interval; per-domain correlations show where an explanation holds and where it does not.

A NaN or infinity among the true or simulated activations makes the score undefined: it raises
:class:`~explainer.errors.ScoreError` (the scorer stores a failed score with that reason), never a
number. On finite input the pooled figure equals neuron-explainer's ``correlation_score``
(``np.corrcoef``) except where a side is constant: there neuron-explainer gives NaN and this
module 0.0 (nothing is predicted); ``tests/score/test_scoring_parity.py`` checks both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from explainer.errors import ScoreError


@dataclass(frozen=True)
class SimulationScore:
    value: float
    """Pooled Pearson correlation in [-1, 1]; 0 when either side is constant."""
    ci_low: float
    ci_high: float
    per_domain: dict[str, float]
    n_tokens: int


def _check_finite(values: list[float], side: str) -> None:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ScoreError(
            f"{len(bad)} of {len(values)} {side} activations are not finite (first at token {bad[0]}: "
            f"{values[bad[0]]}); the correlation is undefined"
        )


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation; 0.0 when either series is constant (nothing is predicted).
    Raises :class:`ScoreError` on a NaN or infinity on either side."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"length mismatch: {n} vs {len(y)}")
    _check_finite(x, "true")
    _check_finite(y, "simulated")
    if n < 2:
        return 0.0
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    # Constant series (up to rounding, relative to their magnitude) predict nothing.
    if sxx <= 1e-12 * sum(a * a for a in x) or syy <= 1e-12 * sum(b * b for b in y) or sxx == 0 or syy == 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _pooled(true: list[list[float]], pred: list[list[float]]) -> float:
    return pearson([a for w in true for a in w], [p for w in pred for p in w])


def _bootstrap(true: list[list[float]], pred: list[list[float]], n_boot: int, seed: int) -> np.ndarray:
    """Pooled correlations of ``n_boot`` resamples of the windows (with replacement), computed from
    per-window sums (count, Σx, Σy, Σx², Σy², Σxy) so that each resample costs O(windows), not
    O(tokens). The constant-series rule of :func:`pearson` applies to each resample."""
    stats = np.zeros((len(true), 6))
    for i, (t, p) in enumerate(zip(true, pred)):
        x, y = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
        stats[i] = (x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(true), size=(n_boot, len(true)))
    counts = np.zeros((n_boot, len(true)))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    n, sx, sy, sxx_raw, syy_raw, sxy_raw = (counts @ stats).T
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx = sxx_raw - sx * sx / n
        syy = syy_raw - sy * sy / n
        sxy = sxy_raw - sx * sy / n
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
    constant = (n < 2) | (sxx <= 1e-12 * sxx_raw) | (syy <= 1e-12 * syy_raw) | (sxx <= 0) | (syy <= 0)
    return np.where(constant, 0.0, r)


def score_simulation(
    true: list[list[float]], pred: list[list[float]], domains: list[str], n_boot: int = 1000, seed: int = 0
) -> SimulationScore:
    """Pooled correlation of per-window true vs predicted activations, with interval and domains.
    Raises :class:`ScoreError` (naming the window) when any value is NaN or infinite."""
    if not true or len(true) != len(pred) or len(true) != len(domains):
        raise ValueError("need one prediction and one domain per held-out window")
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"window length mismatch: {len(t)} true vs {len(p)} predicted")
        try:
            _check_finite(list(t), "true")
            _check_finite(list(p), "simulated")
        except ScoreError as exc:
            raise ScoreError(f"held-out window {i}: {exc}") from None
    value = _pooled(true, pred)
    if n_boot <= 0:  # no interval asked for (e.g. ranking candidates)
        return SimulationScore(value, value, value, {}, sum(len(t) for t in true))
    boots = np.sort(_bootstrap(true, pred, n_boot, seed))
    lo, hi = float(boots[int(0.025 * (n_boot - 1))]), float(boots[int(math.ceil(0.975 * (n_boot - 1)))])
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(domains):
        by_domain[d].append(i)
    per_domain = {d: _pooled([true[i] for i in ids], [pred[i] for i in ids]) for d, ids in sorted(by_domain.items())}
    return SimulationScore(value, lo, hi, per_domain, sum(len(t) for t in true))
