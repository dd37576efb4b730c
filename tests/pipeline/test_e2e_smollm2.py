"""End to end on the embedded default: the real SmolLM2-135M, an in-process Celery worker over
the memory transport, SQLite and a Chroma directory. Labels three units of layer 15."""

from __future__ import annotations

import json

import pytest

from explainer.runtime import get_index, get_store
from explainer.score.registry import DEFAULT_SCORERS
from workers.cli import main

pytestmark = pytest.mark.slow

LABEL = ["label", "--layer", "15", "--units", "3", "--max-tokens", "3000", "--json"]


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_label_search_report_then_reuse(settings, tmp_path, capsys):
    first = _run(capsys, *LABEL)
    assert not first["task_errors"]
    assert sum(first["counts"].values()) == 3 and first["counts"]["pending"] == 0
    store = get_store(settings)
    rows = store.count_rows()
    assert rows["collections"] == 1 and rows["units"] == 1536 and rows["explanations"] == 3

    expls = store.explanations_for([u["unit_id"] for u in first["units"]])
    ok = [e for e in expls if e.status == "ok"]
    assert ok, "the local explainer produced no usable explanation at all"
    for e in expls:
        assert (e.text is None) == (e.status == "failed")
        assert e.prompt_name == "explain" and len(e.prompt_hash) == 64
    for e in ok:
        assert e.window_ids and all(w.startswith("top-") for w in e.window_ids)
        assert e.settings["selected"] in {"llm-0", "baseline"} and len(e.settings["candidates"]) == 2
        score = store.get_score(e.id, DEFAULT_SCORERS[0])
        assert score.status == "ok" and -1 <= score.value <= 1
        assert score.ci_low <= score.value <= score.ci_high
        assert score.heldout_ids and set(score.heldout_ids).isdisjoint(e.window_ids)
        assert set(score.per_domain) <= {"code", "docs", "legal"}
    assert get_index(settings).ids() == {e.id for e in ok}

    hits = _run(capsys, "search", ok[0].text, "--json")
    assert hits and hits[0]["unit_id"] == ok[0].unit_id and hits[0]["explanation"] == ok[0].text
    assert _run(capsys, "search", ok[0].text, "--layer", "3", "--json") == []

    report = tmp_path / "report.html"
    assert _run(capsys, "report", "-o", str(report), "--json")["units"] == 3
    html = report.read_text()
    assert all(u["unit_id"] in html for u in first["units"]) and ok[0].text.replace('"', "&quot;") in html
    _check_report_formats(capsys, tmp_path, [u["unit_id"] for u in first["units"]], ok[0])

    # A second run reuses the collection, explanations and scores: nothing is recomputed.
    before = {e.id: e.created_at for e in expls}
    collection = store.get_collection(first["collection_id"])
    second = _run(capsys, *LABEL)
    assert second["counts"] == first["counts"] and store.count_rows() == rows
    again = store.explanations_for([u["unit_id"] for u in first["units"]])
    assert {e.id: e.created_at for e in again} == before
    assert store.get_collection(first["collection_id"])["finished_at"] == collection["finished_at"]


def _check_report_formats(capsys, tmp_path, unit_ids, ok):
    """The real units' report in every format: JSON valid against the schema with the packaged
    GGUF's sha256 in its provenance, the PDF's pages drawn and holding the units."""
    import hashlib

    from builders.report import ink, pdf_pages, validate_report

    from explainer.collect.models import resolve_model

    for fmt in ("md", "json", "pdf"):
        path = tmp_path / f"report.{fmt}"
        assert _run(capsys, "report", "--units", *unit_ids, "-o", str(path), "--json")["format"] == fmt
    assert all(u in (tmp_path / "report.md").read_text() for u in unit_ids)
    data = json.loads((tmp_path / "report.json").read_text())
    validate_report(data)
    src = resolve_model("smollm2-135m")
    gguf = hashlib.sha256((src.directory / src.gguf_file).read_bytes()).hexdigest()
    unit = next(u for u in data["units"] if u["unit_id"] == ok.unit_id)
    prov = unit["explanations"][0]["provenance"]
    assert prov["subject_model"]["files"][0]["sha256"] == gguf and prov["prompt"]["sha256"] == ok.prompt_hash
    assert unit["histogram"]["counts"] and unit["explanations"][0]["scores"][0]["ci95"][0] is not None
    images, texts = pdf_pages((tmp_path / "report.pdf").read_bytes())
    assert all(ink(img) > 0.002 for img in images) and all(u in "\n".join(texts) for u in unit_ids)
