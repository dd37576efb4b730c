"""A SmolLM2 collection re-tested on another architecture (slow): Gemma 3 270M's MLP is 2048 wide,
SmolLM2's 1536, so the units cannot be matched — one line says so before anything is collected."""

import pytest
from builders.collect import gemma3_gguf
from builders.intervene import explain

from explainer.collect.collector import CollectConfig
from explainer.pipeline.collection import collect_stage
from explainer.runtime import get_store
from workers.cli import main

pytestmark = pytest.mark.slow

CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=200, batch_size=4, n_quantiles=2)


def test_smollm2_collection_on_gemma3_is_refused_before_anything_runs(settings, capsys):
    gemma = gemma3_gguf()
    cid = collect_stage(settings, "smollm2-135m", "layers.3.mlp", None, CFG, progress=False)
    store = get_store(settings)
    uid = store.unit_rows(cid, live_only=True)[0]["unit_id"]
    explain(store, cid, uid, "the token 'the'")
    before = len(store.collection_summaries(limit=1000))
    assert main(["retest", "--from", cid, "--model", str(gemma), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"hookpoint layers.3.mlp is 2048 wide, but the old collection {cid} has 1536" in err
    assert len(store.collection_summaries(limit=1000)) == before
