"""The Markdown rendering of a report: a summary table, then per unit its explanation(s),
scores, warnings, a bar-string histogram, the windows with firing tokens in «guillemets» and the
provenance as JSON."""

from __future__ import annotations

import json
import math

from explainer.report.model import ReportEntry, ReportExplanation, ReportMeta
from explainer.report.text import (
    calibration_line,
    discrimination_text,
    fmt,
    has_text,
    histogram_data,
    interval,
    meaning_text,
    origin_text,
    output_side_lines,
    score_line,
    score_ok,
    steering_lines,
    strong_tokens,
    unit_max,
    window_groups,
)
from explainer.report.to_json import _jsonable
from explainer.report.warnings import warnings_for
from store.records import UnitRecord, Window

__all__ = ["render_markdown"]


def _md(text: str) -> str:
    out = str(text).replace("\\", "\\\\")
    for ch in "|*_`[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\r", " ").replace("\n", " ")


def _md_window(w: Window, umax: float) -> str:
    marks = strong_tokens(w, umax)
    text = "".join(f"«{t}»" if m else t for t, m in zip(w.tokens, marks))
    return f"- `{w.window_id}` ({_md(w.domain)}, max {w.max_activation:.3g}): {_md(' '.join(text.split()))}"


def _md_histogram(record: UnitRecord) -> list[str]:
    h = histogram_data(record)
    if not h["counts"]:
        return ["Activation histogram: no data."]
    peak = max(h["counts"]) or 1
    bars = "".join(" ▁▂▃▄▅▆▇█"[min(8, math.ceil(8 * c / peak))] for c in h["counts"])
    return [f"Activation histogram ({h['of']}, {h['edges'][0]:.3g} … {h['edges'][-1]:.3g}): `{bars}`"]


def _md_explanation(x: ReportExplanation, primary: bool) -> list[str]:
    head = "Explanation" if primary else f"Other explanation ({_md(x.explainer_model or '—')})"
    if has_text(x):
        body = f"> {_md(x.text or '')}" + (f" *(source: {_md(x.source)})*" if x.source else "")
    elif x.status == "failed":
        body = f"> *failed: {_md(x.error or 'unknown error')}*"
    else:
        body = f"> *{_md(x.status)}*"
    lines = [f"**{head}**", "", body, ""]
    if origin := origin_text(x):
        lines += [f"*{_md(origin)}*", ""]
    if x.explainer_model or x.prompt:
        lines += [f"explainer `{_md(x.explainer_model or '—')}`, prompt `{_md(x.prompt or '—')}`", ""]
    lines += [f"- {_md(score_line(s))} — {_md(discrimination_text(s))}" for s in x.scores] or (
        ["- not scored"] if has_text(x) else []
    )
    lines += [f"- {_md(calibration_line(c))}" for c in x.calibrations]
    prov = x.provenance or {}
    if prov:
        lines += [
            "",
            "<details><summary>Provenance</summary>",
            "",
            "```json",
            json.dumps(_jsonable(prov), indent=1, ensure_ascii=False).replace("```", "'''"),
            "```",
            "",
            "</details>",
        ]
    return lines + [""]


def render_markdown(entries: list[ReportEntry], title: str | None = None, meta: ReportMeta | None = None) -> str:
    """Markdown: a summary table, then per unit its explanation(s), scores, warnings, histogram,
    windows (firing tokens in «guillemets») and provenance."""
    meta = meta or (ReportMeta(title=title) if title else ReportMeta())
    lines = [
        f"# {title or meta.title}",
        "",
        f"Generated {meta.generated_at}"
        + (f" by {_md(meta.generated_by)}" if meta.generated_by else "")
        + f"; {len(entries)} unit(s).",
        "",
    ]
    if meta.note or not entries:
        lines += [f"**{_md(meta.note or 'No units.')}**", ""]
    lines += ["| Unit | Explanation | Scores | Warnings |", "|---|---|---|---|"]
    for e in entries:
        if has_text(e):
            expl = _md(e.explanation or "")
        elif e.explanation_status == "failed":
            expl = "*failed: " + _md(e.explanation_error or "unknown error") + "*"
        else:
            expl = f"*{_md(e.explanation_status)}*"
        scores = (
            "; ".join(
                f"{s.scorer} {fmt(s.value)} ({interval(s)}; {meaning_text(s)}; {discrimination_text(s)})"
                if score_ok(s)
                else f"{s.scorer} failed"
                for s in e.scores
            )
            or "—"
        )
        lines.append(f"| `{_md(e.record.unit_id)}` | {expl} | {_md(scores)} | {_md('; '.join(warnings_for(e)))} |")
    for e in entries:
        r, umax = e.record, unit_max(e.record)
        st = r.stats
        lines += [
            "",
            f"## `{r.unit_id}`" + (f" “{_md(r.name)}”" if r.name else ""),
            "",
            f"hookpoint `{_md(r.hookpoint)}` · max {st.max:.4g} · mean {st.mean:.4g} · "
            f"density {100 * st.density:.2f}% · {st.n_tokens} tokens",
            "",
        ]
        lines += [f"- ⚠ {_md(m)}" for m in warnings_for(e)] + ([""] if warnings_for(e) else [])
        out_side = output_side_lines(e.output_side) + steering_lines(e.steering_effect)
        lines += [f"Output side — {_md(' · '.join(out_side))}", ""] if out_side else []
        for i, x in enumerate(e.explanations()):
            lines += _md_explanation(x, i == 0)
        lines += _md_histogram(r) + [""]
        for heading, ws in window_groups(r):
            lines += [f"### {heading}", ""] + [_md_window(w, umax) for w in ws] + [""]
    return "\n".join(lines).rstrip() + "\n"
