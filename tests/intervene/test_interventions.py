"""Interventions checked exactly on the tiny random LLaMA: a clamped neuron reads back its value at
the hook, an added SAE direction moves the residual by exactly strength × decoder row, ablating a
whole MLP layer equals skipping its contribution, several units compose, and bad input is refused."""

import json
import math

import pytest
import torch
from builders.audit import write_sae
from safetensors.torch import save_file

from explainer.collect.hooks import capture, decoder_layers, resolve_hookpoint
from explainer.errors import InterventionError, UnknownUnitError
from explainer.intervene import (
    Edit,
    bisect_strength,
    intervene,
    mean_kl,
    next_token_logprobs,
    resolve_unit,
    steer,
)

PROMPT = "def read(path):\n    with open(path) as f:"


def _ids(tiny_model, text=PROMPT):
    ids = tiny_model.tokenizer(text, return_tensors="pt")["input_ids"]
    return ids, torch.ones_like(ids)


def test_clamped_neuron_reads_back_the_clamped_value(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/17")
    hp = resolve_hookpoint(tiny_model.model, "layers.2.mlp")
    ids, mask = _ids(tiny_model)
    clean = capture(tiny_model.model, hp, ids, mask)
    with intervene(tiny_model.model, [Edit(target, "clamp", 3.25)]):
        edited = capture(tiny_model.model, hp, ids, mask)
    assert torch.all(edited[..., 17] == 3.25)
    others = [i for i in range(hp.width) if i != 17]
    torch.testing.assert_close(edited[..., others], clean[..., others], rtol=0, atol=0)
    with intervene(tiny_model.model, [Edit(target, "scale", -2.0)]):
        scaled = capture(tiny_model.model, hp, ids, mask)
    torch.testing.assert_close(scaled[..., 17], -2.0 * clean[..., 17])
    # the hooks are gone after the block
    torch.testing.assert_close(capture(tiny_model.model, hp, ids, mask), clean, rtol=0, atol=0)


def test_added_sae_feature_moves_the_residual_by_strength_times_decoder_row(tiny_model, tmp_path):
    w = write_sae(tmp_path / "sae")
    target = resolve_unit(tiny_model, "tiny-llama/layers.1.sae-sae-abcdef/5", sae=str(tmp_path / "sae"))
    assert target.kind == "feature" and target.write_at.name == "layers.1"
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    ids, mask = _ids(tiny_model)
    clean = capture(tiny_model.model, hp, ids, mask)
    with intervene(tiny_model.model, [Edit(target, "add", 2.5)]):
        steered = capture(tiny_model.model, hp, ids, mask)
    torch.testing.assert_close(steered - clean, (2.5 * w["W_dec"][5]).expand_as(clean), atol=1e-5, rtol=0)


def test_clamped_sae_feature_keeps_the_reconstruction_error(tiny_model, tmp_path):
    w = write_sae(tmp_path / "sae")
    target = resolve_unit(tiny_model, "tiny-llama/layers.1.sae-sae-abcdef/7", sae=str(tmp_path / "sae"))
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    ids, mask = _ids(tiny_model)
    clean = capture(tiny_model.model, hp, ids, mask)
    f = target.read(clean)
    with intervene(tiny_model.model, [Edit(target, "clamp", 4.0)]):
        steered = capture(tiny_model.model, hp, ids, mask)
    # x' = decode(f with f_7 = 4) + (x - decode(f)): the change is (4 - f_7) W_dec[7]
    torch.testing.assert_close(steered - clean, (4.0 - f).unsqueeze(-1) * w["W_dec"][7], atol=1e-5, rtol=0)


def test_ablating_every_neuron_of_a_layer_equals_skipping_its_mlp(tiny_model):
    layer = 2
    width = resolve_hookpoint(tiny_model.model, f"layers.{layer}.mlp").width
    edits = [Edit(resolve_unit(tiny_model, f"tiny-llama/layers.{layer}.mlp/{i}"), "ablate") for i in range(width)]
    ids, mask = _ids(tiny_model)
    with torch.no_grad(), intervene(tiny_model.model, edits):
        ablated = tiny_model.model(input_ids=ids, use_cache=False).logits
    mlp = decoder_layers(tiny_model.model)[layer].mlp
    handle = mlp.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            skipped = tiny_model.model(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()
    torch.testing.assert_close(ablated, skipped, atol=1e-5, rtol=0)
    with torch.no_grad():
        clean = tiny_model.model(input_ids=ids, use_cache=False).logits
    assert (clean - skipped).abs().max() > 1e-3  # the MLP did contribute


def test_direction_add_and_mean_ablation(tiny_model, tmp_path):
    v = torch.randn(3, 64)
    save_file({"directions": v}, tmp_path / "d.safetensors", metadata={"hookpoint": "layers.2"})
    target = resolve_unit(
        tiny_model, "tiny-llama/layers.2.dir-d-123456/1", directions=str(tmp_path / "d.safetensors"), mean=0.5
    )
    hp = resolve_hookpoint(tiny_model.model, "layers.2")
    ids, mask = _ids(tiny_model)
    clean = capture(tiny_model.model, hp, ids, mask)
    unit = v[1] / v[1].norm()
    with intervene(tiny_model.model, [Edit(target, "add", 1.5)]):
        steered = capture(tiny_model.model, hp, ids, mask)
    torch.testing.assert_close(steered - clean, (1.5 * unit).expand_as(clean), atol=1e-5, rtol=0)
    with intervene(tiny_model.model, [Edit(target, "ablate", ablate_to="mean")]):
        ablated = capture(tiny_model.model, hp, ids, mask)
    torch.testing.assert_close(ablated @ unit, torch.full(clean.shape[:-1], 0.5), atol=1e-5, rtol=0)


def test_steer_reports_kl_token_changes_and_continuations(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.3/4")
    nothing = steer(tiny_model, PROMPT, [Edit(target, "add", 0.0)], max_new_tokens=5)
    assert nothing.kl == pytest.approx(0.0, abs=1e-6) and nothing.clean == nothing.steered
    big = steer(tiny_model, PROMPT, [Edit(target, "add", 50.0)], max_new_tokens=5, k=3)
    assert big.kl > 0.01
    assert len(big.risen) == 3 and all(t.p_steered > t.p_clean for t in big.risen)
    assert all(t.p_steered < t.p_clean for t in big.fallen)


def test_bisection_reaches_the_target_kl_or_says_why(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.3/4")
    prompts = ["The weather today", "Once upon a time"]

    def edits(s):
        return [Edit(target, "add", s)]

    cal = bisect_strength(tiny_model, edits, prompts, target_kl=0.01, tolerance=0.002)
    assert abs(cal.kl - 0.01) <= 0.002
    assert mean_kl(tiny_model, prompts, edits(cal.strength)) == pytest.approx(cal.kl, abs=1e-6)
    with pytest.raises(InterventionError, match="no strength up to"):
        bisect_strength(tiny_model, edits, prompts, target_kl=50.0, max_strength=8.0)


@pytest.mark.parametrize("strength", [math.nan, math.inf, -math.inf, 1e9])
def test_bad_strengths_are_refused(tiny_model, strength):
    target = resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/3")
    with pytest.raises(InterventionError, match="strength"):
        next_token_logprobs(tiny_model, [PROMPT], [Edit(target, "add", strength)])


def test_bad_units_and_prompts_are_refused(tiny_model):
    with pytest.raises(UnknownUnitError):
        resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/100000")
    with pytest.raises(InterventionError, match="belongs to model"):
        resolve_unit(tiny_model, "other-model/layers.2.mlp/1")
    with pytest.raises(InterventionError, match="malformed"):
        resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/x")
    with pytest.raises(InterventionError, match="SAE folder"):
        resolve_unit(tiny_model, "tiny-llama/layers.1.sae-x-abcdef/1")
    target = resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/3")
    with pytest.raises(InterventionError, match="empty"):
        steer(tiny_model, "   ", [Edit(target, "add", 1.0)])
    with pytest.raises(InterventionError, match="mean activation"):
        next_token_logprobs(tiny_model, [PROMPT], [Edit(target, "ablate", ablate_to="mean")])


def _write_transcoder(path, d=64, d_sae=96, layer=1):
    """A SAELens transcoder (6.x config) reading the MLP input of block ``layer``, writing its output."""
    torch.manual_seed(2)
    w = {
        "W_enc": torch.randn(d, d_sae) * 0.3,
        "b_enc": torch.rand(d_sae) * 0.2,  # positive: most features fire, so clamping has values to move
        "W_dec": torch.randn(d_sae, d),
        "b_dec": torch.randn(d) * 0.3,
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(w, path / "sae_weights.safetensors")
    cfg = {
        "architecture": "transcoder",
        "d_in": d,
        "d_sae": d_sae,
        "d_out": d,
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": {"hook_name": f"blocks.{layer}.ln2.hook_normalized"},
    }
    (path / "cfg.json").write_text(json.dumps(cfg))
    return w


def test_transcoder_feature_clamp_scale_and_ablate_change_the_mlp_output_by_the_decoder_row(tiny_model, tmp_path):
    """A transcoder feature is read at the MLP input and written at the MLP output: clamping it to c
    adds exactly (c − value) × W_dec[i] to the MLP output, with value the transcoder's encoding of
    that pass's MLP input (so its error term is kept); ablating equals clamping to 0, scaling by α
    equals clamping to α × value."""
    w = _write_transcoder(tmp_path / "tc")
    target = resolve_unit(tiny_model, "tiny-llama/layers.1.mlp_in.sae-tc-abcdef/5", sae=str(tmp_path / "tc"))
    assert (target.read_at.name, target.write_at.name) == ("layers.1.mlp_in", "layers.1.mlp_out")
    mlp_in = resolve_hookpoint(tiny_model.model, "layers.1.mlp_in")
    mlp_out = resolve_hookpoint(tiny_model.model, "layers.1.mlp_out")
    ids, mask = _ids(tiny_model)
    clean, clean_in = capture(tiny_model.model, mlp_out, ids, mask), capture(tiny_model.model, mlp_in, ids, mask)
    value = target.read(clean_in)
    assert (value > 0).float().mean() > 0.5  # the feature fires on most tokens: the checks below move it

    def mlp_output(edit):
        with intervene(tiny_model.model, [edit]):
            return capture(tiny_model.model, mlp_out, ids, mask)

    row = w["W_dec"][5]
    clamped = mlp_output(Edit(target, "clamp", 3.0))
    torch.testing.assert_close(clamped - clean, (3.0 - value).unsqueeze(-1) * row, atol=1e-5, rtol=0)
    ablated = mlp_output(Edit(target, "ablate"))
    torch.testing.assert_close(ablated - clean, (-value).unsqueeze(-1) * row, atol=1e-5, rtol=0)
    torch.testing.assert_close(ablated, mlp_output(Edit(target, "clamp", 0.0)), atol=1e-6, rtol=0)
    scaled = mlp_output(Edit(target, "scale", -1.5))
    torch.testing.assert_close(scaled - clean, (-2.5 * value).unsqueeze(-1) * row, atol=1e-5, rtol=0)
    # the MLP input is untouched (the edit writes after the MLP), and the hooks are gone after the block
    with intervene(tiny_model.model, [Edit(target, "clamp", 3.0)]):
        torch.testing.assert_close(capture(tiny_model.model, mlp_in, ids, mask), clean_in, rtol=0, atol=0)
    torch.testing.assert_close(capture(tiny_model.model, mlp_out, ids, mask), clean, rtol=0, atol=0)
    # through generation too (one token per forward pass, with the KV cache)
    assert steer(tiny_model, PROMPT, [Edit(target, "clamp", 8.0)], max_new_tokens=3).kl > 0
