"""Verdict rules of a re-test: does an explanation's score still hold on the new checkpoint?

One explanation, one scorer, an old score and a new one (each with its 95% bootstrap interval,
computed by the same scorer on the held-out windows of the old and of the new collection):

- **dead now**: the unit never fires on the new model over the corpus (max ≤ 0), or none of its
  new held-out windows activates, so there is nothing left to explain;
- **broken**: the drop is significant (the new score lies below the old interval, or, without an
  interval, by more than ``SIGNIFICANT_DROP``), the old score was above chance (its interval
  excluded chance; without one, by more than ``SIGNIFICANT_DROP``) **and** the explanation lost at
  least half of its margin over chance (``new − chance ≤ BROKEN_KEEP × (old − chance)``) or the new
  interval reaches chance;
- **weakened**: a significant drop of at least ``WEAKEN_MIN_DROP`` that is not broken;
- **holds**: anything else (including every score that rose).

Chance is 0 for simulation scorers (a correlation) and 0.5 for window-level scorers (balanced
accuracy, AUROC). A unit's verdict is that of its best explanation (highest old score) under the
first scorer. The thresholds are constants here, recorded in every retest output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["holds", "weakened", "broken", "dead"]
VERDICTS: tuple[Verdict, ...] = ("holds", "weakened", "broken", "dead")

SIGNIFICANT_DROP = 0.10
"""Drop (score units) that counts as significant when the old score has no interval."""
WEAKEN_MIN_DROP = 0.05
"""Smallest significant drop reported as weakened (smaller ones hold)."""
BROKEN_KEEP = 0.5
"""Broken when the new margin over chance is at most this share of the old margin."""
GATE_TERMS: tuple[str, ...] = (*VERDICTS, "failed")
"""What a ``--fail-if`` rule counts: a verdict, or ``failed`` (units whose scoring failed: no verdict)."""
CHANCE = {"simulation": 0.0, "window": 0.5}
"""Chance level of each scorer kind."""


def thresholds() -> dict[str, Any]:
    """The rules' constants, as recorded in every retest output."""
    return {
        "significant_drop": SIGNIFICANT_DROP,
        "weaken_min_drop": WEAKEN_MIN_DROP,
        "broken_keep": BROKEN_KEEP,
        "chance": dict(CHANCE),
    }


@dataclass(frozen=True)
class Figure:
    """One score: its value and 95% interval (``None`` where none was computed)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"value": d["value"], "ci95": [d["ci_low"], d["ci_high"]]}


def score_verdict(old: Figure, new: Figure, chance: float = 0.0) -> Verdict:
    """The verdict for one explanation under one scorer (see the module docstring)."""
    drop = old.value - new.value
    old_low = old.ci_low if old.ci_low is not None and math.isfinite(old.ci_low) else None
    new_low = new.ci_low if new.ci_low is not None and math.isfinite(new.ci_low) else None
    significant = new.value < old_low if old_low is not None else drop > SIGNIFICANT_DROP
    if not significant or drop <= 0:
        return "holds"
    old_margin, new_margin = old.value - chance, new.value - chance
    lost_half = old_margin > 0 and new_margin <= BROKEN_KEEP * old_margin
    old_above = old_low > chance if old_low is not None else old_margin > SIGNIFICANT_DROP
    new_at_chance = new_low <= chance if new_low is not None else new_margin <= 0
    if old_above and (lost_half or new_at_chance):
        return "broken"
    return "weakened" if drop >= WEAKEN_MIN_DROP else "holds"


def is_dead(stats_max: float, heldout_max: float) -> bool:
    """Dead now: the unit never fires on the new model, or on none of its new held-out windows."""
    return not stats_max > 0 or not heldout_max > 0


def _ratio(old: float, new: float) -> float | None:
    return new / old if old and math.isfinite(old) and math.isfinite(new) else None


def activation_drift(old: Any, new: Any) -> dict[str, Any]:
    """How a unit's activation distribution moved: max, mean, density and the quantile boundaries
    of its activating sequences (old, new and the new/old ratio), from two :class:`UnitStats`.
    ``shift`` is |log2(new max / old max)| (0: same scale; 1: doubled or halved; ``None`` when either
    max is ≤ 0)."""
    out: dict[str, Any] = {}
    for key in ("max", "mean", "density"):
        o, n = float(getattr(old, key)), float(getattr(new, key))
        out[key] = {"old": o, "new": n, "ratio": _ratio(o, n)}
    out["quantiles"] = {"old": list(old.quantiles), "new": list(new.quantiles)}
    out["shift"] = max_shift(float(old.max), float(new.max))
    return out


def max_shift(old_max: float, new_max: float) -> float | None:
    """|log2(new max / old max)|: 0 on the same scale, 1 doubled or halved; ``None`` when either is ≤ 0."""
    return abs(math.log2(new_max / old_max)) if old_max > 0 and new_max > 0 else None


def gate_failures(rules: list[str], summary: dict[str, Any], probe: dict[str, Any] | None = None) -> list[str]:
    """The ``--fail-if`` rules that ``summary`` (or, for ``probe:`` rules, the re-tested probe's
    domains) trips, each as written. A rule is ``VERDICT>LIMIT`` or ``VERDICT>=LIMIT`` (VERDICT one
    of holds, weakened, broken, dead, failed — units whose scoring failed — or a sum such as
    ``broken+dead``), LIMIT a share (``5%`` or ``0.05``) of all the units re-tested, failed ones
    included, or a count (``3``); ``probe:broken>0`` counts the probe's domains instead. When units
    failed and no unit rule names ``failed``, ``failed>0`` is reported tripped. A malformed rule, or
    a ``probe:`` rule without a re-tested probe, raises ``ValueError`` naming it."""
    failed = []
    unit_rules = [r for r in rules if not r.replace(" ", "").startswith(PROBE_PREFIX)]
    for rule in rules:
        if rule.replace(" ", "").startswith(PROBE_PREFIX):
            if probe is None:
                raise ValueError(f"--fail-if {rule!r}: a probe: rule needs --probe and --cases")
            counts = {**probe["summary"], "units": len(probe["domains"])}
            if _tripped(parse_rule(rule), counts):
                failed.append(rule)
        elif _tripped(parse_rule(rule), summary):
            failed.append(rule)
    names_failed = any("failed" in parse_rule(r)[0] for r in unit_rules)
    if unit_rules and not names_failed and int(summary.get("failed", 0)) > 0:
        failed.append(UNSCORED_RULE)
    return failed


UNSCORED_RULE = "failed>0"
"""Added to the tripped rules when units could not be scored and no rule names ``failed``: a unit
without a verdict cannot be shown to hold, so a gate never passes on it silently."""


PROBE_PREFIX = "probe:"


def parse_rule(rule: str) -> tuple[tuple[str, ...], str, float, bool]:
    """``(verdicts, op, limit, is_share)`` of one ``--fail-if`` rule; ``ValueError`` if malformed."""
    text = rule.replace(" ", "").removeprefix(PROBE_PREFIX)
    op = ">=" if ">=" in text else ">" if ">" in text else None
    if op is None:
        raise ValueError(f"--fail-if {rule!r}: expected VERDICT>LIMIT, e.g. broken>5%")
    name, limit = text.split(op, 1)
    names = tuple(name.split("+"))
    if not name or any(n not in GATE_TERMS for n in names):
        raise ValueError(f"--fail-if {rule!r}: the verdict must be one of {', '.join(GATE_TERMS)} (or joined by +)")
    try:
        if limit.endswith("%"):
            value, share = float(limit[:-1]) / 100, True
        else:
            value = float(limit)
            share = "." in limit
    except ValueError:
        raise ValueError(f"--fail-if {rule!r}: the limit must be a number, a share or a percentage") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--fail-if {rule!r}: the limit must be >= 0")
    return names, op, value, share


def _tripped(parsed: tuple[tuple[str, ...], str, float, bool], summary: dict[str, Any]) -> bool:
    names, op, limit, share = parsed
    count = sum(int(summary.get(n, 0)) for n in names)
    units = int(summary.get("units", 0))
    value = (count / units if units else 0.0) if share else float(count)
    return value >= limit if op == ">=" else value > limit
