"""Export and import of explanations: files read back by OpenAI's own neuron-explainer code (PyPI
``neuron-explainer==0.0.1``), Neuronpedia's and delphi's documented layouts, round trips both ways,
provenance, search and re-scoring of imported explanations, and bad input (nothing written half)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

import numpy as np
import pytest

os.environ.setdefault("OPENAI_API_KEY", "test-dummy-key")  # neuron-explainer asserts it is set on import

from builders.search import UNITS, collection_id, write_units  # noqa: E402
from neuron_explainer.activations.activations import ActivationRecord  # noqa: E402
from neuron_explainer.explanations.explanations import (  # noqa: E402
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSimulation,
    load_neuron_explanations,
)
from neuron_explainer.explanations.scoring import correlation_score, score_from_simulation  # noqa: E402
from neuron_explainer.fast_dataclasses import dumps  # noqa: E402

from explainer.cli.main import main  # noqa: E402
from explainer.errors import InputError  # noqa: E402
from explainer.formats.exchange import export_explanations, import_explanations  # noqa: E402
from explainer.formats.read import read  # noqa: E402
from explainer.pipeline.options import LabelOptions  # noqa: E402
from explainer.pipeline.stages import score_stage  # noqa: E402
from explainer.runtime import get_store  # noqa: E402
from store.keyword import SEARCH_SCORER  # noqa: E402

MINE = [dataclasses.replace(u, score=None) for u in UNITS[:3]]  # tiny / layers.1.mlp / 0, 1, 2
CID = collection_id(MINE[0])


@pytest.fixture
def labeled(settings):
    """Three units of one collection, explained, with real simulation-embedding scores (MiniLM)."""
    ids = write_units(settings, MINE, index=False)
    for eid in ids.values():
        score_stage(settings, eid, LabelOptions(scorers=(SEARCH_SCORER,)))
    return settings, ids


def _rows(settings):
    return get_store(settings).count_rows()


# -- neuron-explainer, read by its own code -----------------------------------------------------


def test_neuron_explainer_export_loads_with_neuron_explainers_own_loader(labeled, tmp_path):
    settings, ids = labeled
    out = tmp_path / "ne"
    result = export_explanations(settings, "neuron-explainer", out)
    assert result == {"format": "neuron-explainer", "path": str(out), "explanations": 3, "units": 3}
    store = get_store(settings)
    for u in MINE:
        loaded = load_neuron_explanations(str(out), 1, u.index)
        assert isinstance(loaded, NeuronSimulationResults)
        assert (loaded.neuron_id.layer_index, loaded.neuron_id.neuron_index) == (1, u.index)
        (se,) = loaded.scored_explanations
        assert isinstance(se, ScoredExplanation) and isinstance(se.scored_simulation, ScoredSimulation)
        assert se.explanation == u.explanation
        ours = store.get_score(ids[u.unit_id], SEARCH_SCORER)
        assert se.get_preferred_score() == pytest.approx(ours.value, abs=1e-12)
        seqs = se.scored_simulation.scored_sequence_simulations
        record = store.get_record(u.unit_id, CID)
        assert [tuple(s.true_activations) for s in seqs] == [w.activations for w in record.windows_for("heldout")]
        # their pooled correlation of the sequences we wrote is our score (predictions kept to 4 decimals)
        true = [a for s in seqs for a in s.true_activations]
        pred = [p for s in seqs for p in s.simulation.expected_activations]
        assert correlation_score(true, pred) == pytest.approx(ours.value, abs=1e-3)
        for s in seqs:  # and per sequence, their score_from_simulation agrees with what we wrote
            if np.std(s.true_activations) > 0 and np.std(s.simulation.expected_activations) > 0:
                theirs = score_from_simulation(
                    ActivationRecord(s.simulation.tokens, s.true_activations), s.simulation, correlation_score
                )
                assert s.ev_correlation_score == pytest.approx(theirs, abs=1e-9)


def test_a_neuron_explainer_file_written_by_their_code_imports_and_exports_back(labeled, tmp_path):
    settings, _ = labeled
    src = tmp_path / "theirs"
    (src / "1").mkdir(parents=True)
    results = NeuronSimulationResults(
        neuron_id=__import__("neuron_explainer.activations.activations", fromlist=["NeuronId"]).NeuronId(1, 2),
        scored_explanations=[
            ScoredExplanation("the word WARRANTY in capitals", ScoredSimulation([], ev_correlation_score=0.41))
        ],
    )
    (src / "1" / "2.jsonl").write_bytes(dumps(results) + b"\n")
    r = import_explanations(settings, "neuron-explainer", src, CID)
    (eid,) = r["explanation_ids"]
    rows = _rows(settings)
    assert import_explanations(settings, "neuron-explainer", src, CID)["explanation_ids"] == [eid]  # idempotent
    assert _rows(settings) == rows
    e = get_store(settings).get_explanation(eid)
    assert e.text == "the word WARRANTY in capitals" and e.unit_id == "tiny/layers.1.mlp/2"
    assert (e.imported.tool, e.imported.score, e.imported.score_type) == (
        "neuron-explainer",
        0.41,
        "ev_correlation_score",
    )
    assert get_store(settings).get_score(eid, "neuron-explainer:ev_correlation_score").value == 0.41
    out = tmp_path / "again"
    export_explanations(settings, "neuron-explainer", out, units=["tiny/layers.1.mlp/2"])
    texts = {
        se.explanation: se.get_preferred_score() for se in load_neuron_explanations(str(out), 1, 2).scored_explanations
    }
    assert texts["the word WARRANTY in capitals"] == 0.41


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["neuron-explainer", "neuronpedia", "delphi"])
def test_export_then_import_gives_the_same_explanations_and_scores(labeled, tmp_path, fmt):
    settings, ids = labeled
    store = get_store(settings)
    out = tmp_path / fmt
    export_explanations(settings, fmt, out)
    records = read(fmt, out)
    assert sorted((r.index, r.text) for r in records) == sorted((u.index, u.explanation) for u in MINE)
    result = import_explanations(settings, fmt, out, CID)
    assert result["explanations"] == 3
    name = "ev_correlation_score" if fmt == "neuron-explainer" else SEARCH_SCORER
    for eid in result["explanation_ids"]:
        e = store.get_explanation(eid)
        original = next(i for u, i in ids.items() if u == e.unit_id)
        assert e.text == store.get_explanation(original).text
        assert e.imported.tool == fmt and e.imported.score_type == name
        assert e.imported.score == pytest.approx(store.get_score(original, SEARCH_SCORER).value, abs=1e-12)
        assert store.get_score(eid, f"{fmt}:{name}").value == pytest.approx(e.imported.score, abs=1e-12)
    if fmt != "neuron-explainer":  # the formats that name it keep the explainer model
        assert {store.get_explanation(i).explainer_model for i in result["explanation_ids"]} == {"fake-llm"}


def test_neuronpedia_lines_follow_the_documented_fields_and_import_back(labeled, tmp_path):
    settings, _ = labeled
    out = tmp_path / "np"
    export_explanations(settings, "neuronpedia", out)
    # Neuronpedia's dump layout: v1/{MODEL_ID}/{SOURCE_ID}/explanations/batch-N.jsonl.gz
    batch = out / "v1" / "tiny" / "1-mlp" / "explanations" / "batch-0.jsonl.gz"
    assert [p for p in out.rglob("*") if p.is_file()] == [batch]
    lines = [json.loads(x) for x in gzip.decompress(batch.read_bytes()).decode().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert set(line) == {"modelId", "layer", "index", "description", "typeName", "explanationModelName", "scores"}
        assert line["modelId"] == "tiny" and line["layer"] == "1-mlp" and isinstance(line["index"], str)
        (s,) = line["scores"]
        assert set(s) == {"value", "explanationScoreTypeName", "explanationScoreModelName"}
        assert s["explanationScoreTypeName"] == SEARCH_SCORER
    # a dump line as Neuronpedia publishes it (extra fields, a plain .jsonl) imports too
    dump = tmp_path / "dump.jsonl"
    extra = {"id": "x1", "authorId": "a", "umap_x": 0.1, "embedding": None}
    dump.write_text(
        json.dumps(
            {
                **extra,
                "modelId": "tiny",
                "layer": "1-mlp",
                "index": "1",
                "description": "def keyword before function names",
                "typeName": "oai_token-act-pair",
                "explanationModelName": "gpt-4o-mini",
                "scores": [
                    {
                        "value": 0.33,
                        "explanationScoreTypeName": "recall_alt",
                        "explanationScoreModelName": "gpt-4o-mini",
                    }
                ],
            }
        )
        + "\n"
    )
    (eid,) = import_explanations(settings, "neuronpedia", dump, CID)["explanation_ids"]
    e = get_store(settings).get_explanation(eid)
    assert (e.imported.explanation_type, e.imported.explainer_model, e.explainer_model) == (
        "oai_token-act-pair",
        "gpt-4o-mini",
        "gpt-4o-mini",
    )
    back = tmp_path / "np2"
    export_explanations(settings, "neuronpedia", back, units=["tiny/layers.1.mlp/1"])
    batch = back / "v1" / "tiny" / "1-mlp" / "explanations" / "batch-0.jsonl.gz"
    lines = [json.loads(x) for x in gzip.decompress(batch.read_bytes()).decode().splitlines()]
    mine = next(x for x in lines if x["description"] == "def keyword before function names")
    assert mine["typeName"] == "oai_token-act-pair" and mine["explanationModelName"] == "gpt-4o-mini"
    assert {
        "value": 0.33,
        "explanationScoreTypeName": "neuronpedia:recall_alt",
        "explanationScoreModelName": "gpt-4o-mini",
    } in mine["scores"]


def test_delphi_files_follow_its_layout(labeled, tmp_path):
    settings, ids = labeled
    out = tmp_path / "run"
    export_explanations(settings, "delphi", out)
    names = sorted(p.name for p in (out / "explanations").iterdir())
    assert names == [f"layers.1.mlp_latent{u.index}.txt" for u in MINE]
    for u in MINE:
        f = out / "explanations" / f"layers.1.mlp_latent{u.index}.txt"
        import orjson  # delphi writes and reads these with orjson

        assert orjson.loads(f.read_bytes()) == u.explanation
        score_file = out / "scores" / SEARCH_SCORER / f.name
        rows = orjson.loads(score_file.read_bytes())
        assert isinstance(rows, list) and int(score_file.stem.split("latent")[-1]) == u.index  # delphi's own parse
        assert rows[0]["final_score"] == pytest.approx(
            get_store(settings).get_score(ids[u.unit_id], SEARCH_SCORER).value
        )
    config = json.loads((out / "run_config.json").read_text())
    assert (
        config["model"] == "tiny"
        and config["hookpoints"] == ["layers.1.mlp"]
        and config["explainer_model"] == "fake-llm"
    )
    # delphi's own result analysis (eai-delphi 0.1.3) reads the score files: one row per held-out window
    result_analysis = pytest.importorskip("delphi.log.result_analysis")
    df, _ = result_analysis.load_data(out / "scores", ["layers.1.mlp"])
    assert sorted(set(df.latent_idx)) == [u.index for u in MINE] and set(df.score_type) == {SEARCH_SCORER}
    record = get_store(settings).get_record(MINE[0].unit_id, CID)
    assert len(df[df.latent_idx == 0]) == len(record.windows_for("heldout"))
    assert df.prediction.isna().all()  # a simulator makes no yes/no call; delphi counts these as failed


def test_delphi_computes_our_detection_score_from_the_exported_examples(labeled, tmp_path):
    """A detection score (our window_score over P(yes) per held-out window) exported as delphi's
    per-example rows: delphi's own confusion and balanced accuracy give our figure."""
    result_analysis = pytest.importorskip("delphi.log.result_analysis")
    from explainer.score.detection import balanced_accuracy, window_labels, window_score

    settings, ids = labeled
    store = get_store(settings)
    u = MINE[0]
    windows = store.get_record(u.unit_id, CID).windows_for("heldout")
    labels = window_labels(windows)
    probs = [0.9, 0.3, 0.6, 0.2][: len(windows)]
    res = window_score(
        windows,
        labels,
        lambda y, v: balanced_accuracy(y, [int(p >= 0.5) for p in v]),
        probs,
        "judge",
        {"method": "detection", "p_yes": probs},
    )
    store.save_score(
        explanation_id=ids[u.unit_id],
        scorer="detection",
        simulator_model="judge",
        status="ok",
        value=res.value,
        heldout_ids=[w.window_id for w in windows],
        details=res.details,
    )
    out = tmp_path / "run"
    export_explanations(settings, "delphi", out, units=[u.unit_id])
    df, _ = result_analysis.load_data(out / "scores", ["layers.1.mlp"])
    det = df[df.score_type == "detection"]
    assert list(det.probability) == probs and list(det.activating) == [bool(x) for x in labels]
    theirs = result_analysis.compute_classification_metrics(result_analysis.compute_confusion(det))
    assert theirs["accuracy"] == pytest.approx(res.value, abs=1e-12)
    # and back in: the import reads delphi's per-example rows to the same figure
    (eid,) = import_explanations(settings, "delphi", out, CID)["explanation_ids"]
    assert store.get_score(eid, "delphi:detection").value == pytest.approx(res.value, abs=1e-12)


def test_delphi_per_example_scores_give_its_balanced_accuracy(settings, tmp_path):
    write_units(settings, MINE, index=False)
    run = tmp_path / "run"
    (run / "explanations").mkdir(parents=True)
    (run / "scores" / "detection").mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"model": "org/tiny", "explainer_model": "llama-70b"}))
    (run / "explanations" / "layers.1.mlp_latent0.txt").write_text(json.dumps("citations of papers"))
    examples = [  # 3 activating (2 found), 2 not (1 rejected), 1 failed → (2/3 + 1/2) / 2
        {"str_tokens": ["a"], "activating": True, "prediction": True, "probability": None, "correct": True},
        {"str_tokens": ["b"], "activating": True, "prediction": True, "probability": None, "correct": True},
        {"str_tokens": ["c"], "activating": True, "prediction": False, "probability": None, "correct": False},
        {"str_tokens": ["d"], "activating": False, "prediction": False, "probability": None, "correct": True},
        {"str_tokens": ["e"], "activating": False, "prediction": True, "probability": None, "correct": False},
        {"str_tokens": ["f"], "activating": False, "prediction": None, "probability": None, "correct": None},
    ]
    (run / "scores" / "detection" / "layers.1.mlp_latent0.txt").write_text(json.dumps(examples))
    (eid,) = import_explanations(settings, "delphi", run, CID)["explanation_ids"]
    e = get_store(settings).get_explanation(eid)
    assert e.imported.score == pytest.approx((2 / 3 + 1 / 2) / 2) and e.imported.score_type == "detection"
    assert e.explainer_model == "llama-70b"
    back = tmp_path / "back"  # and back out: the same file names and the explanation; these rows lack
    # fields delphi's load_data reads (distance, activations), so the score is left out and counted
    result = export_explanations(settings, "delphi", back, units=["tiny/layers.1.mlp/0"])
    assert json.loads((back / "explanations" / "layers.1.mlp_latent0.txt").read_text()) == "citations of papers"
    assert result["scores_left_out"] == 1 and not (back / "scores").exists()
    assert json.loads((back / "run_config.json").read_text())["explainer_model"] == "llama-70b"


# -- imported explanations: searchable, re-scored on our corpus, in reports ------------------------


def test_imported_explanations_are_searchable_and_rescored_beside_the_original(settings, tmp_path):
    from explainer.report.entries import unit_detail
    from explainer.search.hybrid import search

    write_units(settings, MINE, index=False)
    dump = tmp_path / "np.jsonl"
    dump.write_text(
        json.dumps(
            {
                "modelId": "tiny",
                "layer": "1-mlp",
                "index": "2",
                "description": "software license disclaimers of warranty",
                "typeName": "oai_token-act-pair",
                "explanationModelName": "gpt-4",
                "scores": [
                    {"value": 0.9, "explanationScoreTypeName": "oai_simulation", "explanationScoreModelName": "gpt-4"}
                ],
            }
        )
        + "\n"
    )
    (eid,) = import_explanations(settings, "neuronpedia", dump, CID, rescore=(SEARCH_SCORER,))["explanation_ids"]
    hits = search(settings, "warranty disclaimer in a license", limit=3)
    assert hits and hits[0]["explanation"] == "software license disclaimers of warranty"
    detail = unit_detail(settings, "tiny/layers.1.mlp/2", CID)
    mine = next(x for x in detail["explanations"] if x["text"] == "software license disclaimers of warranty")
    scorers = {s["scorer"]: s for s in mine["scores"]}
    assert scorers["neuronpedia:oai_simulation"]["value"] == 0.9
    ours = scorers[SEARCH_SCORER]
    assert ours["status"] == "ok" and -1 <= ours["value"] <= 1 and ours["value"] != 0.9
    assert get_store(settings).get_score(eid, SEARCH_SCORER).heldout_ids  # scored on this collection's held-out windows


# -- bad input ------------------------------------------------------------------------------------


def _np_line(**kw):
    base = {"modelId": "tiny", "layer": "1-mlp", "index": "0", "description": "x y z", "scores": []}
    return json.dumps({**base, **kw}) + "\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (_np_line(modelId="gpt2-small"), r"is for model 'gpt2-small', but collection \w+ holds model 'tiny'"),
        (
            _np_line(layer="3-res-jb"),
            r"unit 0 is in layer 3 \(3-res-jb\), but collection \w+ holds layers.1.mlp \(layer 1\)",
        ),
        (
            _np_line(layer="1-res-jb"),  # the right layer, another part of the block
            r"bad.jsonl: unit 0 is from 1-res-jb, the residual stream, but collection \w+ holds layers.1.mlp, the MLP$",
        ),
        (_np_line(layer="1-att-kk"), r"unit 0 is from 1-att-kk, the attention, but collection \w+ holds layers.1.mlp"),
        (_np_line(index="999"), r"1 unit\(s\) of the file are not in collection \w+: tiny/layers.1.mlp/999"),
        (_np_line(index="-1"), r"index '-1' is not a non-negative integer"),
        (_np_line(description=""), "the description is empty"),
        ('{"modelId": "tiny"', "line 1: not JSON"),
        (_np_line() + '{"modelId": "tiny", "layer": "1-mlp"}\n', r"line 2: missing field\(s\) index, description"),
    ],
)
def test_bad_imports_are_one_line_errors_and_write_nothing(settings, tmp_path, content, message):
    write_units(settings, MINE, index=False)
    before = _rows(settings)
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        import_explanations(settings, "neuronpedia", f, CID)
    assert _rows(settings) == before


def test_file_model_names_the_collections_model_under_another_name(settings, tmp_path):
    write_units(settings, MINE, index=False)
    f = tmp_path / "np.jsonl"
    f.write_text(_np_line(modelId="gpt2-small"))
    with pytest.raises(
        InputError, match=r"is for model 'gpt2-small', but collection \w+ holds model 'tiny' \(imported as 'other'\)"
    ):
        import_explanations(settings, "neuronpedia", f, CID, file_model="other")
    assert import_explanations(settings, "neuronpedia", f, CID, file_model="gpt2-small")["explanations"] == 1


def test_existing_target_is_refused_unless_forced_and_failures_leave_nothing(labeled, tmp_path, monkeypatch):
    from explainer.formats import write as writer

    settings, _ = labeled
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists; pass --force to replace it"):
        export_explanations(settings, "delphi", out)
    assert (out / "keep.txt").read_text() == "mine"
    export_explanations(settings, "delphi", out, force=True)
    assert not (out / "keep.txt").exists() and (out / "run_config.json").is_file()
    with pytest.raises(InputError, match=r"no ok explanation for unit\(s\): tiny/layers.1.mlp/77"):
        export_explanations(settings, "delphi", tmp_path / "none", units=["tiny/layers.1.mlp/77"])
    calls = []

    def fail_on_second(layer, index, records):  # a failure after the first unit's file is written
        calls.append(index)
        if len(calls) == 2:
            raise OSError("disk full")
        return {"neuron_id": {"layer_index": layer, "neuron_index": index}, "scored_explanations": []}

    monkeypatch.setattr(writer, "neuron_explainer_json", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        export_explanations(settings, "neuron-explainer", tmp_path / "half")
    assert calls == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no target, no partial folder
    with pytest.raises(OSError, match="disk full"):  # a forced replacement that fails keeps the old folder
        calls.clear()
        export_explanations(settings, "neuron-explainer", out, force=True)
    assert (out / "run_config.json").is_file()


def test_cli_export_and_import(labeled, tmp_path, capsys):
    settings, _ = labeled
    out = tmp_path / "np"
    assert main(["export", "--format", "neuronpedia", "--units", "tiny/layers.1.mlp/0", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["explanations"] == 1
    assert main(["export", "--format", "neuronpedia", "-o", str(out)]) == 2
    assert f"error: {out} exists; pass --force to replace it" in capsys.readouterr().err
    assert main(["import", "--format", "neuronpedia", str(out), "--collection", CID]) == 0
    assert "explanations: 1" in capsys.readouterr().out
    assert main(["import", "--format", "delphi", str(out), "--collection", CID]) == 2
    assert "not a delphi run folder" in capsys.readouterr().err


def test_export_of_a_run_takes_its_units_only(labeled, tmp_path):
    from store import runs

    settings, ids = labeled
    store = get_store(settings)
    runs.open_run(store, "run-abc123", CID, {}, "fake-llm", [SEARCH_SCORER])
    runs.add_units(store, "run-abc123", [(u.unit_id, ids[u.unit_id]) for u in MINE[:2]])
    result = export_explanations(settings, "neuronpedia", tmp_path / "np", run="run-abc")  # a prefix is enough
    assert result["explanations"] == 2
    got = {r.index for r in read("neuronpedia", tmp_path / "np")}
    assert got == {MINE[0].index, MINE[1].index}
    with pytest.raises(InputError, match="no run 'nope'"):
        export_explanations(settings, "neuronpedia", tmp_path / "x", run="nope")
    with pytest.raises(InputError, match="either a run or units"):
        export_explanations(settings, "neuronpedia", tmp_path / "x", run="run-abc", units=[MINE[0].unit_id])
