"""Report renderings a reader can use: each warning listed once in HTML, a PDF whose first page
already shows a unit (not only the contents), and PDF provenance without Python dicts."""

from __future__ import annotations

from dataclasses import replace

from builders.report import make_entry, pdf_pages, sample_entries

from explainer.report.model import ReportScore
from explainer.report.render import render_report
from explainer.report.to_html import render_html
from explainer.report.warnings import warnings_for


def test_html_lists_each_warning_once():
    entries = sample_entries()
    low = make_entry(entries[0].record, "x", scores=(ReportScore("simulation-logits", 0.1, -0.3, 0.4, {}, "ok"),))
    out = render_html([low])
    warns = warnings_for(low)
    assert len(warns) >= 3
    for w in warns:
        escaped = w.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        assert out.count(escaped) == 1, w
    assert f"⚠ {len(warns)} warnings" in out


def test_pdf_first_page_shows_a_unit_and_provenance_reads_as_text():
    entries = sample_entries()
    entry = make_entry(entries[0].record, "words", source="baseline")
    settings = {"selected": "baseline", "temperature": 0.0, "candidates": [{"source": "llm-0", "text": None}]}
    prov = {
        "explainer": {"model": "m", "settings": settings},
        "hookpoint": "layers.1.mlp",
        "tokens": {"prompt": 812, "completion": 40, "scored": {"simulation-context": 40}},
        "timestamps": {
            "explained": "2026-01-02T00:00:00+00:00",
            "scored": {"simulation-context": "2026-01-02T00:01:00+00:00"},
        },
    }
    entries[0] = replace(entry, main=replace(entry.main, provenance=prov))
    _, texts = pdf_pages(render_report(entries, "pdf", secrets=()))
    assert "Contents" in texts[0] and entries[0].record.unit_id in texts[0].split("Contents", 1)[1]
    text = " ".join("\n".join(texts).split())
    assert "{'" not in text and "{" not in text and "selected baseline" in text
    assert "scored simulation-context 40" in text
    assert "scored simulation-context 2026-01-02T00:01:00+00:00" in text
