"""PDF reports: rendered to PNG pages with PDFium, the pages are not blank and their text holds
the units, explanations, scores and warnings."""

from __future__ import annotations

from dataclasses import replace

from builders.report import MIN_INK, ink, pdf_pages, sample_entries

from explainer.report.model import ReportMeta
from explainer.report.render import render_report


def test_pdf_pages_are_drawn_and_hold_the_report(tmp_path):
    from dataclasses import replace as dc_replace

    entries = sample_entries()
    good = entries[0]
    stats = dc_replace(good.record.stats, histogram=(4, 9, 3, 1), histogram_edges=(1.0, 1.19, 1.41, 1.68, 2.0))
    entries[0] = replace(good, record=replace(good.record, stats=stats))
    data = render_report(entries, "pdf", ReportMeta(title="Audit of three units", generated_by="test"), secrets=())
    images, texts = pdf_pages(data)
    assert len(images) >= len(entries)  # contents and the first unit, then a page (at least) per unit
    for img in images:
        assert ink(img) > MIN_INK, "a blank page"
    text = "\n".join(texts)
    for e in entries:
        assert e.record.unit_id in text
    assert "Audit of three units" in text and "Function names after `def`" in text
    assert "simulation-logits" in text and "0.612" in text and "95% CI [0.500, 0.700]" in text
    assert "failed: LLM returned <garbage>" in text
    assert "only 1 top window(s) shown to explainer" in text
    assert "max activation of each activating sequence" in text  # the drawn histogram's caption
    images[1].save(tmp_path / "unit-page.png")


def test_empty_pdf_says_so():
    images, texts = pdf_pages(
        render_report([], "pdf", ReportMeta(note="No units: the query 'x' matched nothing."), secrets=())
    )
    assert len(images) == 1 and ink(images[0]) > 0 and "No units: the query" in texts[0]


def test_unsupported_characters_do_not_break_the_pdf():
    entry = sample_entries()[0]
    assert entry.main.explanation is not None
    text = "数字 and emoji 🎉 then plain words"
    entry = replace(entry, main=replace(entry.main, explanation=replace(entry.main.explanation, text=text)))
    images, texts = pdf_pages(render_report([entry], "pdf", secrets=()))
    assert "plain words" in "\n".join(texts)
