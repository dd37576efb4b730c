"""Re-test through the real pipeline on real checkpoints: the tiny random LLaMA is collected over a
two-domain corpus (code and legal text from the default corpus), a dozen units are explained with the
no-LLM baseline and scored with the real embedding scorer; then the same weights saved again (the
control) and a copy fine-tuned on the legal domain are re-tested."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from builders.report import pdf_pages
from builders.retest import PER_DOMAIN, other_shape, retest_world, validate

from explainer.errors import CorpusError, HookpointError, InputError, ModelLoadError
from explainer.retest.run import RetestOptions, retest
from explainer.retest.summary import unit_domain
from explainer.runtime import get_store
from workers.cli import main


@pytest.fixture(scope="module")
def world(tiny_model, tiny_model_dir, tmp_path_factory):
    """(settings, old collection id, explained unit ids, paths of corpus, control and fine-tuned model, root)."""
    yield from retest_world(tiny_model, tiny_model_dir, tmp_path_factory)


def test_control_holds_everywhere(world):
    settings, cid, units, _, control, _, _ = world
    doc = retest(settings, cid, RetestOptions(model=str(control)), progress=False)
    validate(doc)
    s = doc["summary"]
    assert s["units"] == len(units) >= 8 and s["holds"] == len(units) and s["broken_share"] == 0.0
    assert doc["models"]["same_files"] and doc["corpus"]["same_as_old"]
    assert doc["collections"]["new"] != cid and doc["collections"]["old_on_corpus"] == cid
    for u in doc["units"]:
        assert u["new_unit_id"] == u["unit_id"].replace("tiny-llama/", "tiny-llama-control/")
        assert u["new"]["value"] == pytest.approx(u["old"]["value"], abs=1e-6)
        assert u["drift"]["max"]["ratio"] == pytest.approx(1.0, abs=1e-5) and "evidence" not in u
        [score] = u["explanations"][0]["scores"]
        assert score["old_source"] == "stored" and score["verdict"] == "holds"
    new_sha = doc["models"]["new"]["files"][0]["sha256"]
    assert new_sha == doc["models"]["old"]["files"][0]["sha256"] and len(new_sha) == 64
    # every unit of the hookpoint, explained or not: the same weights move nothing
    whole = doc["hookpoint_by_domain"]
    assert set(whole) == {"code", "legal"} and sum(d["units"] for d in whole.values()) > len(units)
    assert all(d["mean_shift"] == pytest.approx(0.0, abs=1e-5) and d["dead_now"] == 0 for d in whole.values())


def test_fine_tuned_domain_moves_most(world, tmp_path):
    settings, cid, units, _, _, tuned, _ = world
    doc = retest(settings, cid, RetestOptions(model=str(tuned)), progress=False)
    validate(doc)
    assert not doc["models"]["same_files"] and doc["summary"]["units"] == len(units)
    drops = [u["drop"] for u in doc["units"]]
    assert drops == sorted(drops, reverse=True)  # largest drops first
    dom = doc["by_domain"]
    # a fine-tune on legal text moves the activations of the units that fire on legal text most
    # (measured: mean |log2 max ratio| 0.38 for legal units against 0.23 for code units)
    assert dom["legal"]["units"] == dom["code"]["units"] == PER_DOMAIN
    assert dom["legal"]["mean_shift"] > dom["code"]["mean_shift"] > 0
    for u in doc["units"]:
        assert u["verdict"] in ("holds", "weakened", "broken", "dead")
        assert ("evidence" in u) == (u["verdict"] != "holds")
    # the whole hookpoint, computed again here from the two collections' records
    store = get_store(settings)
    old_recs = [r for _, r in store.get_records([r["unit_id"] for r in store.unit_rows(cid, False)], cid).values()]
    new_max = {r["idx"]: r["max_act"] for r in store.unit_rows(doc["collections"]["new"], False)}
    expected: dict[str, list[float]] = {}
    for r in old_recs:
        if r.stats.max > 0 and new_max[r.index] > 0:
            expected.setdefault(unit_domain(r), []).append(abs(math.log2(new_max[r.index] / r.stats.max)))
    whole = doc["hookpoint_by_domain"]
    assert {d: whole[d]["units"] - whole[d]["dead_now"] for d in whole} == {d: len(v) for d, v in expected.items()}
    for d, shifts in expected.items():
        assert whole[d]["mean_shift"] == pytest.approx(sum(shifts) / len(shifts), rel=1e-9)
        assert whole[d]["median_shift"] == pytest.approx(statistics.median(shifts), rel=1e-9)
    assert whole["legal"]["mean_shift"] > 0 and whole["code"]["mean_shift"] > 0
    # the drift report in the four formats
    for fmt in ("json", "md", "html", "pdf"):
        from explainer.retest.report import write_drift_report

        write_drift_report(doc, tmp_path / f"drift.{fmt}", secrets=())
    md = (tmp_path / "drift.md").read_text()
    assert doc["units"][0]["unit_id"] in md and doc["models"]["new"]["files"][0]["sha256"] in md
    assert "Every unit of the hookpoint" in md and f"| legal | {whole['legal']['units']} |" in md
    assert "Every unit of the hookpoint" in (tmp_path / "drift.html").read_text()
    assert json.loads((tmp_path / "drift.json").read_text())["schema_version"] == 1
    assert "<table>" in (tmp_path / "drift.html").read_text()
    _, texts = pdf_pages((tmp_path / "drift.pdf").read_bytes())
    pdf_text = " ".join(texts)
    assert "Re-test of" in pdf_text and doc["units"][0]["unit_id"] in pdf_text.replace("\n", "")


def test_cli_gate_exit_status_and_reports(world, tmp_path, capsys):
    settings, cid, units, _, control, _, _ = world
    out = tmp_path / "drift.json"
    code = main(["retest", "--from", cid, "--model", str(control), "--fail-if", "broken>5%", "-o", str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["gate"] == {"rules": ["broken>5%"], "failed": []}
    assert json.loads(out.read_text())["summary"]["units"] == len(units)
    code = main(["retest", "--from", cid, "--model", str(control), "--fail-if", "holds>=100%", "--fail-if", "dead>0"])
    text = capsys.readouterr().out
    assert code == 1 and "Gate holds>=100%, dead>0: FAILED (holds>=100%)" in text
    code = main(["retest", "--from", cid, "--model", str(control), "--fail-if", "borked>5%"])
    assert code == 2 and "the verdict must be one of" in capsys.readouterr().err
    code = main(["retest", "--from", "nope", "--model", str(control)])
    assert code == 2 and "unknown run or collection id 'nope'" in capsys.readouterr().err


class FakeBackend:
    """Records what ``--relabel`` asks to label (the labeling run itself is tested elsewhere)."""

    def __init__(self):
        self.calls = []

    def label_units(self, settings, collection_id, unit_ids, opts, progress=True):
        from explainer.pipeline.backend import BatchResult

        self.calls.append((collection_id, list(unit_ids), opts.scorers))
        return BatchResult("run-1", list(unit_ids), {}, 0.1, submitted=len(unit_ids))


def test_relabel_sends_the_broken_units_of_the_new_collection(world, capsys):
    settings, cid, _, _, _, tuned, _ = world
    from explainer.cli.main import main as cli_main

    backend = FakeBackend()
    code = cli_main(["retest", "--from", cid, "--model", str(tuned), "--relabel", "--json"], backend=backend)
    doc = json.loads(capsys.readouterr().out)
    broken = [u["new_unit_id"] for u in doc["units"] if u["verdict"] == "broken" and u["new_skip_reason"] is None]
    assert code == 0
    if broken:
        [(new_cid, sent, scorers)] = backend.calls
        assert new_cid == doc["collections"]["new"] and sorted(sent) == sorted(broken)
        assert doc["relabel"]["run_id"] == "run-1" and doc["relabel"]["submitted"] == len(broken)
    else:
        assert backend.calls == [] and doc["relabel"]["units"] == 0


def test_bad_input_fails_before_anything_is_collected(world, tiny_model, smol_tokenizer, tmp_path):
    settings, cid, _, corpus, control, _, root = world
    store = get_store(settings)
    before = len(store.collection_summaries(limit=1000))
    narrow_dir = other_shape(smol_tokenizer, tmp_path / "tiny-llama-narrow", intermediate_size=96)
    with pytest.raises(HookpointError, match=r"layers.1.mlp is 96 wide, but the old collection \w+ has 128"):
        retest(settings, cid, RetestOptions(model=str(narrow_dir)), progress=False)
    with pytest.raises(HookpointError):
        retest(settings, cid, RetestOptions(model=str(other_shape(smol_tokenizer, tmp_path / "s", layers=1))))
    with pytest.raises(ModelLoadError, match="unknown model"):
        retest(settings, cid, RetestOptions(model=str(tmp_path / "missing")), progress=False)
    broken_dir = tmp_path / "garbled"
    broken_dir.mkdir()
    (broken_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model 'garbled'"):
        retest(settings, cid, RetestOptions(model=str(broken_dir)), progress=False)
    assert len(store.collection_summaries(limit=1000)) == before

    # the old corpus file is gone: the error names it, and --corpus gives the text again
    moved = root / "moved.jsonl"
    corpus.rename(moved)
    try:
        with pytest.raises(CorpusError, match=f"{corpus}, is no longer available: give .* --corpus"):
            retest(settings, cid, RetestOptions(model=str(control)), progress=False)
        doc = retest(settings, cid, RetestOptions(model=str(control), corpus=str(moved)), progress=False)
    finally:
        moved.rename(corpus)
    assert doc["corpus"]["same_as_old"] and doc["summary"]["broken"] == 0


def test_another_checkpoint_under_a_collected_name_is_refused(world, tmp_path, capsys):
    settings, cid, _, _, control, tuned, _ = world
    retest(settings, cid, RetestOptions(model=str(control)), progress=False)  # collects (or reuses) the control
    impostor = tmp_path / "elsewhere" / control.name
    impostor.mkdir(parents=True)
    for f in tuned.iterdir():
        (impostor / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InputError, match="a collection of another checkpoint named 'tiny-llama-control' is stored"):
        retest(settings, cid, RetestOptions(model=str(impostor)), progress=False)
    code = main(["retest", "--from", cid, "--model", str(control), "-o", str(tmp_path / "drift.docx")])
    assert code == 2 and "the suffix must be one of .json, .md, .html, .pdf" in capsys.readouterr().err


def test_intervention_scorers_steer_the_old_and_the_new_unit(world, tiny_model_dir, monkeypatch):
    """An intervention scorer needs the unit, not its windows: the old unit is steered on the old
    model and the new unit on the new one (here the control, so every figure is the same)."""
    from explainer.intervene.service import load_unit
    from explainer.retest.run import _Scoring
    from explainer.score.intervention import InterventionConfig, InterventionScorer

    settings, cid, units, _, control, _, _ = world
    steered: list[str] = []

    def load(unit_id):
        steered.append(unit_id)
        return load_unit(settings, unit_id)

    cheap = InterventionConfig(target_kl=0.01, tolerance=0.002, n_prompts=2, new_tokens=3, n_boot=50)
    scorer = InterventionScorer(load, "logprob", judge_model=str(tiny_model_dir), config=cheap)
    monkeypatch.setattr(_Scoring, "scorer", lambda self, name: scorer)
    doc = retest(settings, cid, RetestOptions(model=str(control), scorers=("intervention",)), progress=False)
    assert doc["summary"]["units"] == len(units) and doc["summary"]["failed"] == 0
    assert sorted(steered) == sorted([*units, *(u.replace("tiny-llama/", "tiny-llama-control/") for u in units)])
    for u in doc["units"]:
        [score] = u["explanations"][0]["scores"]
        assert score["status"] == "ok" and score["old_source"] == "recomputed"
        assert score["new"]["value"] == pytest.approx(score["old"]["value"], abs=1e-6) and score["verdict"] == "holds"
