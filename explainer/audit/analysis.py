"""The audit's statistics, from a matrix of per-case unit statistics: a held-out split stratified by
domain and label, the pooled probe and its per-domain AUROC, one probe per usable domain and the
cross-domain transfer matrix, the selected units, the random-units comparison, the per-domain
calibration the probe file carries, and the warnings a reader must see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainer.audit.cases import MIN_PER_CLASS, Case, CaseSetError, class_counts, usable_domains
from explainer.audit.probe import Probe, auroc, auroc_ci, calibrate, cv_decision, fit_probe, random_comparison, split

CROSS_DOMAIN_DROP = 0.1
"""A transfer AUROC this far below the in-domain AUROC is warned about."""


@dataclass
class Analysis:
    """What :func:`analyse` found; ``summary`` is its JSON form."""

    probe: Probe
    test: np.ndarray
    usable: list[str]
    calibration: dict[str, dict[str, Any]]
    pooled_calibration: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def analyse(
    x: np.ndarray,
    cases: list[Case],
    unit_ids: list[str],
    *,
    test_frac: float = 0.3,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    random_draws: int = 20,
    bootstrap: int = 1000,
) -> Analysis:
    usable, warnings = usable_domains(cases, min_per_class)
    y = np.array([int(c.failed) for c in cases])
    dom = np.array([c.domain for c in cases])
    test = split(dom, y, test_frac, seed)
    tr = ~test
    if len(set(y[tr].tolist())) < 2 or len(set(y[test].tolist())) < 2:
        n_fail, n = int(y.sum()), len(y)
        raise CaseSetError(
            f"the held-out split ({test_frac:.0%} of {n} cases: {n_fail} fail, {n - n_fail} pass) lost a class; "
            "give more cases of the rarer class"
        )
    pooled = fit_probe(x[tr], y[tr], seed=seed)
    per_domain: dict[str, Any] = {}
    for d in sorted(set(dom.tolist())):
        m = test & (dom == d)
        per_domain[d] = {
            "cases": class_counts([c for c in cases if c.domain == d])[d],
            "usable": d in usable,
            "pooled_probe": auroc_ci(y[m], pooled.decision(x[m]), n=bootstrap, seed=seed),
        }
    per_domain_probe: dict[str, Probe] = {}
    for d in usable:
        m = tr & (dom == d)
        per_domain_probe[d] = fit_probe(x[m], y[m], seed=seed)
    matrix: list[list[float | None]] = []
    for i in usable:
        row = []
        for j in usable:
            m = test & (dom == j)
            row.append(auroc(y[m], per_domain_probe[i].decision(x[m])))
        matrix.append([None if v is None else round(v, 4) for v in row])
    for d in usable:
        m = test & (dom == d)
        per_domain[d]["own_probe"] = auroc_ci(y[m], per_domain_probe[d].decision(x[m]), n=bootstrap, seed=seed)
        per_domain[d]["own_probe"]["C"] = per_domain_probe[d].C
        per_domain[d]["own_probe"]["units"] = int(len(per_domain_probe[d].nonzero))
    n_dom = len(usable)
    diag = [v for i in range(n_dom) if (v := matrix[i][i]) is not None]
    off = [v for i in range(n_dom) for j in range(n_dom) if i != j and (v := matrix[i][j]) is not None]
    in_mean = float(np.mean(diag)) if diag else None
    off_mean = float(np.mean(off)) if off else None
    if in_mean is not None and off_mean is not None and in_mean - off_mean > CROSS_DOMAIN_DROP:
        warnings.append(
            f"cross-domain drop: mean in-domain AUROC {in_mean:.3f}, across domains {off_mean:.3f}; "
            "calibrate and monitor per domain"
        )
    if len(usable) < 2:
        warnings.append(f"only {len(usable)} domain(s) have both classes: no cross-domain transfer can be measured")
    selected = pooled.selected
    compare = random_comparison(x[tr], y[tr], x[test], y[test], selected, draws=random_draws, seed=seed)
    if not len(selected):
        warnings.append("the pooled probe selected no unit with a positive weight")
    elif (
        compare["random_auroc_mean"] is not None
        and (compare["selected_auroc"] or 0) <= compare["random_auroc_range"][1]
    ):
        warnings.append(
            f"the {len(selected)} selected units are no better than the best of {compare['random_draws']} draws of "
            f"as many random units (held-out AUROC {compare['selected_auroc']} vs up to {compare['random_auroc_range'][1]})"
        )
    z_cv = cv_decision(x[tr], y[tr], pooled.C, seed)
    dom_tr, y_tr = dom[tr], y[tr]
    calib = {d: calibrate(z_cv[dom_tr == d], y_tr[dom_tr == d]) for d in usable}
    pooled_cal = calibrate(z_cv, y_tr)
    n_units = x.shape[1]
    summary = {
        "cases": len(cases),
        "train": int(tr.sum()),
        "test": int(test.sum()),
        "domains": per_domain,
        "usable_domains": usable,
        "pooled": {
            "C": pooled.C,
            "nonzero_units": int(len(pooled.nonzero)),
            "test": auroc_ci(y[test], pooled.decision(x[test]), n=bootstrap, seed=seed),
        },
        "transfer": {
            "domains": usable,
            "matrix": matrix,
            "in_domain_mean": None if in_mean is None else round(in_mean, 4),
            "off_diagonal_mean": None if off_mean is None else round(off_mean, 4),
        },
        "selected_units": {
            "ids": [unit_ids[i] for i in selected],
            "indices": [int(i) for i in selected],
            "weights": [round(float(pooled.weights[i]), 5) for i in selected],
            "count": int(len(selected)),
            "of": int(n_units),
            "share": round(len(selected) / n_units, 6),
        },
        "random_units": compare,
        "calibration": calib,
        "warnings": warnings,
    }
    return Analysis(pooled, test, usable, calib, pooled_cal, summary)
