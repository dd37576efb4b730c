"""Reports made of headings, paragraphs, tables and preformatted text — the drift report of a
re-test and the failure-mode audit — written as PDF with the unit report's fonts and styles.

Their Markdown and HTML stay with each report; this module gives them the fourth format without a
PDF writer of their own: a report builds a :class:`Document`, :func:`render_document_pdf` draws it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from explainer.report.to_pdf import pdf_styles, pdf_text


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Para:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str | None = None
    """Drawn as a heading above the table."""
    shade: dict[int, str] = field(default_factory=dict)
    """Row index (0 = first data row) → background colour, e.g. the units that broke."""


@dataclass(frozen=True)
class Pre:
    text: str


Block = Heading | Para | Table | Pre


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    blocks: list[Block]


def _table(t: Table, st: dict[str, Any], width: float) -> Any:
    from reportlab.lib.colors import HexColor
    from reportlab.platypus import Paragraph, TableStyle
    from reportlab.platypus import Table as RLTable

    cell = st["cell"]
    data = [[Paragraph(f"<b>{pdf_text(h)}</b>", cell) for h in t.header]]
    data += [[Paragraph(pdf_text(c), cell) for c in row] for row in t.rows]
    table = RLTable(data, colWidths=[width / max(1, len(t.header))] * len(t.header), repeatRows=1)
    style = [
        ("GRID", (0, 0), (-1, -1), 0.25, HexColor("#bbbbbb")),
        ("BACKGROUND", (0, 0), (-1, 0), HexColor("#eeeeee")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    style += [("BACKGROUND", (0, i + 1), (-1, i + 1), HexColor(colour)) for i, colour in t.shade.items()]
    table.setStyle(TableStyle(style))
    return table


def render_document_pdf(doc: Document) -> bytes:
    """``doc`` as an A4 PDF; text the fonts cannot draw becomes ``?``, never an error."""
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import Paragraph, Preformatted, SimpleDocTemplate

    st = pdf_styles()
    buf = io.BytesIO()
    margin = 50
    pdf = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=doc.title,
        author="activation-explainer",
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin,
        invariant=1,
    )
    width = A4[0] - 2 * margin
    story: list[Any] = [Paragraph(pdf_text(doc.title), st["title"]), Paragraph(pdf_text(doc.subtitle), st["small"])]
    for b in doc.blocks:
        if isinstance(b, Heading):
            story.append(Paragraph(pdf_text(b.text), st["h2"]))
        elif isinstance(b, Para):
            text = pdf_text(b.text)
            story.append(Paragraph(f"<b>{text}</b>" if b.bold else text, st["body"]))
        elif isinstance(b, Table):
            if b.title:
                story.append(Paragraph(pdf_text(b.title), st["h3"]))
            story.append(_table(b, st, width))
        else:
            story.append(Preformatted(pdf_text(b.text, keep_lines=True), st["win"]))
    pdf.build(story)
    return buf.getvalue()
