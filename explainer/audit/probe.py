"""Sparse probes on per-case unit statistics: fit, held-out AUROC with bootstrap intervals, the
cross-domain transfer matrix, the selected units, and the comparison with random units.

A probe is standardisation followed by an L1-regularised logistic regression whose strength
``C`` is chosen by stratified cross-validation on the training cases (AUROC). "fail" is the
positive class, so a unit with a positive weight pushes towards failure (the H-neurons paper's
selected units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe over all units of a space (weights on standardised statistics)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float
    C: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        """The logit of "fail" for rows of statistics ``[n, units]``."""
        return np.asarray(((x - self.mean) / self.scale) @ self.weights + self.intercept)

    @property
    def selected(self) -> np.ndarray:
        """Indices of the units with a positive weight, strongest first."""
        idx = np.flatnonzero(self.weights > 0)
        return idx[np.argsort(-self.weights[idx])]

    @property
    def nonzero(self) -> np.ndarray:
        return np.flatnonzero(self.weights != 0)


def _folds(y: np.ndarray, want: int = 5) -> int:
    return int(max(2, min(want, np.bincount(y, minlength=2).min())))


def _l1(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", max_iter=2000)


def fit_probe(x: np.ndarray, y: np.ndarray, *, seed: int = 0, c_grid: tuple[float, ...] = C_GRID) -> Probe:
    """The L1 probe of ``y`` (1 = fail) on ``x``, ``C`` chosen by cross-validated AUROC."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    c = c_grid[0]
    if len(c_grid) > 1:
        cv = StratifiedKFold(_folds(y), shuffle=True, random_state=seed)
        scores = [float(np.mean(cross_val_score(_l1(c), z, y, cv=cv, scoring="roc_auc"))) for c in c_grid]
        c = c_grid[int(np.argmax(scores))]
    final = _l1(c).fit(z, y)
    return Probe(mean, scale, final.coef_[0].copy(), float(final.intercept_[0]), float(c))


def fit_dense(x: np.ndarray, y: np.ndarray) -> Probe:
    """An L2 logistic probe (default strength) on a few units: the selected-vs-random comparison."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    m = LogisticRegression(max_iter=2000).fit((x - mean) / scale, y)
    return Probe(mean, scale, m.coef_[0].copy(), float(m.intercept_[0]), 1.0)


def auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``y`` (1 = fail), by the rank-sum identity
    (ties count one half); ``None`` when ``y`` has one class only."""
    from scipy.stats import rankdata

    pos = int(np.sum(y == 1))
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auroc_ci(y: np.ndarray, score: np.ndarray, *, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROC and its 95% percentile bootstrap interval over cases (resamples with one class skipped)."""
    value = auroc(y, score)
    if value is None:
        return {"auroc": None, "ci": [None, None], "n": int(len(y))}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        b = auroc(y[i], score[i])
        if b is not None:
            boots.append(b)
    lo, hi = (np.percentile(boots, [2.5, 97.5]).tolist()) if boots else (None, None)
    return {"auroc": round(value, 4), "ci": [lo, hi], "n": int(len(y))}


def split(domains: np.ndarray, y: np.ndarray, test_frac: float, seed: int) -> np.ndarray:
    """A boolean test mask, stratified by domain and label (at least one of each group stays in training)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for d in np.unique(domains):
        for lab in (0, 1):
            idx = np.flatnonzero((domains == d) & (y == lab))
            rng.shuffle(idx)
            k = min(len(idx) - 1, int(round(len(idx) * test_frac)))
            test[idx[: max(0, k)]] = True
    return test


def calibrate(z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Platt scaling ``p = sigmoid(a z + b)`` and the threshold on ``z`` maximising Youden's J."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_curve

    m = LogisticRegression(C=1e4, max_iter=1000).fit(z.reshape(-1, 1), y)
    fpr, tpr, thr = roc_curve(y, z)
    best = int(np.argmax(tpr - fpr))
    threshold = float(thr[best]) if np.isfinite(thr[best]) else float(z.max())
    return {
        "threshold": threshold,
        "calibration": {"a": float(m.coef_[0, 0]), "b": float(m.intercept_[0])},
        "tpr": float(tpr[best]),
        "fpr": float(fpr[best]),
        "n": int(len(y)),
        "fail_rate": float(y.mean()),
    }


def cv_decision(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0) -> np.ndarray:
    """Out-of-fold decision values of the L1 probe at strength ``c`` (for calibration)."""
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(y))
    for tr, te in StratifiedKFold(_folds(y), shuffle=True, random_state=seed).split(x, y):
        p = fit_probe(x[tr], y[tr], seed=seed, c_grid=(c,))
        out[te] = p.decision(x[te])
    return out


def random_comparison(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    y_te: np.ndarray,
    selected: np.ndarray,
    *,
    draws: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out AUROC of a probe on the selected units vs probes on as many random units."""
    k = max(1, len(selected))
    units = selected if len(selected) else np.array([], dtype=int)
    sel = auroc(y_te, fit_dense(x_tr[:, units], y_tr).decision(x_te[:, units])) if len(units) else None
    rng = np.random.default_rng(seed)
    rand = []
    for _ in range(draws):
        r = rng.choice(x_tr.shape[1], size=k, replace=False)
        a = auroc(y_te, fit_dense(x_tr[:, r], y_tr).decision(x_te[:, r]))
        if a is not None:
            rand.append(a)
    return {
        "units": int(k),
        "selected_auroc": None if sel is None else round(sel, 4),
        "random_auroc_mean": round(float(np.mean(rand)), 4) if rand else None,
        "random_auroc_range": [round(float(np.min(rand)), 4), round(float(np.max(rand)), 4)] if rand else None,
        "random_draws": len(rand),
        "selected_beats_random_share": round(float(np.mean([sel > r for r in rand])), 3) if rand and sel else None,
    }
