"""Every report rendering puts each score's level in words (``score.meaning``) beside the figure:
HTML, Markdown and PDF, for a unit's scores, its summary table and its workflow-domain scores."""

from __future__ import annotations

import pytest
from builders.report import make_entry, pdf_pages, sample_entries

from explainer.report.model import ReportCalibration, ReportScore
from explainer.report.render import render_report
from explainer.score.meaning import WORDS

WEAK = ReportScore("simulation-embedding", 0.15, 0.05, 0.25, {}, "ok")
GOOD = ReportScore("simulation-embedding", 0.62, 0.52, 0.7, {}, "ok")
NONE = ReportScore("simulation-embedding", 0.004, -0.24, 0.15, {}, "ok")


def _entries():
    record = sample_entries()[0].record
    cal = ReportCalibration("mine", NONE, "corpus.txt", "0" * 64, "c-1")
    return [
        make_entry(record, "words", scores=(WEAK,), calibrations=(cal,)),
        make_entry(record, "other", scores=(GOOD,)),
    ]


def _text(fmt: str) -> str:
    out = render_report(_entries(), fmt, secrets=())
    if fmt == "pdf":
        return " ".join(" ".join(pdf_pages(out)[1]).split())
    return out if isinstance(out, str) else out.decode()


@pytest.mark.parametrize("fmt", ["html", "md", "pdf"])
def test_reports_say_what_each_score_means(fmt):
    text = _text(fmt).replace("&#x27;", "'")
    for level in ("weak", "good", "none"):
        assert WORDS[level][:40] in text, (fmt, level)


@pytest.mark.parametrize("fmt", ["html", "pdf"])
def test_summary_tables_give_the_level(fmt):
    text = _text(fmt)
    assert "simulation-embedding 0.150 (weak)" in text and "simulation-embedding 0.620 (good)" in text
