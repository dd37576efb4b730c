"""The retest output: a versioned JSON document (schema ``retest.schema.json`` beside this module).

Units are sorted by their drop, largest first (a dead unit's drop is its whole old margin over
chance). ``summary`` counts verdicts and their shares; ``by_domain`` groups units by the corpus
domain most of their old top windows came from, so that a fine-tune on one domain shows as that
domain's units moving most.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from explainer.provenance import software_version
from explainer.retest.verdict import VERDICTS, max_shift, thresholds

SCHEMA = "activation-explainer/retest"
SCHEMA_VERSION = 1


def schema_path() -> Path:
    """The JSON Schema every retest output validates against."""
    return Path(__file__).resolve().parent / "retest.schema.json"


def unit_domain(record: Any) -> str | None:
    """The domain most of a unit's top windows come from (ties: alphabetical), or ``None``."""
    counts = Counter(w.domain for w in record.windows if w.kind == "top")
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def summarize(units: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdict counts and shares over all the units re-tested: a unit whose scoring failed has no
    verdict and counts as ``failed``, in the denominator of every share (the shares, with
    ``failed_share``, sum to 1), so failures never make the other shares look better."""
    n = len(units)
    counts = Counter(u["verdict"] for u in units)
    out: dict[str, Any] = {"units": n}
    for v in VERDICTS:
        out[v] = counts.get(v, 0)
        out[f"{v}_share"] = counts.get(v, 0) / n if n else 0.0
    out["failed"] = counts.get(None, 0)
    out["failed_share"] = out["failed"] / n if n else 0.0
    out["mean_drop"] = _mean([u["drop"] for u in units if u["drop"] is not None])
    return out


def by_domain(units: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dominant domain: units, mean score drop, mean activation shift, broken and dead shares."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for u in units:
        groups.setdefault(u["domain"] or "unknown", []).append(u)
    out = {}
    for domain, us in sorted(groups.items()):
        s = summarize(us)
        out[domain] = {
            "units": s["units"],
            "mean_drop": s["mean_drop"],
            "mean_shift": _mean([u["drift"]["shift"] for u in us if u["drift"] and u["drift"]["shift"] is not None]),
            "broken_share": s["broken_share"],
            "dead_share": s["dead_share"],
        }
    return out


def hookpoint_drift(old: dict[int, tuple[str | None, float]], new: dict[int, float]) -> dict[str, dict[str, Any]]:
    """How every unit of the hookpoint moved, explained or not, per the domain most of its old top
    windows come from: ``old`` is unit index → (that domain, old max), ``new`` unit index → new max.
    Per domain: units, mean and median |log2(new max / old max)|, and how many fired before and
    never now. A handful of explained units is too few to say which domain a new checkpoint moved;
    the whole hookpoint is not (units the old model never fired on are left out)."""
    groups: dict[str, list[float]] = {}
    dead: Counter[str] = Counter()
    for idx, (domain, old_max) in old.items():
        if not old_max > 0 or idx not in new:
            continue
        key = domain or "unknown"
        shift = max_shift(old_max, new[idx])
        if shift is None:
            dead[key] += 1
        groups.setdefault(key, [])
        if shift is not None:
            groups[key].append(shift)
    out = {}
    for domain, shifts in sorted(groups.items()):
        ordered = sorted(shifts)
        mid = len(ordered) // 2
        median = (ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2) if ordered else None
        out[domain] = {
            "units": len(shifts) + dead[domain],
            "mean_shift": _mean(shifts),
            "median_shift": median,
            "dead_now": dead[domain],
        }
    return out


def build_output(
    *,
    ref: str,
    collections: dict[str, str],
    models: dict[str, Any],
    corpus: dict[str, Any],
    hookpoint: str,
    units: list[dict[str, Any]],
    timing: dict[str, Any],
    relabel: dict[str, Any] | None,
    hookpoint_by_domain: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The retest document (``schema_version`` 1)."""
    ordered = sorted(units, key=lambda u: (-(u["drop"] if u["drop"] is not None else -math.inf), u["unit_id"]))
    n = len(units)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "software_version": software_version(),
        "from": ref,
        "hookpoint": hookpoint,
        "collections": collections,
        "models": models,
        "corpus": corpus,
        "thresholds": thresholds(),
        "summary": summarize(units),
        "by_domain": by_domain(units),
        "hookpoint_by_domain": hookpoint_by_domain or {},
        "timing": {**timing, "seconds_per_unit": timing["total_s"] / n if n else None},
        "units": ordered,
        "relabel": relabel,
        "gate": None,
    }
