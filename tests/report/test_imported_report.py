"""An imported explanation in a report, beside ours: every format (HTML, Markdown, PDF, JSON) says
it was imported, from which tool, and its original score type and value, next to our re-score."""

from __future__ import annotations

import json

import pytest
from builders.formats import CID, MINE, neuronpedia_line
from builders.report import pdf_pages, validate_report
from builders.search import write_units

from explainer.formats.exchange import import_explanations
from explainer.report.entries import unit_entries
from explainer.report.render import render_report
from store.keyword import SEARCH_SCORER

UNIT = MINE[2]
ORIGIN = (
    "imported from neuronpedia (explainer gpt-4o-mini, type oai_token-act-pair, "
    "original score recall_alt 0.900 by gpt-4o-mini)"
)


@pytest.fixture
def entries(settings, tmp_path):
    """Unit 2 with our explanation and a Neuronpedia one imported and re-scored with our scorer."""
    write_units(settings, MINE, index=False)
    dump = tmp_path / "np.jsonl"
    dump.write_text(neuronpedia_line(UNIT.index, "software license disclaimers of warranty", score=0.9))
    import_explanations(settings, "neuronpedia", dump, CID, rescore=(SEARCH_SCORER,), index=False)
    (entry,) = unit_entries(settings, [UNIT.unit_id], CID)
    texts = {x.text for x in entry.explanations()}
    assert texts == {UNIT.explanation, "software license disclaimers of warranty"}  # side by side
    return [entry]


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_text_reports_mark_the_imported_explanation_with_its_origin(entries, fmt):
    text = render_report(entries, fmt, secrets=()).decode()
    if fmt == "md":
        text = text.replace("\\_", "_")  # as Markdown renders it (the report escapes _ * | …)
    assert text.count(ORIGIN) == 1  # the imported one only, not ours
    assert UNIT.explanation in text and "neuronpedia:recall_alt" in text and SEARCH_SCORER in text


def test_pdf_report_marks_the_imported_explanation_with_its_origin(entries):
    _, pages = pdf_pages(render_report(entries, "pdf", secrets=()))
    text = " ".join(" ".join(pages).split())
    assert text.count(ORIGIN) == 1 and UNIT.explanation in text


def test_json_report_gives_the_origin_of_the_imported_explanation(entries):
    data = json.loads(render_report(entries, "json", secrets=()))
    validate_report(data)
    (unit,) = data["units"]
    by_text = {e["text"]: e for e in unit["explanations"]}
    theirs, ours = by_text["software license disclaimers of warranty"], by_text[UNIT.explanation]
    assert theirs["source"] == "imported" and ours["imported"] is None
    origin = theirs["imported"]
    assert (origin["tool"], origin["score_type"], origin["score"], origin["explainer_model"]) == (
        "neuronpedia",
        "recall_alt",
        0.9,
        "gpt-4o-mini",
    )
    scorers = {s["scorer"]: s for s in theirs["scores"]}
    assert scorers["neuronpedia:recall_alt"]["value"] == 0.9 and scorers[SEARCH_SCORER]["status"] == "ok"
