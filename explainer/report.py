"""Reports of labeled units: a self-contained HTML page, Markdown, and plain JSON.

The HTML opens offline: all CSS is inline, nothing is fetched (no scripts, fonts or
images). Every piece of text that comes from data (tokens, explanations, errors, ids)
goes through :func:`html.escape`; the page is built with plain string joins.
"""

from __future__ import annotations

import html
import math
import pathlib
import re
from dataclasses import asdict, dataclass, field

from .records import UnitRecord, Window

__all__ = ["ReportScore", "ReportEntry", "render_html", "write_html", "render_markdown", "report_json"]

SCHEMA_VERSION = "0.1"
LOW_SCORE = 0.2
WIDE_INTERVAL = 0.5
MIN_TOP_WINDOWS = 3


@dataclass(frozen=True)
class ReportScore:
    scorer: str
    """E.g. ``simulation-logits``."""
    value: float | None
    """Pooled Pearson correlation; ``None`` if scoring failed."""
    ci_low: float | None
    """Bootstrap 95% interval."""
    ci_high: float | None
    per_domain: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    """``ok`` or ``failed``."""
    error: str | None = None
    discrimination: dict[str, float] | None = None
    """This scorer's measured discrimination (``make bench-discrimination``): ``auroc``,
    ``pairs_correct``, ``n_concepts``; ``None`` when it was never measured."""


@dataclass(frozen=True)
class ReportEntry:
    record: UnitRecord
    explanation: str | None
    """``None`` when explaining failed (or has not happened yet)."""
    explanation_status: str
    """``ok`` | ``failed`` | ``pending``."""
    explanation_error: str | None
    explainer_model: str | None
    prompt: str | None
    """``name@version#hash8``."""
    scores: tuple[ReportScore, ...] = ()
    explanation_source: str | None = None
    """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer)."""


# ----------------------------------------------------------------------------- helpers

def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _fmt(x: float | None) -> str:
    return "—" if _finite(x) is None else f"{x:.3f}"


def _interval(s: ReportScore) -> str:
    if _finite(s.ci_low) is None or _finite(s.ci_high) is None:
        return "95% CI —"
    return f"95% CI [{s.ci_low:.3f}, {s.ci_high:.3f}]"


def _has_explanation(e: ReportEntry) -> bool:
    return e.explanation_status == "ok" and e.explanation is not None


def _anchor(i: int, unit_id: str) -> str:
    return f"u{i}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", unit_id).strip("-")


def warnings_for(entry: ReportEntry) -> list[str]:
    """Reasons to distrust an entry: low score, wide interval, too few top windows."""
    out: list[str] = []
    for s in entry.scores:
        if s.status != "ok" or _finite(s.value) is None:
            out.append(f"{s.scorer}: scoring failed")
            continue
        if s.value < LOW_SCORE:
            out.append(f"{s.scorer}: score < {LOW_SCORE}")
        lo, hi = _finite(s.ci_low), _finite(s.ci_high)
        if lo is not None and hi is not None and hi - lo > WIDE_INTERVAL:
            out.append(f"{s.scorer}: interval wider than {WIDE_INTERVAL}")
    if entry.explanation_source == "baseline":
        out.append("explanation from the no-LLM baseline (most frequent top tokens)")
    for s in entry.scores:
        d = s.discrimination
        if d is None:
            out.append(f"{s.scorer}: discrimination never measured")
        elif d.get("auroc", 0) < 0.7:
            out.append(f"{s.scorer}: barely tells right from wrong explanations (AUROC {d['auroc']:.2f})")
    n_top = len(entry.record.windows_for("explain", "top"))
    if n_top < MIN_TOP_WINDOWS:
        out.append(f"only {n_top} top window(s) shown to explainer")
    return out


def _token_html(tok: str, act: float, unit_max: float) -> str:
    alpha = max(0.0, min(1.0, act / unit_max)) if unit_max > 0 and math.isfinite(act) else 0.0
    style = f' style="background:rgba(34,160,60,{alpha:.3f})"' if alpha > 0 else ""
    text = _esc(tok).replace("\n", "↵\n")
    return f'<span class="tok"{style} title="{act:.4g}">{text}</span>'


def _window_html(w: Window, unit_max: float) -> str:
    toks = "".join(_token_html(t, a, unit_max) for t, a in zip(w.tokens, w.activations))
    meta = f"{_esc(w.window_id)} · doc {_esc(w.doc_id)} · {_esc(w.domain)} · max {w.max_activation:.3g}"
    return f'<div class="win"><div class="toks">{toks}</div><div class="meta">{meta}</div></div>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}.gen{color:#777;font-size:.85em}
table.toc{border-collapse:collapse;width:100%;font-size:.9em}
table.toc td,table.toc th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
section.unit{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1.5em 0}
.uid{font-family:ui-monospace,Menlo,Consolas,monospace}
.stats,.meta,.domains{color:#666;font-size:.85em}
.expl{font-size:1.1em;background:#f4f8f4;border-left:4px solid #2a2;padding:.4em .8em}
.failed{color:#a00;background:#fdeeee;border-left:4px solid #c00;padding:.4em .8em}
.pending{color:#666;background:#f3f3f3;border-left:4px solid #999;padding:.4em .8em;font-style:italic}
.badge{display:inline-block;background:#fff3cd;color:#7a5a00;border:1px solid #e0c060;border-radius:4px;
padding:0 .4em;font-size:.8em;margin-left:.4em}
.score{margin:.2em 0}.val{font-weight:bold;font-family:ui-monospace,Menlo,Consolas,monospace}
.win{margin:.4em 0;border-bottom:1px dotted #ddd;padding-bottom:.2em}
.toks{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.tok{border-radius:2px}
"""


def _explanation_html(e: ReportEntry) -> str:
    if _has_explanation(e):
        source = f' <span class="domains">(source: {_esc(e.explanation_source)})</span>' if e.explanation_source else ""
        return f'<p class="expl">{_esc(e.explanation)}{source}</p>'
    if e.explanation_status == "failed":
        return f'<p class="failed">failed: {_esc(e.explanation_error or "unknown error")}</p>'
    if e.explanation_status == "pending":
        return '<p class="pending">pending</p>'
    return f'<p class="pending">{_esc(e.explanation_status)}</p>'


def _score_html(s: ReportScore) -> str:
    if s.status != "ok" or _finite(s.value) is None:
        return (f'<div class="score">{_esc(s.scorer)}: <span class="failed">failed: '
                f'{_esc(s.error or "unknown error")}</span></div>')
    dom = ", ".join(f"{_esc(d)} {_fmt(v)}" for d, v in sorted(s.per_domain.items()))
    dom_html = f' <span class="domains">({dom})</span>' if dom else ""
    return (f'<div class="score">{_esc(s.scorer)}: <span class="val">{_fmt(s.value)}</span> '
            f'<span class="domains">{_interval(s)}</span>{dom_html}{_discrimination_html(s)}</div>')


def _discrimination_text(s: ReportScore) -> str:
    d = s.discrimination
    if not d:
        return "discrimination not measured"
    return (f"discrimination: AUROC {d['auroc']:.2f}, {d['pairs_correct']:.0%} of right/wrong pairs ranked "
            f"correctly on {int(d.get('n_concepts', 0))} planted concepts")


def _discrimination_html(s: ReportScore) -> str:
    return f' <span class="domains disc">— {_esc(_discrimination_text(s))}</span>'


def _unit_html(i: int, e: ReportEntry) -> str:
    r = e.record
    unit_max = r.stats.max if r.stats.max > 0 else max((w.max_activation for w in r.windows), default=0.0)
    badges = "".join(f'<span class="badge">⚠ {_esc(w)}</span>' for w in warnings_for(e))
    parts = [
        f'<section class="unit" id="{_anchor(i, r.unit_id)}">',
        f'<h2><span class="uid">{_esc(r.unit_id)}</span>{badges}</h2>',
        f'<div class="stats">hookpoint <span class="uid">{_esc(r.hookpoint)}</span> · '
        f"max {r.stats.max:.4g} · mean {r.stats.mean:.4g} · density {100 * r.stats.density:.2f}% · "
        f"{r.stats.n_tokens} tokens</div>",
        _explanation_html(e),
    ]
    if e.explainer_model or e.prompt:
        parts.append(f'<div class="meta">explainer {_esc(e.explainer_model or "—")} · '
                     f'prompt {_esc(e.prompt or "—")}</div>')
    parts += [_score_html(s) for s in e.scores] or ['<div class="score pending">not scored</div>']
    groups = [("Top windows (shown to explainer)", r.windows_for("explain", "top")),
              ("Top windows (held out)", r.windows_for("heldout", "top")),
              ("Random windows (held out)", r.windows_for("heldout", "random"))]
    for heading, wins in groups:
        if wins:
            parts.append(f"<h3>{_esc(heading)}</h3>")
            parts += [_window_html(w, unit_max) for w in wins]
    parts.append("</section>")
    return "\n".join(parts)


def _toc_html(entries: list[ReportEntry]) -> str:
    rows = []
    for i, e in enumerate(entries):
        if _has_explanation(e):
            expl = _esc(e.explanation)
        else:
            expl = f'<span class="{"failed" if e.explanation_status == "failed" else "pending"}">' \
                   f"{_esc(e.explanation_status)}</span>"
        scores = "<br>".join(f"{_esc(s.scorer)} {_fmt(s.value) if s.status == 'ok' else 'failed'}"
                             for s in e.scores) or "—"
        warn = ' <span class="badge">⚠</span>' if warnings_for(e) else ""
        rows.append(f'<tr><td><a class="uid" href="#{_anchor(i, e.record.unit_id)}">'
                    f"{_esc(e.record.unit_id)}</a>{warn}</td><td>{expl}</td><td>{scores}</td></tr>")
    return ('<table class="toc"><thead><tr><th>Unit</th><th>Explanation</th><th>Score</th></tr></thead>'
            "<tbody>" + "\n".join(rows) + "</tbody></table>")


# ----------------------------------------------------------------------------- public API

def render_html(entries: list[ReportEntry], title: str = "Activation explanations",
                generated_by: str = "") -> str:
    """One self-contained HTML page (inline CSS, no external resources)."""
    entries = list(entries)
    gen = f'<div class="gen">generated by {_esc(generated_by)}</div>' if generated_by else ""
    body = "\n".join(_unit_html(i, e) for i, e in enumerate(entries)) or "<p>No units.</p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{_esc(title)}</h1>{gen}<div class=\"gen\">{len(entries)} unit(s)</div>\n"
            f"<h2>Contents</h2>\n{_toc_html(entries)}\n{body}\n</body></html>\n")


def write_html(entries: list[ReportEntry], path: str | pathlib.Path, title: str = "Activation explanations",
               generated_by: str = "") -> pathlib.Path:
    """Render and write the HTML report (UTF-8), creating parent directories."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(entries, title=title, generated_by=generated_by), encoding="utf-8")
    return p


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(entries: list[ReportEntry], title: str = "Activation explanations") -> str:
    """A compact Markdown summary: one row per unit with explanation and scores."""
    lines = [f"# {title}", "", "| Unit | Explanation | Scores | Warnings |", "|---|---|---|---|"]
    for e in entries:
        if _has_explanation(e):
            expl = _md(e.explanation)
        elif e.explanation_status == "failed":
            expl = _md(f"*failed: {e.explanation_error or 'unknown error'}*")
        else:
            expl = f"*{_md(e.explanation_status)}*"
        scores = "; ".join(
            f"{s.scorer} {_fmt(s.value)} ({_interval(s)}; {_discrimination_text(s)})"
            if s.status == "ok" and _finite(s.value) is not None
            else f"{s.scorer} failed" for s in e.scores) or "—"
        lines.append(f"| `{_md(e.record.unit_id)}` | {expl} | {_md(scores)} | {_md('; '.join(warnings_for(e)))} |")
    return "\n".join(lines) + "\n"


def _jsonable(x: object) -> object:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def report_json(entries: list[ReportEntry]) -> dict:
    """Plain JSON-serialisable dict (non-finite floats become ``None``)."""
    units = []
    for e in entries:
        r = e.record
        units.append({
            "unit_id": r.unit_id, "model": r.model, "hookpoint": r.hookpoint, "index": r.index,
            "stats": asdict(r.stats),
            "explanation": e.explanation if _has_explanation(e) else None,
            "explanation_status": e.explanation_status, "explanation_error": e.explanation_error,
            "explainer_model": e.explainer_model, "prompt": e.prompt, "explanation_source": e.explanation_source,
            "scores": [asdict(s) for s in e.scores],
            "warnings": warnings_for(e),
            "windows": [asdict(w) for w in r.windows],
        })
    return _jsonable({"schema_version": SCHEMA_VERSION, "units": units})  # type: ignore[return-value]
