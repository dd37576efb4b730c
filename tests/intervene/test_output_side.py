"""Output-side descriptions (vocabulary projection) on the tiny LLaMA: the promoted tokens are those
whose unembedding rows, after the final norm's gain, align best with the unit's write direction; an
MLP neuron writes its down_proj column; `explainer show --output-side` prints them."""

from __future__ import annotations

import json

import torch
from builders.intervene import collect_tiny

from explainer.collect.hooks import decoder_layers
from explainer.intervene import resolve_unit
from explainer.intervene.output import vocab_projection
from explainer.intervene.units import write_direction
from workers.cli import main


def test_vocab_projection_of_a_neuron_is_its_down_proj_column_through_norm_and_head(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/9")
    col = decoder_layers(tiny_model.model)[2].mlp.down_proj.weight[:, 9]
    torch.testing.assert_close(write_direction(tiny_model, target), col)
    out = vocab_projection(tiny_model, target, k=5)
    logits = tiny_model.model.lm_head.weight @ (col / col.norm() * tiny_model.model.model.norm.weight)
    want = [tiny_model.tokenizer.decode([i]) for i in logits.topk(5).indices.tolist()]
    assert [t["token"] for t in out["promoted"]] == want
    assert [t["token"] for t in out["suppressed"]] == [
        tiny_model.tokenizer.decode([i]) for i in (-logits).topk(5).indices.tolist()
    ]
    assert out["promoted"][0]["logit"] > 0 > out["suppressed"][0]["logit"]


def test_residual_unit_writes_its_basis_vector(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.1/3")
    assert write_direction(tiny_model, target).nonzero().flatten().tolist() == [3]


def test_show_prints_the_output_side(settings, tiny_model_dir, tmp_path, capsys):
    unit = collect_tiny(settings, tiny_model_dir, tmp_path)[1][0]
    from explainer.runtime import get_store

    cid = get_store(settings).get_records([unit])[unit][0]
    get_store(settings).save_explanation(
        unit_id=unit,
        collection_id=cid,
        explainer_model="fake-llm",
        prompt_name="explain",
        prompt_version="1",
        prompt_hash="a" * 64,
        status="ok",
        text="sums",
        window_ids=["top-0"],
    )
    assert main(["show", unit, "--output-side", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["output_side"]["promoted"]) == 10 and out["output_side"]["method"] == "vocab-projection"
    assert main(["show", unit, "--output-side"]) == 0
    assert "promoted:" in capsys.readouterr().out
