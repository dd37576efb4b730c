"""Workflow calibration through the real pipeline: a tiny random LLaMA saved as a Hugging Face
directory is collected over a corpus, two units are explained (texts written directly) and scored
with the real embedding scorer, then ``calibrate`` collects them over a user's corpus and
re-scores them; reports show the workflow domain and the collection's provenance."""

from __future__ import annotations

import hashlib
import json

import pytest
from builders.intervene import explain
from builders.report import validate_report

from explainer.collect.collector import CollectConfig
from explainer.errors import InputError, UnknownUnitError
from explainer.pipeline.calibrate import CalibrationOptions, _score_one, calibrate, collection_inputs
from explainer.pipeline.collection import collect_stage, select_units
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import score_stage
from explainer.report.entries import unit_entries
from explainer.report.model import ReportMeta
from explainer.report.to_json import report_json
from explainer.runtime import get_store
from store.records import UnitRecord, UnitStats, Window
from workers.cli import main

CFG = CollectConfig(
    window=8,
    context=16,
    top_k=4,
    n_random=2,
    max_tokens=600,
    batch_size=4,
    n_quantiles=2,
    pool_per_quantile=2,
    min_density=0.0,
)
CODE = "def total(xs):\n    return sum(x * 2 for x in xs if x > 0)\n" * 6
LEGAL = "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED. " * 6
TICKETS = (
    "Customer reports the invoice page times out after login. Please reset the password and check billing. "
    "The order was shipped twice; refund the second charge. "
) * 8


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model.model.save_pretrained(d)
    tiny_model.tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def labeled(settings, model_dir, tmp_path, model_cache):
    """Two units of a real collection, explained and scored; returns (settings, collection id, unit ids)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"id": i, "domain": d, "text": t})
            for i, (d, t) in enumerate([("code", CODE), ("legal", LEGAL)] * 2)
        ),
        encoding="utf-8",
    )
    cid = collect_stage(settings, str(model_dir), "layers.1.mlp", str(corpus), CFG, progress=False)
    units = select_units(settings, cid, 2)
    store = get_store(settings)
    for uid, text in zip(units, ["sums of numbers in Python code", "warranty disclaimers in licenses"]):
        eid = explain(store, cid, uid, text, window_ids=("top-0", "top-2"))
        score_stage(settings, eid, LabelOptions(scorers=("simulation-embedding",)))
    return settings, cid, units


def test_calibrate_adds_a_workflow_domain_to_reports(labeled, model_dir, tmp_path):
    settings, cid, units = labeled
    tickets = tmp_path / "tickets.txt"
    tickets.write_text(TICKETS, encoding="utf-8")
    result = calibrate(
        settings, units, CalibrationOptions(corpus=str(tickets), domain="support-tickets"), progress=False
    )
    assert result["domain"] == "support-tickets" and not result["skipped"]
    new_cid = result["collections"][cid]
    assert new_cid != cid and get_store(settings).get_collection(new_cid)["corpus"] == str(tickets)
    assert {r["unit_id"] for r in result["results"]} == set(units)
    assert any(r["status"] == "ok" and -1 <= r["value"] <= 1 for r in result["results"])
    for r in result["results"]:
        assert r["scorer"] == "simulation-embedding" and r["status"] in ("ok", "failed")
        assert (r["status"] == "ok") == ("value" in r) and (r["status"] == "failed") == bool(r.get("error"))

    # reports still read the collection the units were explained in, and show the workflow domain
    entries = unit_entries(settings, units)
    assert {e.collection_id for e in entries} == {cid}
    for e in entries:
        [cal] = e.calibrations
        assert cal.domain == "support-tickets" and cal.collection_id == new_cid and cal.corpus == str(tickets)
    data = report_json(entries, ReportMeta())
    validate_report(data)
    prov = data["units"][0]["explanations"][0]["provenance"]
    weights = model_dir / "model.safetensors"
    assert prov["subject_model"]["files"] == [
        {
            "name": "model.safetensors",
            "bytes": weights.stat().st_size,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        }
    ]
    assert prov["subject_model"]["given"] == str(model_dir.resolve())
    assert prov["hookpoint"] == "layers.1.mlp" and prov["hookpoint_requested"] == "layers.1.mlp"
    assert prov["corpus"]["id"].endswith("corpus.jsonl") and len(prov["corpus"]["hash"]) == 16
    assert prov["windows"]["shown"] == ["top-0", "top-2"] and prov["windows"]["held_out"]
    assert prov["software"]["collected_with"] == prov["software"]["version"]
    wd = data["units"][0]["explanations"][0]["workflow_domains"][0]
    assert wd["domain"] == "support-tickets" and wd["corpus_hash"]

    # running it again reuses the collection and overwrites the same rows
    again = calibrate(
        settings, units, CalibrationOptions(corpus=str(tickets), domain="support-tickets"), progress=False
    )
    assert again["collections"] == result["collections"]
    ids = [e.explanation_id for e in entries]
    assert len(get_store(settings).calibrations_for(ids)) == len(units)


def test_calibrate_cli_lists_unknown_units_and_skips_unexplained(labeled, tmp_path, capsys):
    settings, cid, units = labeled
    tickets = tmp_path / "tickets.txt"
    tickets.write_text(TICKETS, encoding="utf-8")
    code = main(
        ["calibrate", "--units", units[0], "tiny-llama/layers.1.mlp/999999", "nope/x/1", "--corpus", str(tickets)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown unit id(s): tiny-llama/layers.1.mlp/999999, nope/x/1" in err
    other = next(r["unit_id"] for r in get_store(settings).unit_rows(cid) if r["unit_id"] not in units)
    code = main(["calibrate", "--units", units[0], other, "--corpus", str(tickets), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["domain"] == "tickets"  # default: the corpus name
    assert out["skipped"] == [{"unit_id": other, "reason": "no ok explanation (status pending)"}]
    code = main(["calibrate", "--units", units[0], "--corpus", str(tmp_path / "missing.txt")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["calibrate", "--units", units[0], "--corpus", str(tickets), "--scorer", "nope"])
    assert code == 2 and "unknown scorer 'nope'" in capsys.readouterr().err


def test_a_unit_that_never_fires_is_recorded_as_failed(labeled):
    settings, cid, units = labeled
    [entry] = unit_entries(settings, units[:1])
    silent = UnitRecord(
        units[0],
        "tiny-llama",
        "layers.1.mlp",
        0,
        UnitStats(0.0, 0.0, 0.0, 0.0, 100),
        (Window("random-0", "random", "heldout", "t:1", "tickets", ("a", " b"), (0.0, 0.0)),),
        skip_reason="dead",
    )
    [r] = _score_one(get_store(settings), settings, entry, silent, cid, "tickets", CalibrationOptions(corpus="x"))
    assert r["status"] == "failed" and "never fires" in r["error"] and "dead" in r["error"]
    [row] = get_store(settings).calibrations_for([entry.explanation_id])
    assert row.score.status == "failed" and row.score.value is None and "never fires" in row.score.error


def test_collection_inputs_need_the_recorded_encoder_path():
    base = {"id": "c1", "model": "m", "hookpoint": "layers.2.sae-x-abc123"}
    with pytest.raises(InputError, match="does not record the path of the SAE"):
        collection_inputs({**base, "config": json.dumps({"window": 8, "units": {"name": "x"}})})
    got = collection_inputs(
        {
            **base,
            "config": json.dumps(
                {
                    "window": 8,
                    "top_k": 6,
                    "units": {"name": "x"},
                    "provenance": {"sae": "/s", "hookpoint": "layers.2", "model": {"given": "/m"}},
                }
            ),
        }
    )
    assert (got["model"], got["hookpoint"], got["sae"], got["cfg"].window, got["cfg"].top_k) == (
        "/m",
        "layers.2",
        "/s",
        8,
        6,
    )


def test_unknown_units_fail_before_collecting(settings, tmp_path):
    with pytest.raises(UnknownUnitError, match="a/b/1"):
        calibrate(settings, ["a/b/1"], CalibrationOptions(corpus=str(tmp_path)), progress=False)


def test_calibrate_with_a_window_level_scorer(labeled, tmp_path):
    """Window-level scorers (here the MiniLM ``embedding`` AUROC) calibrate like simulators do."""
    settings, cid, units = labeled
    tickets = tmp_path / "tickets.txt"
    tickets.write_text(TICKETS + CODE * 3, encoding="utf-8")
    result = calibrate(
        settings, units, CalibrationOptions(corpus=str(tickets), domain="mixed", scorers=("embedding",)), progress=False
    )
    assert {r["scorer"] for r in result["results"]} == {"embedding"}
    for r in result["results"]:
        assert r["status"] == "ok" and 0.0 <= r["value"] <= 1.0 or r["status"] == "failed" and r["error"]
    assert any(r["status"] == "ok" for r in result["results"])
