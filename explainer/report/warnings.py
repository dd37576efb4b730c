"""Report warnings: the reasons a reader should distrust an explanation, its scores or the
unit's evidence, each as a (code, message) pair."""

from __future__ import annotations

from explainer.report.model import (
    DOMAIN_DROP,
    LOW_SCORE,
    LOW_WINDOW_SCORE,
    MIN_ACTIVATING_WINDOWS,
    MIN_TOP_WINDOWS,
    WEAK_CONTEXT_AUROC,
    WIDE_INTERVAL,
    ReportCalibration,
    ReportEntry,
    ReportExplanation,
    ReportScore,
)
from explainer.report.text import has_text, score_ok
from store.records import UnitRecord, finite


def _causal_warnings(s: ReportScore, prefix: str = "") -> list[tuple[str, str]]:
    """An intervention score (output side) is a KL-normalised log-probability gain, not a
    correlation: it is low at or below 0 (the explanation fits steered text no better than clean)."""
    value = finite(s.value)
    if value is not None and value <= 0:
        return [("low_score", f"{prefix}{s.scorer}: the explanation does not describe the steered text better")]
    return []


def input_output_warnings(scores: tuple[ReportScore, ...]) -> list[tuple[str, str]]:
    """Where the input side (simulation: when the unit fires) and the output side (intervention: what
    steering it does) disagree."""
    sim = next((s for s in scores if score_ok(s) and (s.details or {}).get("kind") == "simulation"), None)
    causal = next((s for s in scores if score_ok(s) and (s.details or {}).get("kind") == "intervention"), None)
    sim_value = finite(sim.value) if sim is not None else None
    causal_value = finite(causal.value) if causal is not None else None
    if sim is None or causal is None or sim_value is None or causal_value is None:
        return []
    fires, acts = sim_value >= LOW_SCORE, causal_value > 0 and (finite(causal.ci_low) or 0.0) > 0
    if fires and causal_value <= 0:
        return [
            (
                "input_output_disagree",
                f"the explanation predicts when the unit fires ({sim.scorer} {sim_value:.2f}) but not what it does "
                f"to the output ({causal.scorer} {causal_value:.2f})",
            )
        ]
    if acts and not fires:
        return [
            (
                "input_output_disagree",
                f"the explanation predicts what the unit does to the output ({causal.scorer} {causal_value:.2f}) "
                f"but not when it fires ({sim.scorer} {sim_value:.2f})",
            )
        ]
    return []


def _score_warnings(s: ReportScore, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    value = finite(s.value)
    if not score_ok(s) or value is None:
        return [("scoring_failed", f"{prefix}{s.scorer}: scoring failed")]
    if (s.details or {}).get("kind") == "intervention":
        return _causal_warnings(s, prefix)
    low = LOW_WINDOW_SCORE if (s.details or {}).get("kind") == "window" else LOW_SCORE
    if value < low:
        out.append(("low_score", f"{prefix}{s.scorer}: score < {low}"))
    lo, hi = finite(s.ci_low), finite(s.ci_high)
    if lo is not None and hi is not None and hi - lo > WIDE_INTERVAL:
        out.append(("wide_interval", f"{prefix}{s.scorer}: interval wider than {WIDE_INTERVAL}"))
    doms = {d: f for d, f in ((d, finite(v)) for d, v in s.per_domain.items()) if f is not None}
    for d, v in sorted(doms.items()):
        others = {o: x for o, x in doms.items() if o != d}
        if not others:
            continue
        best = max(others, key=lambda o: others[o])
        if others[best] - v > DOMAIN_DROP:
            out.append(
                (
                    "domain_drop",
                    f"{prefix}{s.scorer}: in domain '{d}' the score ({v:.2f}) drops well below "
                    f"'{best}' ({others[best]:.2f}); the explanation may not transfer to '{d}'",
                )
            )
    return out


def _calibration_warnings(c: ReportCalibration, scores: tuple[ReportScore, ...]) -> list[tuple[str, str]]:
    s = c.score
    value = finite(s.value)
    if not score_ok(s) or value is None:
        return [("calibration_failed", f"workflow domain {c.domain} ({s.scorer}): not scored: {s.error or 'failed'}")]
    ref = next((o for o in scores if o.scorer == s.scorer and score_ok(o)), None)
    ref_value = finite(ref.value) if ref is not None else None
    if ref is None or ref_value is None:
        return []
    best = max([ref_value, *[f for f in map(finite, ref.per_domain.values()) if f is not None]])
    if best - value > DOMAIN_DROP:
        return [
            (
                "domain_drop",
                f"workflow domain {c.domain}: score {value:.2f} ({s.scorer}) drops well below "
                f"{best:.2f} on the collection corpus; the explanation may not transfer to {c.domain}",
            )
        ]
    return []


def explanation_warnings(e: ReportExplanation) -> list[tuple[str, str]]:
    """(code, message) reasons to distrust one explanation's scores."""
    if not has_text(e):
        return []
    out = [w for s in e.scores for w in _score_warnings(s)] + input_output_warnings(e.scores)
    for c in e.calibrations:
        out += _calibration_warnings(c, e.scores)
    if e.source == "baseline":
        out.append(("baseline_explanation", "explanation from the no-LLM baseline (most frequent top tokens)"))
    for s in e.scores:
        d = s.discrimination
        if d is None:
            out.append(("discrimination_unmeasured", f"{s.scorer}: discrimination never measured"))
        elif d.get("auroc", 0) < 0.7:
            out.append(
                (
                    "weak_discrimination",
                    f"{s.scorer}: barely tells right from wrong explanations (AUROC {d['auroc']:.2f})",
                )
            )
        elif (ctx := d.get("auroc_context")) is not None and ctx < WEAK_CONTEXT_AUROC:
            out.append(
                (
                    "weak_context_discrimination",
                    f"{s.scorer}: often cannot tell right from wrong explanations of units whose firing "
                    f"depends on context (AUROC {ctx:.2f} on contextual planted concepts)",
                )
            )
    return out


def unit_warnings(record: UnitRecord) -> list[tuple[str, str]]:
    """(code, message) reasons to distrust anything said about the unit: too little evidence."""
    out = []
    n_top = len(record.windows_for("explain", "top"))
    if n_top < MIN_TOP_WINDOWS:
        out.append(("few_top_windows", f"only {n_top} top window(s) shown to explainer"))
    n_act = sum(1 for w in record.windows if w.kind != "random" and w.max_activation > 0)
    if n_act < MIN_ACTIVATING_WINDOWS:
        out.append(
            (
                "few_activating_windows",
                f"only {n_act} activating window(s) collected (fewer than "
                f"{MIN_ACTIVATING_WINDOWS}): too little evidence",
            )
        )
    if record.skip_reason:
        out.append(("skipped_unit", f"unit skipped by labeling: {record.skip_reason}"))
    return out


def report_warnings(entry: ReportEntry) -> list[tuple[str, str]]:
    """(code, message) warnings of a unit and its primary explanation, primary's first."""
    scoring = [w for w in explanation_warnings(entry.primary())]
    if has_text(entry) and not entry.scores:
        scoring.append(("unscored", "explanation not scored"))
    return scoring + unit_warnings(entry.record)


def warnings_for(entry: ReportEntry) -> list[str]:
    """Messages of :func:`report_warnings`."""
    return [m for _, m in report_warnings(entry)]
