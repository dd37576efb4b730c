"""delphi files through import and export: what an import brings in (per-example rows included)
comes out as files delphi's own result analysis (``eai-delphi`` 0.1.3) reads to the same balanced
accuracy, and a score delphi could not read (no per-example rows) is left out and counted."""

from __future__ import annotations

import json

import pytest
from builders.formats import (
    CID,
    DELPHI_BALANCED_ACCURACY,
    DELPHI_EXAMPLES,
    MINE,
    delphi_run,
    labeled_units,
    neuronpedia_line,
)
from builders.search import write_units

from explainer.formats.exchange import export_explanations, import_explanations
from explainer.runtime import get_store
from store.keyword import SEARCH_SCORER

result_analysis = pytest.importorskip("delphi.log.result_analysis")


def _delphi_accuracy(df):
    return result_analysis.compute_classification_metrics(result_analysis.compute_confusion(df))["accuracy"]


def test_an_imported_delphi_run_exports_back_to_files_delphi_reads_to_the_same_accuracy(settings, tmp_path):
    write_units(settings, MINE, index=False)
    (eid,) = import_explanations(settings, "delphi", delphi_run(tmp_path / "theirs"), CID)["explanation_ids"]
    store = get_store(settings)
    assert store.get_score(eid, "delphi:detection").value == pytest.approx(DELPHI_BALANCED_ACCURACY)
    back = tmp_path / "back"
    result = export_explanations(settings, "delphi", back, units=["tiny/layers.1.mlp/0"])
    assert "scores_left_out" not in result
    assert [p.name for p in (back / "scores").iterdir()] == ["delphi--detection"]  # no ':' in a folder name
    rows = json.loads((back / "scores" / "delphi--detection" / "layers.1.mlp_latent0.txt").read_text())
    assert [r["str_tokens"] for r in rows] == [e["str_tokens"] for e in DELPHI_EXAMPLES]
    df, _ = result_analysis.load_data(back / "scores", ["layers.1.mlp"])
    assert list(df.latent_idx) == [0] * len(DELPHI_EXAMPLES) and set(df.score_type) == {"delphi--detection"}
    assert _delphi_accuracy(df) == pytest.approx(DELPHI_BALANCED_ACCURACY, abs=1e-12)
    # and in again: the same figure from the rows written back
    (again,) = import_explanations(settings, "delphi", back, CID)["explanation_ids"]
    assert store.get_score(again, "delphi:delphi--detection").value == pytest.approx(DELPHI_BALANCED_ACCURACY)


def test_a_score_without_per_example_rows_is_left_out_of_a_delphi_export_and_counted(settings, tmp_path):
    """An imported Neuronpedia score has no per-example rows: delphi cannot read a score file
    without them, so it gets none; the export says so, and delphi reads the rest."""
    labeled_units(settings)
    dump = tmp_path / "np.jsonl"
    dump.write_text(neuronpedia_line(1, "def keyword before function names", score=0.99))  # the best for unit 1
    import_explanations(settings, "neuronpedia", dump, CID)
    out = tmp_path / "run"
    result = export_explanations(settings, "delphi", out)
    assert result["scores_left_out"] == 1
    assert "layers.1.mlp_latent1:neuronpedia:recall_alt" in result["scores_left_out_why"]
    assert sorted(p.name for p in (out / "scores").iterdir()) == [SEARCH_SCORER]
    df, _ = result_analysis.load_data(out / "scores", ["layers.1.mlp"])
    text = json.loads((out / "explanations" / "layers.1.mlp_latent1.txt").read_text())
    assert text == "def keyword before function names"  # the explanation is written, its score is not
    assert sorted(set(df.latent_idx)) == [0, 2] and set(df.score_type) == {SEARCH_SCORER}
