"""The probe file: an audit's finding turned into a control, and the monitor that applies it.

A small versioned JSON file::

    {"format": "explainer-probe", "version": 1,
     "model": "smollm2-135m", "model_source": "smollm2-135m", "hookpoint": "layers.15.mlp", "statistic": "contribution",
     "sae": null, "directions": null,
     "units": [{"id": ".../layers.15.mlp/1234", "index": 1234, "weight": 0.8, "mean": 0.01, "scale": 0.004}],
     "intercept": -0.2, "C": 0.1,
     "domains": {"capitals": {"threshold": 0.3, "calibration": {"a": 1.2, "b": -0.1}, "n": 40, ...}},
     "pooled": {"threshold": ..., "calibration": {...}},
     "provenance": {"case_set_sha256": "...", "created": "..."}}

``model`` is the name in unit ids; ``model_source`` what to load (a packaged name or a path).
Only units with a non-zero weight are kept. :func:`monitor` scores new prompt/response pairs:
the probe's logit, the probability of failure calibrated for the case's domain, and whether it is
over the domain's threshold. A domain the probe was not calibrated on is refused unless
``allow_uncalibrated`` (then the pooled calibration is used, and the result says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from explainer.audit.cases import Case, parse_case
from explainer.errors import InputError

FORMAT = "explainer-probe"
VERSION = 1


class ProbeFileError(InputError):
    """A probe file cannot be read, or a monitored case cannot be scored with it."""


class UncalibratedDomainError(ProbeFileError):
    """The probe was not calibrated on this domain (pass ``allow_uncalibrated`` to use the pooled calibration)."""


def probe_document(space: dict[str, Any], analysis: Any, unit_ids: list[str], provenance: dict[str, Any]) -> dict:
    p = analysis.probe
    units = [
        {
            "id": unit_ids[i],
            "index": int(i),
            "weight": float(p.weights[i]),
            "mean": float(p.mean[i]),
            "scale": float(p.scale[i]),
        }
        for i in p.nonzero
    ]
    keep = ("threshold", "calibration", "n", "fail_rate", "tpr", "fpr")
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": space["model"],
        "model_source": provenance.get("model_source") or space["model"],
        "hookpoint": space["hookpoint"],
        "statistic": space["statistic"],
        "sae": space.get("sae"),
        "directions": space.get("directions"),
        "units_total": space["units"],
        "units": units,
        "intercept": p.intercept,
        "C": p.C,
        "domains": {d: {k: c[k] for k in keep} for d, c in analysis.calibration.items()},
        "pooled": {k: analysis.pooled_calibration[k] for k in keep},
        "provenance": provenance,
    }


def _num(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ProbeFileError(f"{where} must be a finite number, not {x!r}")
    return float(x)


def check_probe(doc: Any, where: str = "probe") -> dict[str, Any]:
    """Validate a decoded probe document; every error names the field at fault."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProbeFileError(f"{where}: not a probe file (format must be {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ProbeFileError(f"{where}: unsupported probe version {doc.get('version')!r} (this build reads {VERSION})")
    for k in ("model", "hookpoint", "statistic"):
        if not isinstance(doc.get(k), str) or not doc[k]:
            raise ProbeFileError(f"{where}: missing {k}")
    units = doc.get("units")
    if not isinstance(units, list) or not units:
        raise ProbeFileError(f"{where}: the probe has no units")
    for i, u in enumerate(units):
        if not isinstance(u, dict) or not isinstance(u.get("index"), int) or u["index"] < 0:
            raise ProbeFileError(f"{where}: units[{i}] needs a non-negative integer index")
        for k in ("weight", "mean", "scale"):
            _num(u.get(k), f"{where}: units[{i}].{k}")
        if u["scale"] <= 0:
            raise ProbeFileError(f"{where}: units[{i}].scale must be positive")
    _num(doc.get("intercept"), f"{where}: intercept")
    cals = dict(doc.get("domains") or {})
    cals["(pooled)"] = doc.get("pooled")
    for d, c in cals.items():
        if not isinstance(c, dict) or not isinstance(c.get("calibration"), dict):
            raise ProbeFileError(f"{where}: domain {d!r} needs a threshold and a calibration")
        _num(c.get("threshold"), f"{where}: domain {d!r} threshold")
        _num(c["calibration"].get("a"), f"{where}: domain {d!r} calibration.a")
        _num(c["calibration"].get("b"), f"{where}: domain {d!r} calibration.b")
    return doc


def write_probe(path: str | Path, doc: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(check_probe(doc), indent=1), encoding="utf-8")


def read_probe(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProbeFileError(f"cannot read probe file {p}: {exc}") from exc
    return check_probe(doc, str(p))


def score_rows(doc: dict[str, Any], stats: np.ndarray, domains: list[str], allow_uncalibrated: bool) -> list[dict]:
    """Monitor results for rows of full unit statistics ``[n, units_total]``."""
    idx = np.array([u["index"] for u in doc["units"]])
    if stats.shape[1] <= idx.max():
        raise ProbeFileError(f"the probe reads unit {idx.max()}, but the hookpoint has {stats.shape[1]} units")
    w = np.array([u["weight"] for u in doc["units"]])
    mean = np.array([u["mean"] for u in doc["units"]])
    scale = np.array([u["scale"] for u in doc["units"]])
    z = ((stats[:, idx] - mean) / scale) @ w + doc["intercept"]
    out = []
    for zi, d in zip(z.tolist(), domains, strict=True):
        cal, calibrated = doc["domains"].get(d), True
        if cal is None:
            if not allow_uncalibrated:
                known = ", ".join(sorted(doc["domains"])) or "none"
                raise UncalibratedDomainError(
                    f"the probe was not calibrated on domain {d!r} (calibrated: {known}); "
                    "pass allow_uncalibrated to use its pooled calibration"
                )
            cal, calibrated = doc["pooled"], False
        a, b = cal["calibration"]["a"], cal["calibration"]["b"]
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, a * zi + b))))
        out.append(
            {
                "domain": d,
                "calibrated": calibrated,
                "logit": round(float(zi), 5),
                "p_fail": round(p, 5),
                "threshold": cal["threshold"],
                "flagged": bool(zi >= cal["threshold"]),
            }
        )
    return out


def monitor(lm: Any, doc: dict[str, Any], items: list[dict[str, Any]], allow_uncalibrated: bool = False) -> list:
    """Score ``items`` (``prompt``, ``response``, ``domain``, optional ``answer_span``) with a probe."""
    from explainer.audit.stats import case_statistics, unit_space

    if lm.name != doc["model"]:
        raise ProbeFileError(f"the probe was fitted on model {doc['model']!r}, not {lm.name!r}")
    cases: list[Case] = []
    for i, it in enumerate(items):
        case = parse_case({**it, "label": "pass"}, f"item {i + 1}") if isinstance(it, dict) else parse_case(it, "")
        if case.domain not in doc["domains"] and not allow_uncalibrated:
            score_rows(doc, np.zeros((1, doc["units_total"])), [case.domain], False)  # raises the refusal
        cases.append(case)
    space = unit_space(lm, doc["hookpoint"], sae=doc.get("sae"), directions=doc.get("directions"))
    if space.statistic != doc["statistic"]:
        raise ProbeFileError(
            f"the probe reads {doc['statistic']!r} statistics, the hookpoint gives {space.statistic!r}"
        )
    stats = case_statistics(lm, space, cases)
    return score_rows(doc, stats, [c.domain for c in cases], allow_uncalibrated)
