"""SAEs and transcoders written by the real SAELens and sparsify libraries: our encodings equal
theirs to 1e-5 on the tiny model's activations, collection over features matches brute force,
and every kind of bad file is a clear SAEError raised before anything is written."""

import json

import pytest
import torch
from builders.collect import DOCS
from safetensors.torch import load_file, save_file

from explainer.collect.collector import CollectConfig, collect, make_sequences
from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.collect.sae import load_sae
from explainer.errors import SAEError

sae_lens = pytest.importorskip("sae_lens")
sparsify = pytest.importorskip("sparsify")
from sae_lens import SAE  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

D_IN, D_SAE, K = 64, 256, 8
CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=300, batch_size=4, n_quantiles=4)


def _saelens_classes():
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
        Transcoder,
        TranscoderConfig,
    )

    return {
        "standard": (StandardSAE, StandardSAEConfig, {}),
        "topk": (TopKSAE, TopKSAEConfig, {"k": K}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
        "gated": (GatedSAE, GatedSAEConfig, {}),
        "transcoder": (Transcoder, TranscoderConfig, {"d_out": D_IN, "apply_b_dec_to_input": False}),
        "jumprelu_transcoder": (
            JumpReLUTranscoder,
            JumpReLUTranscoderConfig,
            {"d_out": D_IN, "apply_b_dec_to_input": False},
        ),
    }


def make_saelens(path, arch="standard", hook="blocks.1.hook_resid_post", d_in=D_IN, **extra):
    """A SAELens SAE with random weights (non-zero biases and thresholds), saved with its own save_model."""
    cls, cfg_cls, kw = _saelens_classes()[arch]
    sae = cls(cfg_cls(d_in=d_in, d_sae=D_SAE, metadata=SAEMetadata(hook_name=hook), **{**kw, **extra}))
    with torch.no_grad():
        for _, p in sae.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand(D_SAE) * 0.3)
    sae.save_model(path)
    return sae


def make_sparsify(path, **cfg):
    from sparsify import SparseCoder, SparseCoderConfig

    coder = SparseCoder(D_IN, SparseCoderConfig(**{"num_latents": D_SAE, "k": K, **cfg}))
    with torch.no_grad():
        coder.encoder.bias.copy_(torch.randn(D_SAE) * 0.1)
        coder.b_dec.copy_(torch.randn(D_IN) * 0.3)
    coder.save_to_disk(path)
    return coder


def sparsify_dense(coder, x):
    out = coder.encode(x.reshape(-1, x.shape[-1]))
    dense = torch.zeros(out.top_acts.shape[0], coder.num_latents).scatter_(-1, out.top_indices, out.top_acts)
    return dense.reshape(*x.shape[:-1], -1)


@pytest.fixture(scope="module")
def acts(tiny_model):
    """Real activations of the tiny model: residual after block 1 and MLP input of block 1, [tokens, 64]."""
    tok = tiny_model.tokenizer
    ids = torch.tensor(
        [[tok.bos_token_id, *tok(DOCS[0].text + DOCS[1].text, add_special_tokens=False)["input_ids"][:120]]]
    )
    mask = torch.ones_like(ids)
    m = tiny_model.model
    return {name: capture(m, resolve_hookpoint(m, name), ids, mask)[0] for name in ("layers.1", "layers.1.mlp_in")}


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
def test_saelens_encodings_equal_the_librarys(tmp_path, acts, arch):
    theirs = make_saelens(tmp_path, arch)
    ours = load_sae(tmp_path)
    assert (ours.source, ours.architecture, ours.hookpoint, ours.d_in, ours.d_sae) == (
        "saelens",
        arch,
        "layers.1",
        D_IN,
        D_SAE,
    )
    x = acts["layers.1"]
    with torch.no_grad():
        want, reloaded = theirs.encode(x), SAE.load_from_disk(tmp_path).encode(x)
    got = ours.encode(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, reloaded, atol=1e-5, rtol=0)
    assert 0 < (got > 0).float().mean() < 1  # neither all dead nor all on
    if arch == "topk":
        assert int((got > 0).sum(-1).max()) <= K


@pytest.mark.parametrize("arch", ["transcoder", "jumprelu_transcoder"])
def test_saelens_transcoder_encoders_read_the_mlp_input(tmp_path, acts, arch):
    theirs = make_saelens(tmp_path, arch, hook="blocks.1.ln2.hook_normalized")
    ours = load_sae(tmp_path)
    assert ours.hookpoint == "layers.1.mlp_in"
    x = acts["layers.1.mlp_in"]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=0)


def test_saelens_layer_norm_and_no_b_dec_options(tmp_path, acts):
    theirs = make_saelens(tmp_path, "standard", normalize_activations="layer_norm", apply_b_dec_to_input=False)
    x = acts["layers.1"]
    with torch.no_grad():
        torch.testing.assert_close(load_sae(tmp_path).encode(x), theirs.encode(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "flat",
    [
        {"activation_fn_str": "relu"},
        {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": K}},
        {"architecture": "jumprelu", "activation_fn_str": "relu"},
    ],
)
def test_saelens_pre_6_flat_configs(tmp_path, acts, flat):
    """Files as SAELens < 6 wrote them: flat keys (hook_point, activation_fn_str), older jumprelu with log_threshold."""
    weights = {
        "W_enc": torch.randn(D_IN, D_SAE) * 0.3,
        "b_enc": torch.randn(D_SAE) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN),
        "b_dec": torch.randn(D_IN) * 0.3,
    }
    if flat.get("architecture") == "jumprelu":
        weights["log_threshold"] = torch.log(torch.rand(D_SAE) * 0.3 + 0.01)
    save_file(weights, tmp_path / "sae_weights.safetensors")
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_point": "blocks.1.hook_resid_post",
        "hook_point_layer": 1,
        "hook_point_head_index": None,
        "model_name": "tiny",
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "context_size": 128,
        **flat,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    ref = tmp_path
    if "log_threshold" in weights:  # SAELens 6 loads only `threshold` for inference: give it the same file with that
        ref = tmp_path / "ref"
        ref.mkdir()
        threshold = weights.pop("log_threshold").exp()
        save_file({**weights, "threshold": threshold}, ref / "sae_weights.safetensors")
        (ref / "cfg.json").write_text(json.dumps(cfg))
    ours = load_sae(tmp_path)
    assert ours.hookpoint == "layers.1"
    x = acts["layers.1"]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), SAE.load_from_disk(ref).encode(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["topk", "groupmax"])
def test_sparsify_encodings_equal_the_librarys(tmp_path, acts, activation):
    coder = make_sparsify(tmp_path / "layers.1", activation=activation)
    ours = load_sae(tmp_path / "layers.1")
    assert (ours.source, ours.hookpoint, ours.k, ours.d_sae) == ("sparsify", "layers.1", K, D_SAE)
    x = acts["layers.1"]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), sparsify_dense(coder, x), atol=1e-5, rtol=0)
        from sparsify import SparseCoder

        reloaded = SparseCoder.load_from_disk(tmp_path / "layers.1")
        torch.testing.assert_close(ours.encode(x), sparsify_dense(reloaded, x), atol=1e-5, rtol=0)


def test_sparsify_transcoder_and_folder_of_hookpoints(tmp_path, acts):
    make_sparsify(tmp_path / "layers.1")
    coder = make_sparsify(tmp_path / "layers.1.mlp", transcode=True)
    with pytest.raises(SAEError, match="several SAEs: layers.1, layers.1.mlp"):
        load_sae(tmp_path)
    assert load_sae(tmp_path, hookpoint="layers.1").hookpoint == "layers.1"
    tc = load_sae(tmp_path, hookpoint="layers.1.mlp")
    assert (tc.hookpoint, tc.architecture) == ("layers.1.mlp_in", "transcoder")
    x = acts["layers.1.mlp_in"]
    with torch.no_grad():
        torch.testing.assert_close(tc.encode(x), sparsify_dense(coder, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("library", ["saelens", "sparsify"])
def test_collect_sae_features_matches_brute_force_with_the_librarys_encoder(tiny_model, tmp_path, library):
    if library == "saelens":
        theirs = make_saelens(tmp_path, "topk")
        path, their_encode = tmp_path, theirs.encode
    else:
        coder = make_sparsify(tmp_path / "layers.1")
        path, their_encode = tmp_path / "layers.1", (lambda x: sparsify_dense(coder, x))
    sae = load_sae(path)
    hp = resolve_hookpoint(tiny_model.model, sae.hookpoint)
    records = collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=sae)
    assert len(records) == D_SAE
    assert records[0].hookpoint == f"layers.1.sae-{path.name.replace('.', '-')}-{sae.fingerprint[:6]}"
    tok = tiny_model.tokenizer
    feats = []
    with torch.no_grad():
        for s in make_sequences(DOCS, tok, CFG):
            ids = torch.tensor([[tok.bos_token_id, *s.token_ids]])
            feats.append(their_encode(capture(tiny_model.model, hp, ids, torch.ones_like(ids))[0, 1:]))
    allf = torch.cat(feats)
    got = torch.tensor([[r.stats.max, r.stats.density] for r in records])
    want = torch.stack([allf.max(0).values, (allf > 0).float().mean(0)], dim=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    seq_max = torch.stack([f.max(0).values for f in feats])  # [seqs, features]
    for r in records[:40]:
        if r.live:
            tops = [w.max_activation for w in r.windows if w.kind == "top"]
            assert tops == pytest.approx(
                seq_max[:, r.index].sort(descending=True).values[: len(tops)].tolist(), abs=1e-4
            )


class _DenseOnly:
    """A top-k SAE seen through its dense ``encode`` only (no ``encode_sparse``)."""

    sparse_k = None

    def __init__(self, sae):
        self.sae = sae

    def __getattr__(self, name):
        return getattr(self.sae, name)

    def to(self, device):
        return _DenseOnly(self.sae.to(device))


def test_sparse_top_k_path_gives_the_same_records_as_the_dense_path(tiny_model, tmp_path):
    """A top-k SAE's batches are kept as k features per token (never a tokens × features array);
    every record equals the one the dense path makes."""
    make_saelens(tmp_path, "topk")
    sae = load_sae(tmp_path)
    assert sae.sparse_k == 8
    hp = resolve_hookpoint(tiny_model.model, sae.hookpoint)
    cfg = CollectConfig(window=8, top_k=4, context=16, batch_size=2, n_random=2, n_quantiles=3)
    sparse = collect(tiny_model, hp, DOCS, cfg, progress=False, encoder=sae)
    dense = collect(tiny_model, hp, DOCS, cfg, progress=False, encoder=_DenseOnly(sae))
    assert sum(bool(r.windows) for r in sparse) > 10
    for a, b in zip(sparse, dense, strict=True):
        assert a.unit_id == b.unit_id and a.live == b.live
        assert [(w.window_id, w.doc_id, w.tokens) for w in a.windows] == [
            (w.window_id, w.doc_id, w.tokens) for w in b.windows
        ]
        for wa, wb in zip(a.windows, b.windows):
            assert wa.activations == pytest.approx(wb.activations, abs=1e-5)
        for f in ("max", "mean", "std", "density", "n_tokens"):
            assert getattr(a.stats, f) == pytest.approx(getattr(b.stats, f), abs=1e-5)
        assert a.stats.histogram == b.stats.histogram


# -- bad input ------------------------------------------------------------------------------


def _edit_cfg(path, **changes):
    cfg = json.loads((path / "cfg.json").read_text())
    for key, value in changes.items():
        if key == "hook_name":
            cfg["metadata"]["hook_name"] = value
        else:
            cfg[key] = value
    (path / "cfg.json").write_text(json.dumps(cfg))


def _edit_weights(path, fn, name="sae_weights.safetensors"):
    weights = load_file(path / name)
    fn(weights)
    save_file(weights, path / name)


def test_d_in_mismatch_is_rejected_before_anything_is_written(tiny_model, tiny_model_dir, tmp_path, settings):
    from explainer.pipeline.collection import collect_stage
    from explainer.runtime import get_store

    make_saelens(tmp_path / "sae", "standard", hook="blocks.1.mlp.hook_post")  # d_in 64, but 128 MLP neurons
    sae = load_sae(tmp_path / "sae")
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    with pytest.raises(SAEError, match=r"d_in=64, but hookpoint layers.1.mlp has width 128"):
        collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=sae)
    corpus = tmp_path / "c.txt"
    corpus.write_text(DOCS[0].text)
    with pytest.raises(SAEError, match="d_in=64"):
        collect_stage(settings, str(tiny_model_dir), None, str(corpus), CFG, progress=False, sae=str(tmp_path / "sae"))
    assert get_store(settings).count_rows()["collections"] == 0
    assert not (settings.data_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda p: _edit_weights(p, lambda w: w["W_enc"].__setitem__((0, 0), float("nan"))),
            "'W_enc' contains NaN or Inf",
        ),
        (lambda p: _edit_weights(p, lambda w: w["b_enc"].__setitem__(3, float("inf"))), "'b_enc' contains NaN or Inf"),
        (
            lambda p: _edit_weights(p, lambda w: w.pop("b_enc")),
            r"missing weight\(s\) b_enc; the file has W_dec, W_enc, b_dec",
        ),
        (
            lambda p: _edit_cfg(p, architecture="matching_pursuit"),
            "unsupported SAELens architecture 'matching_pursuit'",
        ),
        (lambda p: _edit_cfg(p, hook_name="blocks.1.hook_resid_mid"), "unsupported TransformerLens/SAELens hook name"),
        (lambda p: _edit_cfg(p, hook_name="blocks.1.attn.hook_z", reshape_activations="hook_z"), "hook_z"),
        (lambda p: _edit_cfg(p, normalize_activations="expected_average_only_in"), "normalize_activations"),
        (lambda p: _edit_cfg(p, d_in=32), r"W_enc has shape \[64, 256\], expected \[32, 256\]"),
        (lambda p: (p / "cfg.json").write_text("{not json"), "cannot read the SAE config"),
        (lambda p: (p / "sae_weights.safetensors").write_bytes(b"garbage"), "cannot read the weights"),
    ],
)
def test_bad_saelens_files_raise_clear_errors(tmp_path, break_it, message):
    make_saelens(tmp_path, "standard")
    break_it(tmp_path)
    with pytest.raises(SAEError, match=message):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda p: _edit_weights(
                p, lambda w: w["encoder.weight"].__setitem__((1, 1), float("nan")), "sae.safetensors"
            ),
            "NaN or Inf",
        ),
        (lambda p: _edit_weights(p, lambda w: w.pop("b_dec"), "sae.safetensors"), r"missing weight\(s\) b_dec"),
        (lambda p: _edit_cfg(p, activation="jumprelu"), "unsupported sparsify activation 'jumprelu'"),
        (lambda p: _edit_cfg(p, k=1000), "k=1000 does not fit 256 latents"),
    ],
)
def test_bad_sparsify_files_raise_clear_errors(tmp_path, break_it, message):
    make_sparsify(tmp_path / "layers.1")
    break_it(tmp_path / "layers.1")
    with pytest.raises(SAEError, match=message):
        load_sae(tmp_path / "layers.1")


def test_unknown_sparsify_hookpoint_and_missing_files(tmp_path):
    make_sparsify(tmp_path / "embed_tokens")
    with pytest.raises(SAEError, match=r"unsupported sparsify hookpoint 'embed_tokens'.*layers\.L → layers\.L"):
        load_sae(tmp_path / "embed_tokens")
    with pytest.raises(SAEError, match="is not a folder"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEError, match="no cfg.json"):
        load_sae(tmp_path / "empty")
    make_saelens(tmp_path / "sl", "standard")
    with pytest.raises(SAEError, match="not the requested hookpoint 'layers.2'"):
        load_sae(tmp_path / "sl", hookpoint="layers.2")


def test_cli_collects_sae_features_and_reports_bad_files(tiny_model_dir, tmp_path, settings, capsys):
    from workers.cli import main

    make_saelens(tmp_path / "sae", "topk")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(d.text for d in DOCS))
    argv = [
        "collect",
        "--model",
        str(tiny_model_dir),
        "--sae",
        str(tmp_path / "sae"),
        "--corpus",
        str(corpus),
        "--max-tokens",
        "300",
        "--window",
        "8",
        "--context",
        "16",
        "--quantiles",
        "4",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["n_units"] == D_SAE and out["hookpoint"].startswith("layers.1.sae-sae-") and 0 < out["live_units"] <= D_SAE
    )
    _edit_weights(tmp_path / "sae", lambda w: w["W_enc"].__setitem__((0, 0), float("inf")))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "NaN or Inf" in err and "Traceback" not in err
