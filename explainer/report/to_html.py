"""The HTML rendering of a report: one self-contained page.

All CSS is inline and the activation histogram is inline SVG; nothing is fetched (no scripts,
fonts, images or links to elsewhere). Every piece of text that comes from data (tokens,
explanations, errors, ids, provenance) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from explainer.report.model import ReportEntry, ReportExplanation, ReportMeta, ReportScore
from explainer.report.text import (
    calibration_line,
    discrimination_text,
    fmt,
    has_text,
    histogram_axis_label,
    histogram_data,
    interval,
    level_text,
    meaning_text,
    origin_text,
    output_side_lines,
    score_ok,
    steering_lines,
    unit_max,
    window_groups,
)
from explainer.report.warnings import explanation_warnings, warnings_for
from store.records import UnitRecord, Window, finite

__all__ = ["render_html", "histogram_svg"]


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _anchor(i: int, unit_id: str) -> str:
    return f"u{i}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", unit_id).strip("-")


def _token_html(tok: str, act: float, umax: float) -> str:
    alpha = max(0.0, min(1.0, act / umax)) if umax > 0 and finite(act) is not None else 0.0
    style = f' style="background:rgba(34,160,60,{alpha:.3f})"' if alpha > 0 else ""
    text = _esc(tok).replace("\n", "↵\n")
    return f'<span class="tok"{style} title="{act:.4g}">{text}</span>'


def _window_html(w: Window, umax: float) -> str:
    toks = "".join(_token_html(t, a, umax) for t, a in zip(w.tokens, w.activations))
    meta = f"{_esc(w.window_id)} · doc {_esc(w.doc_id)} · {_esc(w.domain)} · max {w.max_activation:.3g}"
    return f'<div class="win"><div class="toks">{toks}</div><div class="meta">{meta}</div></div>'


def histogram_svg(record: UnitRecord, width: int = 520, height: int = 150) -> str:
    """The unit's activation histogram as an inline SVG bar chart (no external references)."""
    h = histogram_data(record)
    counts, edges = h["counts"], h["edges"]
    if not counts or max(counts) == 0:
        return '<p class="meta">no activation histogram recorded</p>'
    left, bottom, top = 44, 30, 18
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak, n = max(counts), len(counts)
    bar_w = plot_w / n
    parts = [
        f'<svg class="hist" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_esc(h['of'])}</title>",
        f'<text x="{left}" y="12" font-size="11" fill="#444">{_esc(h["of"])} (count per bin)</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end" fill="#444">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end" fill="#444">0</text>',
    ]
    for i, c in enumerate(counts):
        bh = plot_h * c / peak
        parts.append(
            f'<rect x="{left + i * bar_w + 0.5:.1f}" y="{top + plot_h - bh:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="#2a8a3e"><title>{edges[i]:.4g} – {edges[i + 1]:.4g}: {c}</title></rect>'
        )
    for i in sorted({0, n // 2, n}):
        x = left + i * bar_w
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle" '
            f'fill="#444">{edges[i]:.3g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" font-size="10" text-anchor="middle" '
        f'fill="#444">{_esc(histogram_axis_label(h))}</text></svg>'
    )
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}.gen{color:#777;font-size:.85em}.note{font-weight:bold;background:#f3f3f3;padding:.5em}
table.toc{border-collapse:collapse;width:100%;font-size:.9em}
table.toc td,table.toc th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
section.unit{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1.5em 0}
.uid{font-family:ui-monospace,Menlo,Consolas,monospace}
.stats,.meta,.domains{color:#666;font-size:.85em}
.expl{font-size:1.1em;background:#f4f8f4;border-left:4px solid #2a2;padding:.4em .8em}
.other .expl{font-size:1em;background:#f7f7f7;border-left-color:#999}
.failed{color:#a00;background:#fdeeee;border-left:4px solid #c00;padding:.4em .8em}
.pending{color:#666;background:#f3f3f3;border-left:4px solid #999;padding:.4em .8em;font-style:italic}
.badge{display:inline-block;background:#fff3cd;color:#7a5a00;border:1px solid #e0c060;border-radius:4px;
padding:0 .4em;font-size:.8em;margin-left:.4em}
ul.warn{color:#7a5a00;font-size:.9em}
.outside{font-family:ui-monospace,monospace;font-size:.85em;color:#333;margin:.3em 0}
.score{margin:.2em 0}.val{font-weight:bold;font-family:ui-monospace,Menlo,Consolas,monospace}
.workflow{margin:.2em 0;color:#235}
.win{margin:.4em 0;border-bottom:1px dotted #ddd;padding-bottom:.2em}
.toks{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.tok{border-radius:2px}
details.prov pre{font-size:.8em;background:#fafafa;border:1px solid #eee;padding:.5em;white-space:pre-wrap;
word-break:break-all}
"""


def _explanation_html(x: ReportExplanation) -> str:
    if has_text(x):
        source = f' <span class="domains">(source: {_esc(x.source)})</span>' if x.source else ""
        origin = origin_text(x)
        badge = f'<p class="imported"><span class="badge">{_esc(origin)}</span></p>' if origin else ""
        return f'<p class="expl">{_esc(x.text)}{source}</p>{badge}'
    if x.status == "failed":
        return f'<p class="failed">failed: {_esc(x.error or "unknown error")}</p>'
    return f'<p class="pending">{_esc(x.status)}</p>'


def _score_html(s: ReportScore) -> str:
    sim = f' <span class="domains">simulator {_esc(s.simulator_model)}</span>' if s.simulator_model else ""
    if not score_ok(s):
        return (
            f'<div class="score">{_esc(s.scorer)}{sim}: <span class="failed">failed: '
            f"{_esc(s.error or 'unknown error')}</span></div>"
        )
    dom = ", ".join(f"{_esc(d)} {fmt(v)}" for d, v in sorted(s.per_domain.items()))
    dom_html = f' <span class="domains">(per domain: {dom})</span>' if dom else ""
    return (
        f'<div class="score">{_esc(s.scorer)}: <span class="val">{fmt(s.value)}</span> '
        f'<span class="domains">{interval(s)}</span> <span class="meaning">{_esc(meaning_text(s))}</span>{sim}{dom_html}'
        f' <span class="domains disc">— {_esc(discrimination_text(s))}</span></div>'
    )


def _provenance_html(prov: dict[str, Any] | None) -> str:
    if not prov:
        return ""
    model = prov.get("subject_model") or {}
    files = ", ".join(f"{f.get('name')} sha256:{f.get('sha256')}" for f in model.get("files") or []) or "not recorded"
    prompt = prov.get("prompt") or {}
    corpus = prov.get("corpus") or {}
    units = prov.get("units_source") or {}
    rows = [
        ("subject model", f"{model.get('name')} · revision {model.get('revision') or '—'} · {files}"),
        ("hookpoint", prov.get("hookpoint")),
        ("SAE / directions", f"{units.get('name')} sha256:{units.get('fingerprint')}" if units else "— (raw units)"),
        ("corpus", f"{corpus.get('id')} · hash {corpus.get('hash')}"),
        ("prompt", f"{prompt.get('name')} v{prompt.get('version')} · sha256 {prompt.get('sha256')}"),
        ("explainer", (prov.get("explainer") or {}).get("model")),
        ("simulators", ", ".join(f"{s.get('scorer')}: {s.get('model')}" for s in prov.get("simulators") or []) or "—"),
    ]
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    full = _esc(json.dumps(prov, indent=1, ensure_ascii=False, default=str))
    return (
        f'<details class="prov"><summary>Provenance</summary><table class="toc">{table}</table>'
        f"<pre>{full}</pre></details>"
    )


def _explanation_block(x: ReportExplanation, primary: bool) -> str:
    parts = [] if primary else [f'<div class="other"><h3>Other explanation ({_esc(x.explainer_model or "—")})</h3>']
    parts.append(_explanation_html(x))
    if x.explainer_model or x.prompt:
        parts.append(
            f'<div class="meta">explainer {_esc(x.explainer_model or "—")} · prompt {_esc(x.prompt or "—")}</div>'
        )
    parts += [_score_html(s) for s in x.scores] or (
        ['<div class="score pending">not scored</div>'] if has_text(x) else []
    )
    parts += [f'<div class="workflow">{_esc(calibration_line(c))}</div>' for c in x.calibrations]
    if not primary:
        parts += [f'<ul class="warn"><li>{_esc(m)}</li></ul>' for _, m in explanation_warnings(x)]
    parts.append(_provenance_html(x.provenance))
    if not primary:
        parts.append("</div>")
    return "\n".join(p for p in parts if p)


def _unit_html(i: int, e: ReportEntry) -> str:
    r = e.record
    umax = unit_max(r)
    warns = warnings_for(e)
    badges = f' <span class="badge">⚠ {len(warns)} warning{"s" if len(warns) > 1 else ""}</span>' if warns else ""
    parts = [
        f'<section class="unit" id="{_anchor(i, r.unit_id)}">',
        f'<h2><span class="uid">{_esc(r.unit_id)}</span>'
        + (f' <span class="uname">“{_esc(r.name)}”</span>' if r.name else "")
        + f"{badges}</h2>",
        f'<div class="stats">hookpoint <span class="uid">{_esc(r.hookpoint)}</span> · '
        f"max {r.stats.max:.4g} · mean {r.stats.mean:.4g} · density {100 * r.stats.density:.2f}% · "
        f"{r.stats.n_tokens} tokens</div>",
    ]
    if warns:
        parts.append('<ul class="warn">' + "".join(f"<li>{_esc(w)}</li>" for w in warns) + "</ul>")
    out_side = output_side_lines(e.output_side) + steering_lines(e.steering_effect)
    if out_side:
        parts.append('<div class="outside">Output side — ' + " · ".join(_esc(x) for x in out_side) + "</div>")
    parts += [_explanation_block(x, j == 0) for j, x in enumerate(e.explanations())]
    parts += ["<h3>Activation histogram</h3>", histogram_svg(r)]
    for heading, wins in window_groups(r):
        parts.append(f"<h3>{_esc(heading)}</h3>")
        parts += [_window_html(w, umax) for w in wins]
    parts.append("</section>")
    return "\n".join(parts)


def _toc_html(entries: list[ReportEntry]) -> str:
    rows = []
    for i, e in enumerate(entries):
        if has_text(e):
            expl = _esc(e.explanation)
        else:
            expl = (
                f'<span class="{"failed" if e.explanation_status == "failed" else "pending"}">'
                f"{_esc(e.explanation_status)}</span>"
            )
        scores = (
            "<br>".join(
                f"{_esc(s.scorer)} {fmt(s.value)} ({_esc(level_text(s))})"
                if s.status == "ok"
                else f"{_esc(s.scorer)} failed"
                for s in e.scores
            )
            or "—"
        )
        warn = ' <span class="badge">⚠</span>' if warnings_for(e) else ""
        rows.append(
            f'<tr><td><a class="uid" href="#{_anchor(i, e.record.unit_id)}">'
            f"{_esc(e.record.unit_id)}</a>{warn}</td><td>{expl}</td><td>{scores}</td></tr>"
        )
    return (
        '<table class="toc"><thead><tr><th>Unit</th><th>Explanation</th><th>Score</th></tr></thead>'
        "<tbody>" + "\n".join(rows) + "</tbody></table>"
    )


def _selection_text(meta: ReportMeta) -> str:
    sel = meta.selection or {}
    kind = sel.get("kind", "all")
    if kind == "query":
        filters = ", ".join(f"{k}={v}" for k, v in (sel.get("filters") or {}).items() if v is not None)
        return f'units found by the query "{sel.get("query")}"' + (f" ({filters})" if filters else "")
    if kind == "run":
        return f"units of run {sel.get('run')}"
    if kind == "units":
        return "units chosen by id"
    return "every labeled unit"


def render_html(entries: list[ReportEntry], meta: ReportMeta | None = None) -> str:
    """One self-contained HTML page (inline CSS and SVG, no external resources)."""
    from explainer.provenance import software_version

    entries, meta = list(entries), meta or ReportMeta()
    by = f" by {_esc(meta.generated_by)}" if meta.generated_by else ""
    gen = (
        f'<div class="gen">generated{by} · activation-explainer {_esc(software_version())} · '
        f"{_esc(meta.generated_at)} · {_esc(_selection_text(meta))}</div>"
    )
    note = meta.note or ("" if entries else "No units.")
    note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
    body = "\n".join(_unit_html(i, e) for i, e in enumerate(entries))
    toc = f"<h2>Contents</h2>\n{_toc_html(entries)}\n" if entries else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(meta.title)}</title><style>{CSS}</style></head><body>\n"
        f'<h1>{_esc(meta.title)}</h1>{gen}<div class="gen">{len(entries)} unit(s)</div>\n'
        f"{note_html}{toc}{body}\n</body></html>\n"
    )
