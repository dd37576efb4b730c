"""Plain-text pieces every report rendering shares: numbers, intervals, score lines, window
groups and the activation histogram."""

from __future__ import annotations

import json
from typing import Any

from explainer.report.model import (
    STRONG,
    ReportCalibration,
    ReportEntry,
    ReportExplanation,
    ReportScore,
)
from store.records import UnitRecord, Window, finite


def fmt(x: float | None) -> str:
    return "—" if finite(x) is None else f"{x:.3f}"


def interval(s: ReportScore) -> str:
    if finite(s.ci_low) is None or finite(s.ci_high) is None:
        return "95% CI —"
    return f"95% CI [{s.ci_low:.3f}, {s.ci_high:.3f}]"


def score_ok(s: ReportScore) -> bool:
    return s.status == "ok" and finite(s.value) is not None


def has_text(e: ReportExplanation | ReportEntry) -> bool:
    status = e.status if isinstance(e, ReportExplanation) else e.explanation_status
    text = e.text if isinstance(e, ReportExplanation) else e.explanation
    return status == "ok" and text is not None


def unit_max(record: UnitRecord) -> float:
    if finite(record.stats.max) is not None and record.stats.max > 0:
        return record.stats.max
    return max((w.max_activation for w in record.windows), default=0.0)


SET_NAMES = {"token": "token-level", "context": "contextual"}
"""How the planted sets of ``make bench-discrimination`` are named in reports."""


def discrimination_text(s: ReportScore) -> str:
    d = s.discrimination
    if not d:
        return "discrimination not measured"
    if d.get("n_causal_units"):  # make bench-intervention: steering directions, not input-side concepts
        return (
            f"discrimination: AUROC {d['auroc']:.2f}, {d['pairs_correct']:.0%} of right/wrong pairs ranked "
            f"correctly on {int(d['n_causal_units'])} planted causal (steering) units"
        )
    per_set = [f"{d[f'auroc_{k}']:.2f} on {name}" for k, name in SET_NAMES.items() if d.get(f"auroc_{k}") is not None]
    if per_set:
        return (
            f"discrimination: AUROC {', '.join(per_set)} planted concepts "
            f"({d['auroc']:.2f} on all {int(d.get('n_concepts', 0))}, "
            f"{d['pairs_correct']:.0%} of right/wrong pairs ranked correctly)"
        )
    return (
        f"discrimination: AUROC {d['auroc']:.2f}, {d['pairs_correct']:.0%} of right/wrong pairs ranked "
        f"correctly on {int(d.get('n_concepts', 0))} planted concepts"
    )


def meaning_text(s: ReportScore) -> str:
    """The score's level in words (:func:`explainer.score.meaning.score_meaning`)."""
    from explainer.score.meaning import score_kind, score_meaning

    return score_meaning(s.value, s.ci_low, s.ci_high, kind=score_kind(s.details))["words"]


def level_text(s: ReportScore) -> str:
    """The score's level alone (``weak``, ``good``, …; ``no evidence``), for summary tables."""
    return meaning_text(s).split(":", 1)[0]


def score_line(s: ReportScore) -> str:
    """``scorer (simulator): value, 95% CI [lo, hi] — meaning in words; per domain …`` as plain text."""
    sim = f" (simulator {s.simulator_model})" if s.simulator_model else ""
    if not score_ok(s):
        return f"{s.scorer}{sim}: failed: {s.error or 'unknown error'}"
    dom = ", ".join(f"{d} {fmt(v)}" for d, v in sorted(s.per_domain.items()))
    return f"{s.scorer}{sim}: {fmt(s.value)}, {interval(s)} — {meaning_text(s)}" + (
        f"; per domain: {dom}" if dom else ""
    )


def calibration_line(c: ReportCalibration) -> str:
    s = c.score
    if not score_ok(s):
        return f"workflow domain {c.domain} ({s.scorer}): failed: {s.error or 'unknown error'}"
    return f"workflow domain {c.domain}: score {fmt(s.value)} ({s.scorer}, {interval(s)}) — {meaning_text(s)}"


def strong_tokens(w: Window, umax: float) -> list[bool]:
    return [
        umax > 0 and finite(a) is not None and a >= STRONG * umax and bool(t.strip())
        for t, a in zip(w.tokens, w.activations)
    ]


def window_groups(record: UnitRecord) -> list[tuple[str, list[Window]]]:
    """Headings and windows in report order: shown top, held-out top, quantile, random."""
    groups = [
        ("Top windows (shown to explainer)", record.windows_for("explain", "top")),
        ("Top windows (held out)", record.windows_for("heldout", "top")),
        ("Quantile windows", [w for w in record.windows if w.kind == "quantile"]),
        ("Random windows (held out)", record.windows_for("heldout", "random")),
    ]
    return [(h, ws) for h, ws in groups if ws]


def histogram_data(record: UnitRecord, bins: int = 20) -> dict[str, Any]:
    """The unit's activation histogram: the collector's histogram of activating sequences' maxima
    when recorded, else the activations of every token in the kept windows."""
    st = record.stats
    if st.histogram and len(st.histogram_edges) == len(st.histogram) + 1:
        return {
            "of": "max activation of each activating sequence",
            "counts": [int(c) for c in st.histogram],
            "edges": [float(e) for e in st.histogram_edges],
        }
    acts = [a for w in record.windows for a in w.activations if finite(a) is not None]
    if not acts:
        return {"of": "token activations in the kept windows", "counts": [], "edges": []}
    lo, hi = min(acts + [0.0]), max(acts)
    hi = hi if hi > lo else lo + 1.0
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for a in acts:
        counts[min(bins - 1, int((a - lo) / (hi - lo) * bins))] += 1
    return {"of": "token activations in the kept windows", "counts": counts, "edges": edges}


def histogram_axis_label(h: dict[str, Any]) -> str:
    """X-axis caption of a :func:`histogram_data` plot."""
    if h["of"].startswith("max activation"):
        return "activation (raw units; each octave split into four bins)"
    return "activation (raw units)"


def output_side_lines(side: dict[str, Any] | None, k: int = 10) -> list[str]:
    """``promotes: "a", "b"…`` and ``suppresses: …`` of a unit's output side (none when not computed)."""
    if not side:
        return []

    def toks(rows: list[dict[str, Any]]) -> str:
        return ", ".join(json.dumps(r["token"], ensure_ascii=False) for r in rows[:k])

    return [f"promotes: {toks(side['promoted'])}", f"suppresses: {toks(side['suppressed'])}"]


def steering_lines(effect: dict[str, Any] | None, k: int = 8) -> list[str]:
    """What steering the unit did to the next token (``rose: " a" 0.01→0.20, …`` and ``fell: …``),
    as the intervention scorer measured it; none when it never ran."""
    if not effect:
        return []
    d = effect.get("details") or {}

    def toks(rows: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{json.dumps(r['token'], ensure_ascii=False)} {r['p_clean']:.2g}→{r['p_steered']:.2g}" for r in rows[:k]
        )

    how = f"steered (strength {d.get('strength', 0):.3g}, KL {d.get('kl', 0):.2f} over {d.get('prompts', '?')} prompts)"
    return [f"{how}, rose: {toks(effect['promoted'])}", f"fell: {toks(effect['suppressed'])}"]


def origin_text(e: ReportExplanation) -> str | None:
    """``imported from neuronpedia (explainer gpt-4, original score oai_simulation 0.900 by gpt-4)``
    for an imported explanation; ``None`` for ours."""
    o = e.imported
    if o is None:
        return None
    parts = [f"explainer {o.explainer_model or 'not named'}"]
    if o.explanation_type:
        parts.append(f"type {o.explanation_type}")
    if o.score_type is not None:
        parts.append(
            f"original score {o.score_type} {fmt(o.score)}" + (f" by {o.score_model}" if o.score_model else "")
        )
    else:
        parts.append("no original score")
    return f"imported from {o.tool} ({', '.join(parts)})"
