"""The re-test world shared by the re-test tests: the tiny random LLaMA collected over a two-domain
corpus (code and legal text from the default corpus), a dozen units explained with the no-LLM
baseline and scored with the real embedding scorer; the same weights saved again (the control) and
a copy fine-tuned on the legal domain."""

from __future__ import annotations

import json

import pytest
from builders.retest import CFG, HOOK, PER_DOMAIN, fine_tuned, save_checkpoint

from explainer.collect.corpus import default_corpus
from explainer.explain.baseline import baseline_explanation
from explainer.pipeline.collection import collect_stage
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import score_stage
from explainer.retest.summary import unit_domain
from explainer.runtime import get_store
from explainer.settings import load_settings


@pytest.fixture(scope="module")
def world(tiny_model, tiny_model_dir, tmp_path_factory):
    """(settings, old collection id, explained unit ids, paths of corpus, control and fine-tuned model)."""
    root = tmp_path_factory.mktemp("retest")
    mp = pytest.MonkeyPatch()
    mp.setenv("EXPLAINER_DATA_DIR", str(root / "data"))
    mp.setenv("EXPLAINER_MODEL_CACHE", str(root / "cache"))
    settings = load_settings()
    docs = [d for d in default_corpus(6000) if d.domain in ("code", "legal")]
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"id": d.doc_id, "domain": d.domain, "text": d.text}) for d in docs), encoding="utf-8"
    )
    cid = collect_stage(settings, str(tiny_model_dir), HOOK, str(corpus), CFG, progress=False)
    store = get_store(settings)
    rows = sorted(store.unit_rows(cid), key=lambda r: -(r["max_act"] / (r["std_act"] + 1e-6)))
    chosen: dict[str, list[str]] = {"code": [], "legal": []}
    for r in rows:
        rec = store.get_record(r["unit_id"], cid)
        dom = unit_domain(rec)
        if dom in chosen and len(chosen[dom]) < PER_DOMAIN and baseline_explanation(rec):
            chosen[dom].append(r["unit_id"])
    units = chosen["code"] + chosen["legal"]
    for uid in units:
        eid = store.save_explanation(
            unit_id=uid,
            collection_id=cid,
            explainer_model="baseline",
            prompt_name="explain",
            prompt_version="1",
            prompt_hash="b" * 64,
            status="ok",
            text=baseline_explanation(store.get_record(uid, cid)),
            window_ids=["top-0", "top-2"],
        )
        score_stage(settings, eid, LabelOptions(scorers=("simulation-embedding",)))
    control = save_checkpoint(tiny_model.model, tiny_model.tokenizer, root / "models" / "tiny-llama-control")
    legal = [d.text for d in docs if d.domain == "legal"]
    tuned = fine_tuned(tiny_model.model, tiny_model.tokenizer, legal, steps=20, lr=3e-4)
    tuned_dir = save_checkpoint(tuned, tiny_model.tokenizer, root / "models" / "tiny-llama-legal")
    yield settings, cid, units, corpus, control, tuned_dir, root
    mp.undo()
