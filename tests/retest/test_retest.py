"""Re-test through the real pipeline on real checkpoints: the tiny random LLaMA is collected over a
two-domain corpus (code and legal text from the default corpus), a dozen units are explained with the
no-LLM baseline and scored with the real embedding scorer; then the same weights saved again (the
control) and a copy fine-tuned on the legal domain are re-tested."""

from __future__ import annotations

import html
import json
import math
import statistics

import pytest
from builders.report import pdf_pages
from builders.retest import PER_DOMAIN, other_shape, permuted_neurons, retest_world, validate

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
    # read in chunks (a 65k-feature SAE would exceed the SQL parameter limit in one query): same figures
    from explainer.retest import run as retest_run

    mp = pytest.MonkeyPatch()
    mp.setattr(retest_run, "HOOKPOINT_CHUNK", 7)
    try:
        chunked = retest_run._hookpoint_moves(store, cid, doc["collections"]["new"])
        assert chunked.keys() == whole.keys()
        for d in whole:  # the same units; sums in another order
            assert chunked[d] == pytest.approx(whole[d], rel=1e-12)
    finally:
        mp.undo()
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


def test_relabel_re_explains_the_broken_units_of_the_new_collection(world, tiny_model, fake_endpoint, tmp_path, capsys):
    """A checkpoint whose layer-1 MLP neurons are permuted computes the same function, but every unit
    index names another neuron: explanations break. ``--relabel`` re-explains the broken units of the
    new collection as a labeling run (the embedded Celery worker, the fake endpoint as explainer);
    the same command again finds that run and adds nothing. The drift reports show old and new top
    windows of a broken unit side by side."""
    settings, cid, units, _, _, _, root = world
    permuted = permuted_neurons(tiny_model.model, tiny_model.tokenizer, root / "models" / "tiny-llama-permuted")
    server = fake_endpoint()
    md, page = tmp_path / "drift.md", tmp_path / "drift.html"
    argv = ["retest", "--from", cid, "--model", str(permuted), "--relabel", "--scorer", "simulation-embedding"]
    argv += ["--explainer-base-url", server.base_url, "--explainer-model", "fake", "-o", str(md), "-o", str(page)]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    validate({k: v for k, v in doc.items() if k != "written"})
    new_cid = doc["collections"]["new"]
    broken = [u for u in doc["units"] if u["verdict"] == "broken"]
    assert broken and doc["summary"]["broken"] == len(broken) and all(u["new_skip_reason"] is None for u in broken)
    sent = sorted(u["new_unit_id"] for u in broken)
    assert all(uid.startswith("tiny-llama-permuted/layers.1.mlp/") for uid in sent)
    assert not set(sent) & set(units)  # the units of the new model, not the old ones

    relabel = doc["relabel"]
    assert relabel["unit_ids"] == sent and relabel["submitted"] == len(sent) and relabel["task_errors"] == 0
    assert relabel["counts"]["done"] == len(sent) and relabel["counts"]["failed"] == 0
    store = get_store(settings)
    from store import runs

    run = runs.run_detail(store, relabel["run_id"])
    assert run is not None and run["collection_id"] == new_cid and run["status"] == "done"
    assert run["explainer_model"] == "fake" and run["simulator"] == ["simulation-embedding"]
    assert list(runs.unit_states(store, relabel["run_id"])) == [(uid, "done") for uid in sent]
    new_expls = store.explanations_for(sent, new_cid)
    assert sorted(e.unit_id for e in new_expls) == sent
    assert all(e.status == "ok" and e.text and e.explainer_model == "fake" for e in new_expls)
    scores = store.scores_for([e.id for e in new_expls])
    assert {(s.explanation_id, s.scorer, s.status) for s in scores} == {
        (e.id, "simulation-embedding", "ok") for e in new_expls
    }
    calls = len(server.requests)

    # the same command again: the same run, nothing explained twice, no call to the explainer; the
    # people's output names the run
    assert main(argv) == 0
    n = len(sent)
    assert (
        f"relabel: run {relabel['run_id']} re-explains {n} broken unit(s): {n} done, 0 failed, 0 pending "
        f"({n} finished before, 0 sent now, 0 task error(s))"
    ) in capsys.readouterr().out
    assert sorted(e.id for e in store.explanations_for(sent, new_cid)) == sorted(e.id for e in new_expls)
    assert len(server.requests) == calls

    # the drift reports: each broken unit's old and new top windows, side by side
    md_text, html_text = md.read_text(), page.read_text()
    for u in broken:
        assert f"## `{u['unit_id']}` — broken" in md_text
        assert f"<h2><code>{u['unit_id']}</code> — broken</h2>" in html_text
        for side in ("old", "new"):
            assert u["evidence"][side]
            for w in u["evidence"][side]:
                assert f"- ({w['domain']}, max {w['max']:.3g}) {w['text']}" in md_text
                assert html.escape(w["text"]) in html_text
    assert md_text.count("Old model, top windows:") == md_text.count("New model, top windows:") >= len(broken)
    assert html_text.count("<b>old model</b>") == html_text.count("<b>new model</b>") >= len(broken)


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
