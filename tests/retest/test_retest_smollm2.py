"""Re-test on real checkpoints made from SmolLM2-135M (slow): the packaged model is collected at one
MLP layer over the default corpus and a few units per domain are explained (no-LLM baseline) and
scored (``simulation-embedding``); the fixture then writes two checkpoints as Hugging Face folders —
the same weights saved again (the control) and a copy whose blocks up to the hooked one are
fine-tuned on the legal domain of the default corpus — and the tests re-test both. The recipe is the
one ``bench/bench_retest.py`` runs by default. The control must hold everywhere. The fine-tune costs
5-20 minutes on this 2-core machine, so its tests run only with ``EXPLAINER_TEST_FINETUNE=1``. Which
domain moved most is read over every unit of the hookpoint (``hookpoint_by_domain``): three
explained units per domain are too few to tell (measured: their means put legal last or first from
one recipe to the next)."""

from __future__ import annotations

import os

import pytest
from builders.retest import fine_tuned, save_checkpoint, validate

from explainer.collect.collector import CollectConfig
from explainer.collect.corpus import default_corpus
from explainer.llm.chat import LLMConfig
from explainer.pipeline.collection import collect_stage, select_units
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import explain_stage, score_stage
from explainer.retest.run import RetestOptions, retest
from explainer.retest.summary import unit_domain
from explainer.runtime import get_store
from explainer.settings import load_settings

pytestmark = pytest.mark.slow

LAYER = 3
CFG = CollectConfig(window=16, context=32, top_k=6, n_random=3, max_tokens=3000, batch_size=8, n_quantiles=2)
DOMAINS = ("code", "docs", "legal")
PER_DOMAIN = 3
STEPS, LR = 120, 5e-4
"""The fine-tune: AdamW on blocks 0–3, 2 × 32 tokens of legal text a step (as bench_retest)."""


@pytest.fixture(scope="module")
def smol_world(tmp_path_factory):
    """(settings, old collection id, explained unit ids, control folder, the loaded packaged model)."""
    from explainer.collect.models import load_model

    root = tmp_path_factory.mktemp("retest-smollm2")
    mp = pytest.MonkeyPatch()
    mp.setenv("EXPLAINER_DATA_DIR", str(root / "data"))
    settings = load_settings()
    cid = collect_stage(settings, "smollm2-135m", f"layers.{LAYER}.mlp", None, CFG, progress=False)
    store = get_store(settings)
    chosen: dict[str, list[str]] = {d: [] for d in DOMAINS}
    for uid in select_units(settings, cid, None):
        dom = unit_domain(store.get_record(uid, cid))
        if dom in chosen and len(chosen[dom]) < PER_DOMAIN:
            chosen[dom].append(uid)
    units = [u for d in DOMAINS for u in chosen[d]]
    opts = LabelOptions(
        explainer=LLMConfig(model="baseline"), best_of=0, baseline_candidate=True, scorers=("simulation-embedding",)
    )
    for uid in units:
        score_stage(settings, explain_stage(settings, cid, uid, opts), opts)
    lm = load_model("smollm2-135m")
    control = save_checkpoint(lm.model, lm.tokenizer, root / "models" / "smollm2-135m-control")
    yield settings, cid, units, control, lm
    mp.undo()


@pytest.fixture(scope="module")
def tuned(smol_world, tmp_path_factory):
    """The control's weights fine-tuned on the legal domain, as a Hugging Face folder."""
    if os.environ.get("EXPLAINER_TEST_FINETUNE") != "1":
        pytest.skip(
            "the SmolLM2 fine-tune takes 3-20 min here (more under load): set EXPLAINER_TEST_FINETUNE=1 to run it"
        )
    from transformers import AutoModelForCausalLM

    _, _, _, control, lm = smol_world
    base = AutoModelForCausalLM.from_pretrained(control)  # the float32 weights, as a model that trains
    legal = [d.text for d in default_corpus() if d.domain == "legal"]
    model = fine_tuned(base, lm.tokenizer, legal, steps=STEPS, lr=LR, batch=2, up_to=LAYER)
    return save_checkpoint(model, lm.tokenizer, tmp_path_factory.mktemp("tuned") / "smollm2-135m-legal")


def test_control_holds_everywhere(smol_world):
    settings, cid, units, control, _ = smol_world
    assert len(units) == PER_DOMAIN * len(DOMAINS)
    doc = retest(settings, cid, RetestOptions(model=str(control)), progress=False)
    validate(doc)
    s = doc["summary"]
    # the same weights saved again: nothing may be reported broken, every activation is unchanged
    assert s["units"] == len(units) and s["broken"] == s["dead"] == s["failed"] == 0 and s["holds"] == len(units)
    assert all(u["drift"]["max"]["ratio"] == pytest.approx(1.0, abs=1e-4) for u in doc["units"])
    assert doc["models"]["same_files"] is False  # a float32 folder against the packaged GGUF
    whole = doc["hookpoint_by_domain"]  # every unit of the hookpoint, explained or not
    assert set(DOMAINS) <= set(whole) and all(d["mean_shift"] < 1e-3 and d["dead_now"] == 0 for d in whole.values())


def test_the_fine_tune_moves_units(smol_world, tuned):
    settings, cid, units, _, _ = smol_world
    doc = retest(settings, cid, RetestOptions(model=str(tuned)), progress=False)
    validate(doc)
    assert doc["summary"]["units"] == len(units) and doc["summary"]["failed"] == 0
    assert all(doc["by_domain"][d]["mean_shift"] > 0 for d in DOMAINS)  # every domain's units moved


def test_legal_units_move_most(smol_world, tuned):
    """Every unit of the hookpoint, by the domain of its old top windows: after a fine-tune on legal
    text the legal units' maxima moved most on average (measured 2026-12-03 with this recipe, which
    takes the legal text's loss from 2.29 to 0.93 and the code text's from 3.30 to 3.56: mean
    |log2 max ratio| legal 0.452, code 0.422, docs 0.419; the medians, 0.358, 0.348, 0.331, are too
    close to assert)."""
    settings, cid, _, _, _ = smol_world
    doc = retest(settings, cid, RetestOptions(model=str(tuned)), progress=False)
    whole = doc["hookpoint_by_domain"]
    assert set(DOMAINS) <= set(whole) and sum(whole[d]["units"] for d in DOMAINS) > 1000
    shift = {d: whole[d]["mean_shift"] for d in DOMAINS}
    assert shift["legal"] > max(shift["code"], shift["docs"]), shift
