"""Re-test a failure-mode probe (``probe.json`` from ``explainer audit``) on a new checkpoint.

The same probe — same units, weights, standardisation and per-domain thresholds — is applied to the
same case set's answers on the old model and on the new one. Per domain: the AUROC before and after
(95% bootstrap intervals), the true- and false-positive rates at the stored threshold on each, and
whether the threshold is still calibrated. A verdict per domain, like the units':

- **holds**: AUROC dropped by at most :data:`AUROC_DROP` and the threshold is still calibrated;
- **weakened**: it dropped more, or the threshold's rates moved by more than :data:`RATE_SHIFT`,
  but the new AUROC's interval stays above chance;
- **broken**: the new AUROC's interval reaches chance (0.5): the probe no longer tells failures apart.

Both models must give the hookpoint the probe was fitted on the same width (checked before any case
runs). The old model is the probe's ``model_source`` unless another is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explainer.errors import InputError

AUROC_DROP = 0.05
"""A domain's AUROC may drop this much and the probe still holds there."""
RATE_SHIFT = 0.10
"""The true- or false-positive rate at the stored threshold may move this much and the threshold
still counts as calibrated."""


def _rates(z: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float | None]:
    flagged = z >= threshold
    pos, neg = y == 1, y == 0
    return {
        "tpr": round(float(flagged[pos].mean()), 4) if pos.any() else None,
        "fpr": round(float(flagged[neg].mean()), 4) if neg.any() else None,
    }


def _moved(old: dict[str, float | None], new: dict[str, float | None]) -> bool:
    return any(
        old[k] is not None and new[k] is not None and abs(float(new[k]) - float(old[k])) > RATE_SHIFT  # type: ignore[arg-type]
        for k in ("tpr", "fpr")
    )


def probe_verdict(old: dict[str, Any], new: dict[str, Any], calibrated: bool) -> str:
    """holds / weakened / broken of one domain (see the module docstring)."""
    lo = new["ci"][0]
    if new["auroc"] is None or lo is None or lo <= 0.5:
        return "broken"
    drop = (old["auroc"] or 0.0) - new["auroc"]
    return "holds" if drop <= AUROC_DROP and calibrated else "weakened"


def check_probe(
    probe_path: str | Path, cases_path: str | Path, new_model: str, *, old_model: str | None = None, device: str = "cpu"
) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """Read the probe and its case set and load both models, checking that each gives the probe's
    hookpoint as many units, of the same statistic, as it was fitted on; ``InputError`` otherwise.
    Returns (probe document, cases, {side: (model name, loaded model, unit space)})."""
    from explainer.audit.cases import read_cases
    from explainer.audit.probefile import read_probe
    from explainer.audit.stats import unit_space
    from explainer.collect.models import load_model

    doc = read_probe(probe_path)
    cases = read_cases(cases_path)
    if len({c.label == "fail" for c in cases}) < 2:
        raise InputError(f"{cases_path}: the case set holds one class only: no AUROC can be measured")
    sides: dict[str, Any] = {}
    for side, name in (("old", old_model or doc.get("model_source") or doc["model"]), ("new", new_model)):
        lm = load_model(name, device)
        space = unit_space(lm, doc["hookpoint"], sae=doc.get("sae"), directions=doc.get("directions"))
        if space.width != doc["units_total"]:
            raise InputError(
                f"the {side} model {name!r} gives {doc['hookpoint']} {space.width} units; "
                f"the probe was fitted on {doc['units_total']}"
            )
        if space.statistic != doc["statistic"]:
            raise InputError(f"the probe reads {doc['statistic']!r} statistics, {name!r} gives {space.statistic!r}")
        sides[side] = (name, lm, space)
    return doc, cases, sides


def retest_probe(
    probe_path: str | Path,
    cases_path: str | Path,
    new_model: str,
    *,
    old_model: str | None = None,
    device: str = "cpu",
    bootstrap: int = 1000,
    seed: int = 0,
    batch: int = 8,
) -> dict[str, Any]:
    """The probe section of a retest document (``probe`` in ``retest.schema.json``); everything
    :func:`check_probe` checks is checked before any case runs."""
    from explainer.audit.cases import case_set_hash
    from explainer.audit.probe import auroc_ci
    from explainer.audit.probefile import score_rows
    from explainer.audit.stats import case_statistics
    from explainer.collect.models import resolve_model
    from explainer.provenance import model_provenance

    doc, cases, sides = check_probe(probe_path, cases_path, new_model, old_model=old_model, device=device)
    labels = np.array([1 if c.label == "fail" else 0 for c in cases])
    expected = (doc.get("provenance") or {}).get("case_set_sha256")
    same_cases = expected is None or expected == case_set_hash(cases)
    domains = [c.domain for c in cases]
    z: dict[str, np.ndarray] = {}
    for side, (_, lm, space) in sides.items():
        rows = score_rows(doc, case_statistics(lm, space, cases, batch=batch), domains, allow_uncalibrated=True)
        z[side] = np.array([r["logit"] for r in rows])
    out_domains: dict[str, Any] = {}
    for d in sorted(set(domains)):
        m = np.array([x == d for x in domains])
        cal = doc["domains"].get(d) or doc["pooled"]
        row: dict[str, Any] = {"n": int(m.sum()), "fails": int(labels[m].sum()), "calibrated_on": d in doc["domains"]}
        for side in ("old", "new"):
            row[side] = {
                **auroc_ci(labels[m], z[side][m], n=bootstrap, seed=seed),
                **_rates(z[side][m], labels[m], cal["threshold"]),
            }
        row["threshold"] = cal["threshold"]
        row["threshold_calibrated"] = not _moved(row["old"], row["new"])
        row["auroc_drop"] = (
            None
            if row["old"]["auroc"] is None or row["new"]["auroc"] is None
            else round(row["old"]["auroc"] - row["new"]["auroc"], 4)
        )
        row["verdict"] = probe_verdict(row["old"], row["new"], row["threshold_calibrated"])
        out_domains[d] = row
    verdicts = [r["verdict"] for r in out_domains.values()]
    return {
        "file": str(probe_path),
        "cases": str(cases_path),
        "same_cases_as_audit": same_cases,
        "hookpoint": doc["hookpoint"],
        "units": len(doc["units"]),
        "models": {side: model_provenance(resolve_model(n), n) for side, (n, _, _) in sides.items()},
        "pooled": {
            side: {
                **auroc_ci(labels, z[side], n=bootstrap, seed=seed),
                **_rates(z[side], labels, doc["pooled"]["threshold"]),
            }
            for side in ("old", "new")
        },
        "domains": out_domains,
        "summary": {v: verdicts.count(v) for v in ("holds", "weakened", "broken")},
        "rules": {"auroc_drop": AUROC_DROP, "rate_shift": RATE_SHIFT},
    }
