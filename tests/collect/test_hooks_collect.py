"""Hookpoints on the tiny random LLaMA: names, widths, the captured tensors, the stop, and
the translation of SAE libraries' hook names. Collection itself: tests/collect/test_collect.py."""

import pytest
import torch

from explainer.collect.hooks import capture, from_sparsify, from_transformer_lens, resolve_hookpoint
from explainer.errors import HookpointError

# -- resolve_hookpoint --------------------------------------------------------------------


def test_resolve_mlp_hookpoint(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.2.mlp")
    assert (hp.name, hp.layer, hp.kind, hp.width) == ("layers.2.mlp", 2, "mlp", 128)


def test_resolve_residual_hookpoint(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.2")
    assert (hp.name, hp.layer, hp.kind, hp.width) == ("layers.2", 2, "resid", 64)


def test_resolve_last_layer(tiny_model):
    assert resolve_hookpoint(tiny_model.model, "layers.3.mlp").layer == 3
    assert resolve_hookpoint(tiny_model.model, "layers.3").layer == 3


@pytest.mark.parametrize(
    "name",
    ["layers.9", "layers.4", "layers.4.mlp", "blocks.2.hook_resid_post", "foo", "layers.2.attn", "layers.-1", ""],
)
def test_resolve_rejects_unknown_names_and_lists_valid_ones(tiny_model, name):
    with pytest.raises(HookpointError, match=r"layers\.0\.mlp") as info:
        resolve_hookpoint(tiny_model.model, name)
    msg = str(info.value)
    assert repr(name) in msg
    assert "layers.3.mlp" in msg and "layers.3 " in msg  # the last valid names of a 4-layer model


# -- capture ------------------------------------------------------------------------------


def _batch(tok, texts):
    """Right-padded batch with a leading BOS, like collect() builds it."""
    rows = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


TEXTS = ["def f(x):\n    return x + 1", "The quick brown fox jumps over the lazy dog."]


def test_capture_mlp_equals_gated_product_of_the_mlp_input(tiny_model):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    mlp = model.model.layers[1].mlp
    seen = []
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        acts = capture(model, resolve_hookpoint(model, "layers.1.mlp"), ids, mask)
    finally:
        handle.remove()
    assert len(seen) == 1
    x = seen[0]
    with torch.no_grad():
        expected = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    assert acts.shape == (2, ids.shape[1], 128)
    assert acts.dtype == torch.float32
    torch.testing.assert_close(acts, expected, atol=1e-5, rtol=0)
    assert acts.abs().max() > 1e-3  # not trivially zero


def test_capture_residual_equals_hidden_states_of_full_model(tiny_model):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    acts = capture(model, resolve_hookpoint(model, "layers.1"), ids, mask)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    assert acts.shape == (2, ids.shape[1], 64)
    torch.testing.assert_close(acts, hidden[2], atol=1e-5, rtol=0)
    # and not the input of the block or the output of the next one
    assert (acts - hidden[1]).abs().max() > 1e-3
    assert (acts - hidden[3]).abs().max() > 1e-3


@pytest.mark.parametrize("name, down_proj_calls", [("layers.1.mlp", 0), ("layers.1", 1)])
def test_capture_stops_the_forward_pass_and_removes_its_hook(tiny_model, name, down_proj_calls):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    calls = {"layer2": 0, "layer3": 0, "norm": 0, "lm_head": 0, "down_proj1": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1

        return hook

    handles = [
        model.model.layers[2].register_forward_hook(counter("layer2")),
        model.model.layers[3].register_forward_hook(counter("layer3")),
        model.model.norm.register_forward_hook(counter("norm")),
        model.lm_head.register_forward_hook(counter("lm_head")),
        model.model.layers[1].mlp.down_proj.register_forward_hook(counter("down_proj1")),
    ]
    down_proj, block = model.model.layers[1].mlp.down_proj, model.model.layers[1]
    before = (len(down_proj._forward_pre_hooks), len(block._forward_hooks))
    try:
        capture(model, resolve_hookpoint(model, name), ids, mask)
        # capture removed its own hook (transformers may keep hooks of its own there)
        assert (len(down_proj._forward_pre_hooks), len(block._forward_hooks)) == before
        # the MLP hookpoint stops before its own down_proj; the residual one after the whole block
        assert calls == {"layer2": 0, "layer3": 0, "norm": 0, "lm_head": 0, "down_proj1": down_proj_calls}
        # sanity check of the counters: a full forward pass does call them
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        assert calls == {"layer2": 1, "layer3": 1, "norm": 1, "lm_head": 1, "down_proj1": down_proj_calls + 1}
    finally:
        for h in handles:
            h.remove()


# -- other hookpoint kinds ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind", [("layers.2.mlp_in", "mlp_in"), ("layers.2.mlp_out", "mlp_out"), ("layers.2.attn_out", "attn_out")]
)
def test_resolve_module_io_hookpoints(tiny_model, name, kind):
    hp = resolve_hookpoint(tiny_model.model, name)
    assert (hp.name, hp.layer, hp.kind, hp.width) == (name, 2, kind, 64)


def test_capture_module_io_equals_the_modules_own_tensors(tiny_model):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    block = model.model.layers[2]
    seen = {}
    handles = [
        block.mlp.register_forward_pre_hook(lambda _m, args: seen.__setitem__("mlp_in", args[0].detach().clone())),
        block.mlp.register_forward_hook(lambda _m, _a, out: seen.__setitem__("mlp_out", out.detach().clone())),
        block.self_attn.register_forward_hook(
            lambda _m, _a, out: seen.__setitem__("attn_out", out[0].detach().clone())
        ),
    ]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for kind in ("mlp_in", "mlp_out", "attn_out"):
        acts = capture(model, resolve_hookpoint(model, f"layers.2.{kind}"), ids, mask)
        assert acts.shape == (2, ids.shape[1], 64)
        torch.testing.assert_close(acts, seen[kind], atol=1e-5, rtol=0)
    # the three are different tensors
    assert (seen["mlp_in"] - seen["mlp_out"]).abs().max() > 1e-3
    assert (seen["attn_out"] - seen["mlp_in"]).abs().max() > 1e-3


# -- names of SAE libraries ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tl, ours",
    [
        ("blocks.12.hook_resid_post", "layers.12"),
        ("blocks.12.hook_resid_pre", "layers.11"),
        ("blocks.12.mlp.hook_post", "layers.12.mlp"),
        ("blocks.12.hook_mlp_out", "layers.12.mlp_out"),
        ("blocks.12.hook_attn_out", "layers.12.attn_out"),
        ("blocks.12.ln2.hook_normalized", "layers.12.mlp_in"),
        ("layers.3.mlp", "layers.3.mlp"),
        ("layers.3", "layers.3"),
    ],
)
def test_transformer_lens_names_map_to_our_hookpoints(tl, ours):
    assert from_transformer_lens(tl) == ours


@pytest.mark.parametrize(
    "name", ["blocks.0.hook_resid_pre", "blocks.3.attn.hook_z", "hook_embed", "blocks.x.hook_resid_post"]
)
def test_unsupported_transformer_lens_names_list_the_mapping(name):
    with pytest.raises(HookpointError, match="blocks.L.hook_resid_post → layers.L|embeddings"):
        from_transformer_lens(name)


@pytest.mark.parametrize(
    "name, transcode, ours",
    [
        ("layers.12", False, "layers.12"),
        ("layers.12.mlp", False, "layers.12.mlp_out"),
        ("layers.12.mlp", True, "layers.12.mlp_in"),
        ("layers.12.self_attn", False, "layers.12.attn_out"),
        ("layers.12.mlp.down_proj", False, "layers.12.mlp_out"),
        ("layers.12.mlp.down_proj", True, "layers.12.mlp"),
        ("model.layers.4", False, "layers.4"),
        ("h.4.mlp", False, "layers.4.mlp_out"),
    ],
)
def test_sparsify_names_map_to_our_hookpoints(name, transcode, ours):
    assert from_sparsify(name, transcode) == ours


@pytest.mark.parametrize(
    "name, transcode", [("layers.12", True), ("embed_tokens", False), ("layers.12.mlp.act_fn", False)]
)
def test_unsupported_sparsify_names_list_the_mapping(name, transcode):
    with pytest.raises(HookpointError, match=r"layers\.L\.mlp → layers\.L\.mlp_out") as info:
        from_sparsify(name, transcode)
    assert repr(name) in str(info.value)


def test_mapped_names_resolve_on_the_model(tiny_model):
    for tl in ("blocks.3.hook_resid_post", "blocks.1.mlp.hook_post", "blocks.0.hook_mlp_out"):
        hp = resolve_hookpoint(tiny_model.model, from_transformer_lens(tl))
        assert hp.name == from_transformer_lens(tl)


# -- GPT-2-style MLPs ---------------------------------------------------------------------


def test_gpt2_style_mlp_neurons_are_the_activation_output(tiny_model):
    from transformers import GPT2Config, GPT2LMHeadModel

    from explainer.collect.collector import CollectConfig, collect
    from explainer.collect.models import LoadedModel
    from store.records import Document

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tiny_model.tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    ).eval()
    hp = resolve_hookpoint(model, "layers.1.mlp")
    assert (hp.kind, hp.width) == ("mlp", 128)  # n_inner = 4 × n_embd
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    seen = []
    mlp = model.transformer.h[1].mlp
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        acts = capture(model, hp, ids, mask)
    finally:
        handle.remove()
    with torch.no_grad():
        expected = mlp.act(mlp.c_fc(seen[0]))
    torch.testing.assert_close(acts, expected, atol=1e-5, rtol=0)
    for kind in ("mlp_in", "mlp_out", "attn_out", ""):
        name = f"layers.1.{kind}" if kind else "layers.1"
        assert capture(model, resolve_hookpoint(model, name), ids, mask).shape == (2, ids.shape[1], 32)
    docs = [Document("d:1", "docs", " ".join(TEXTS * 6))]
    records = collect(
        LoadedModel("gpt2-tiny", model, tiny_model.tokenizer, "cpu"),
        hp,
        docs,
        CollectConfig(window=8, context=16, top_k=2, n_random=1, n_quantiles=2),
        progress=False,
    )
    assert len(records) == 128 and records[0].unit_id == "gpt2-tiny/layers.1.mlp/0"
