"""The PDF rendering of a report, drawn with ReportLab (pure Python, no system libraries).

Same content as the HTML page: a contents table, then per unit its warnings, explanation(s)
with scores, intervals, per-domain and workflow-domain scores, provenance, the activation
histogram as a drawn bar chart, and the windows with firing tokens shaded green. Text is set in
an embedded TrueType font (DejaVu Sans when the system has it, else the Bitstream Vera that
ships with ReportLab); characters the font lacks are shown as ``?``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from explainer.report.model import ReportEntry, ReportExplanation, ReportMeta
from explainer.report.text import (
    calibration_line,
    discrimination_text,
    fmt,
    has_text,
    histogram_axis_label,
    histogram_data,
    level_text,
    origin_text,
    output_side_lines,
    score_line,
    steering_lines,
    unit_max,
    window_groups,
)
from explainer.report.warnings import explanation_warnings, warnings_for
from store.records import UnitRecord, Window, finite

__all__ = ["pdf_styles", "pdf_text", "render_pdf"]

_FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
]
_font_lock = threading.Lock()
_fonts: dict[str, Any] = {}


def _register_fonts() -> tuple[str, str, set[int]]:
    """Register the report's fonts once; returns (regular, bold, supported code points)."""
    with _font_lock:
        if not _fonts:
            import reportlab
            from reportlab.pdfbase import pdfmetrics
            from reportlab.pdfbase.ttfonts import TTFont

            vera = Path(reportlab.__file__).resolve().parent / "fonts"
            pairs = [(Path(r), Path(b)) for r, b in _FONT_CANDIDATES] + [(vera / "Vera.ttf", vera / "VeraBd.ttf")]
            regular, bold = next((r, b) for r, b in pairs if r.is_file() and b.is_file())
            font = TTFont("ReportSans", str(regular))
            pdfmetrics.registerFont(font)
            pdfmetrics.registerFont(TTFont("ReportSans-Bold", str(bold)))
            pdfmetrics.registerFontFamily(
                "ReportSans",
                normal="ReportSans",
                bold="ReportSans-Bold",
                italic="ReportSans",
                boldItalic="ReportSans-Bold",
            )
            _fonts["chars"] = set(font.face.charToGlyph)
        return "ReportSans", "ReportSans-Bold", _fonts["chars"]


def _styles() -> dict[str, Any]:
    from reportlab.lib.colors import HexColor
    from reportlab.lib.styles import ParagraphStyle

    regular, bold, _ = _register_fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=9, leading=12)
    return {
        "title": ParagraphStyle("title", parent=base, fontName=bold, fontSize=18, leading=22, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=base, fontName=bold, fontSize=12, leading=15, spaceBefore=12, spaceAfter=4),
        "h3": ParagraphStyle("h3", parent=base, fontName=bold, fontSize=10, leading=13, spaceBefore=6, spaceAfter=2),
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5, textColor=HexColor("#555555")),
        "expl": ParagraphStyle(
            "expl",
            parent=base,
            fontSize=11,
            leading=14,
            backColor=HexColor("#eef6ee"),
            borderPadding=4,
            spaceBefore=4,
            spaceAfter=6,
        ),
        "failed": ParagraphStyle("failed", parent=base, textColor=HexColor("#aa0000"), spaceAfter=4),
        "warn": ParagraphStyle("warn", parent=base, textColor=HexColor("#7a5a00"), leftIndent=8),
        "win": ParagraphStyle("win", parent=base, fontSize=7.5, leading=10, spaceBefore=2),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9.5),
    }


def pdf_text(text: object, keep_lines: bool = False) -> str:
    """Text for a Paragraph (markup characters escaped, on one line) or, with ``keep_lines``, for a
    Preformatted block (as it is); characters the font lacks become ``?``."""
    chars = _register_fonts()[2]
    s = "".join(c if ord(c) in chars or c in "\n\t" else "?" for c in str(text))
    return s if keep_lines else escape(s).replace("\n", " ").replace("\t", " ")


def pdf_styles() -> dict[str, Any]:
    """The report's paragraph styles (title, h2, h3, body, small, cell, win, …) in its fonts."""
    return _styles()


_t = pdf_text


def _window_para(w: Window, umax: float, style: Any) -> Any:
    from reportlab.platypus import Paragraph

    out = []
    for tok, act in zip(w.tokens, w.activations):
        text = _t(tok.replace("\n", "\\n")) or " "
        share = max(0.0, min(1.0, act / umax)) if umax > 0 and finite(act) is not None else 0.0
        if share >= 0.05:
            g = int(255 - share * (255 - 120))
            out.append(f'<span backColor="#{g:02x}{min(255, g + 60):02x}{g:02x}">{text}</span>')
        else:
            out.append(text)
    meta = _t(f"{w.window_id} · doc {w.doc_id} · {w.domain} · max {w.max_activation:.3g}")
    return Paragraph("".join(out) + f' <font size="6.5" color="#777777">[{meta}]</font>', style)


def histogram_drawing(record: UnitRecord, width: float = 400, height: float = 120) -> Any:
    """The activation histogram as a ReportLab drawing (bars, axis, labels)."""
    from reportlab.graphics.shapes import Drawing, Line, Rect, String
    from reportlab.lib.colors import HexColor

    regular = _register_fonts()[0]
    h = histogram_data(record)
    d = Drawing(width, height)
    counts, edges = h["counts"], h["edges"]
    if not counts or max(counts) == 0:
        d.add(String(0, height / 2, "no activation histogram recorded", fontName=regular, fontSize=8))
        return d
    left, bottom, top = 34, 22, 14
    pw, ph, peak, n = width - left - 6, height - bottom - top, max(counts), len(counts)
    bw = pw / n
    d.add(String(left, height - 10, _plain(f"{h['of']} (count per bin)"), fontName=regular, fontSize=8))
    d.add(Line(left, bottom, left + pw, bottom, strokeColor=HexColor("#888888")))
    d.add(String(left - 3, bottom + ph - 6, str(peak), fontName=regular, fontSize=7, textAnchor="end"))
    d.add(String(left - 3, bottom, "0", fontName=regular, fontSize=7, textAnchor="end"))
    for i, c in enumerate(counts):
        d.add(
            Rect(
                left + i * bw + 0.4,
                bottom,
                max(bw - 0.8, 0.4),
                ph * c / peak,
                fillColor=HexColor("#2a8a3e"),
                strokeColor=None,
            )
        )
    for i in sorted({0, n // 2, n}):
        d.add(String(left + i * bw, bottom - 10, f"{edges[i]:.3g}", fontName=regular, fontSize=7, textAnchor="middle"))
    d.add(String(left + pw / 2, 1, histogram_axis_label(h), fontName=regular, fontSize=7, textAnchor="middle"))
    return d


def _plain(text: str) -> str:
    chars = _register_fonts()[2]
    return "".join(c if ord(c) in chars else "?" for c in text)


def _kv_text(value: Any) -> str:
    """A value as text a reader can scan: a mapping as ``key value`` pairs (nested ones in
    parentheses), a list joined by commas; never a Python dict or list."""
    if isinstance(value, dict):
        return ", ".join(
            f"{k} ({_kv_text(v)})" if isinstance(v, dict) and len(v) > 1 else f"{k} {_kv_text(v)}"
            for k, v in value.items()
        )
    if isinstance(value, (list, tuple)):
        return ", ".join(_kv_text(v) for v in value)
    return str(value)


def _settings_text(settings: Any) -> str:
    """Explainer settings as ``key value`` pairs a reader can scan (not a Python dict); the candidates'
    raw answers are left to the JSON report."""
    if not isinstance(settings, dict) or not settings:
        return "—"
    shown = {k: v for k, v in settings.items() if k != "candidates" and v not in (None, "", [], {})}
    return ", ".join(f"{k} {_kv_text(v)}" for k, v in sorted(shown.items())) or "—"


def _provenance_table(prov: dict[str, Any], st: dict[str, Any]) -> Any:
    from reportlab.lib.colors import HexColor
    from reportlab.platypus import Paragraph, Table, TableStyle

    model = prov.get("subject_model") or {}
    files = "; ".join(f"{f.get('name')} sha256:{f.get('sha256')}" for f in model.get("files") or []) or "not recorded"
    units = prov.get("units_source") or {}
    prompt, corpus = prov.get("prompt") or {}, prov.get("corpus") or {}
    explainer = prov.get("explainer") or {}
    windows, tokens, times = prov.get("windows") or {}, prov.get("tokens") or {}, prov.get("timestamps") or {}
    rows = [
        (
            "subject model",
            f"{model.get('name')} (given as {model.get('given') or '—'}), revision "
            f"{model.get('revision') or '—'}; {files}",
        ),
        ("hookpoint", prov.get("hookpoint")),
        (
            "SAE / directions",
            f"{units.get('name')} ({units.get('architecture') or 'directions'}), file hash {units.get('fingerprint')}"
            if units
            else "— (raw units)",
        ),
        ("corpus", f"{corpus.get('id')} · hash {corpus.get('hash')} · {corpus.get('n_tokens')} tokens"),
        ("collection", prov.get("collection_id")),
        ("explainer", f"{explainer.get('model')} · settings {_settings_text(explainer.get('settings'))}"),
        ("simulators", ", ".join(f"{s.get('scorer')}: {s.get('model')}" for s in prov.get("simulators") or []) or "—"),
        ("prompt", f"{prompt.get('name')} v{prompt.get('version')} · sha256 {prompt.get('sha256')}"),
        ("windows shown", ", ".join(windows.get("shown") or []) or "—"),
        ("windows held out", ", ".join(windows.get("held_out") or []) or "—"),
        (
            "tokens",
            f"prompt {tokens.get('prompt')}, completion {tokens.get('completion')}, "
            f"scored {_kv_text(tokens.get('scored'))}",
        ),
        ("timestamps", "; ".join(f"{k} {_kv_text(v)}" for k, v in times.items() if v)),
        ("software", f"{(prov.get('software') or {}).get('name')} {(prov.get('software') or {}).get('version')}"),
    ]
    data = [[Paragraph(_t(k), st["cell"]), Paragraph(_t(v), st["cell"])] for k, v in rows]
    table = Table(data, colWidths=[80, 400])
    table.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, HexColor("#dddddd"))])
    )
    return table


def _explanation_flow(x: ReportExplanation, primary: bool, st: dict[str, Any]) -> list[Any]:
    from reportlab.platypus import Paragraph

    out: list[Any] = []
    if not primary:
        out.append(Paragraph(_t(f"Other explanation ({x.explainer_model or '—'})"), st["h3"]))
    if has_text(x):
        src = f' <font size="8" color="#666666">(source: {_t(x.source)})</font>' if x.source else ""
        out.append(Paragraph(_t(x.text) + src, st["expl"]))
        if origin := origin_text(x):
            out.append(Paragraph(_t(origin), st["small"]))
    elif x.status == "failed":
        out.append(Paragraph(_t(f"failed: {x.error or 'unknown error'}"), st["failed"]))
    else:
        out.append(Paragraph(_t(x.status), st["failed"]))
    if x.explainer_model or x.prompt:
        out.append(Paragraph(_t(f"explainer {x.explainer_model or '—'} · prompt {x.prompt or '—'}"), st["small"]))
    for s in x.scores:
        out.append(
            Paragraph(
                _t(score_line(s)) + f' <font size="7" color="#666666">— {_t(discrimination_text(s))}</font>', st["body"]
            )
        )
    out += [Paragraph(_t(calibration_line(c)), st["body"]) for c in x.calibrations]
    if not primary:
        out += [Paragraph("! " + _t(m), st["warn"]) for _, m in explanation_warnings(x)]
    if x.provenance:
        out += [Paragraph("Provenance", st["h3"]), _provenance_table(x.provenance, st)]
    return out


def _unit_flow(e: ReportEntry, st: dict[str, Any]) -> list[Any]:
    from reportlab.platypus import Paragraph

    r, umax = e.record, unit_max(e.record)
    out: list[Any] = [
        Paragraph(_t(r.unit_id), st["h2"]),
        Paragraph(
            _t(
                f"hookpoint {r.hookpoint} · max {r.stats.max:.4g} · mean {r.stats.mean:.4g} · "
                f"density {100 * r.stats.density:.2f}% · {r.stats.n_tokens} tokens"
            ),
            st["small"],
        ),
    ]
    out += [Paragraph("Warning: " + _t(m), st["warn"]) for m in warnings_for(e)]
    out += [
        Paragraph("Output side: " + _t(line), st["small"])
        for line in output_side_lines(e.output_side) + steering_lines(e.steering_effect)
    ]
    for i, x in enumerate(e.explanations()):
        out += _explanation_flow(x, i == 0, st)
    out += [Paragraph("Activation histogram", st["h3"]), histogram_drawing(r)]
    for heading, ws in window_groups(r):
        out.append(Paragraph(_t(heading), st["h3"]))
        out += [_window_para(w, umax, st["win"]) for w in ws]
    return out


def _contents(entries: list[ReportEntry], st: dict[str, Any]) -> Any:
    from reportlab.lib.colors import HexColor
    from reportlab.platypus import Paragraph, Table, TableStyle

    rows = [[Paragraph(f"<b>{h}</b>", st["cell"]) for h in ("Unit", "Explanation", "Scores")]]
    for e in entries:
        expl = e.explanation if has_text(e) else e.explanation_status
        scores = "; ".join(
            f"{s.scorer} {fmt(s.value)} ({level_text(s)})" if s.status == "ok" else f"{s.scorer} failed"
            for s in e.scores
        )
        rows.append(
            [
                Paragraph(_t(e.record.unit_id), st["cell"]),
                Paragraph(_t(expl), st["cell"]),
                Paragraph(_t(scores or "—"), st["cell"]),
            ]
        )
    table = Table(rows, colWidths=[150, 230, 100], repeatRows=1)
    table.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, HexColor("#cccccc"))])
    )
    return table


def render_pdf(entries: list[ReportEntry], meta: ReportMeta) -> bytes:
    """The report as a PDF file (A4)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    from explainer.provenance import software_version

    st = _styles()
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=_plain(meta.title),
        author="activation-explainer",
        leftMargin=50,
        rightMargin=50,
        topMargin=50,
        bottomMargin=50,
        invariant=1,
    )
    by = f" by {meta.generated_by}" if meta.generated_by else ""
    story: list[Any] = [
        Paragraph(_t(meta.title), st["title"]),
        Paragraph(
            _t(
                f"generated{by} · activation-explainer {software_version()} · "
                f"{meta.generated_at} · {len(entries)} unit(s)"
            ),
            st["small"],
        ),
    ]
    note = meta.note or ("" if entries else "No units.")
    if note:
        story.append(Paragraph(f"<b>{_t(note)}</b>", st["h3"]))
    if entries:
        story += [Paragraph("Contents", st["h2"]), _contents(entries, st)]
    for i, e in enumerate(entries):  # the first unit follows the contents on page one
        story += [*([PageBreak()] if i else []), *_unit_flow(e, st)]
    doc.build(story)
    return buf.getvalue()
