"""Gemma Scope, Qwen-Scope and Goodfire SAE files: real files written here in each release's layout,
read by us without any SAE library and, side by side, by SAELens's own loader for that release (its
download swapped for the local file); encodings equal to 1e-5 on the tiny model's activations. Bad
files (truncated, pickled objects, disagreeing shapes) are clear SAEErrors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders.collect import DOCS

from explainer.collect.collector import CollectConfig, collect
from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.collect.sae import load_sae
from explainer.errors import SAEError

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE  # noqa: E402
from sae_lens.loading import pretrained_sae_loaders as loaders  # noqa: E402

D_IN, D_SAE, K = 64, 256, 8
CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=300, batch_size=4, n_quantiles=4)


@pytest.fixture(scope="module")
def acts(tiny_model):
    """Residual stream after block 1 of the tiny model, [tokens, 64]."""
    tok = tiny_model.tokenizer
    ids = torch.tensor([[tok.bos_token_id, *tok(DOCS[0].text + DOCS[1].text, add_special_tokens=False)["input_ids"]]])
    m = tiny_model.model
    return capture(m, resolve_hookpoint(m, "layers.1"), ids[:, :120], torch.ones_like(ids[:, :120]))[0]


def _rand(*shape, scale=0.3):
    return (torch.randn(*shape) * scale).float()


def write_gemma(folder, lowercase=False):
    """A Gemma Scope ``params.npz`` under ``folder`` (e.g. gemma-scope-2b-pt-res/layer_1/width_16k/average_l0_20)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "W_enc": _rand(D_IN, D_SAE).numpy(),
        "W_dec": _rand(D_SAE, D_IN).numpy(),
        "b_enc": _rand(D_SAE, scale=0.1).numpy(),
        "b_dec": _rand(D_IN, scale=0.1).numpy(),
        "threshold": (torch.rand(D_SAE) * 0.3).numpy(),
    }
    if lowercase:  # early Gemma Scope files spell the matrices w_enc / w_dec
        arrays = {("w_" + k[2:] if k.startswith("W_") else k): v for k, v in arrays.items()}
    np.savez(folder / "params.npz", **arrays)
    return folder / "params.npz"


def write_qwen(folder, layer=1, b_enc_shift=0.5):
    folder.mkdir(parents=True, exist_ok=True)
    sd = {"W_enc": _rand(D_SAE, D_IN), "W_dec": _rand(D_IN, D_SAE), "b_enc": _rand(D_SAE, scale=0.1) + b_enc_shift}
    sd["b_dec"] = _rand(D_IN, scale=0.1)
    torch.save(sd, folder / f"layer{layer}.sae.pt")
    return folder / f"layer{layer}.sae.pt"


def write_goodfire(folder, name="Llama-3.1-8B-Instruct-SAE-l19.pth"):
    folder.mkdir(parents=True, exist_ok=True)
    enc, dec = torch.nn.Linear(D_IN, D_SAE), torch.nn.Linear(D_SAE, D_IN)
    sd = {f"encoder_linear.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"decoder_linear.{k}": v for k, v in dec.state_dict().items()})
    torch.save(sd, folder / name)
    return folder / name


def theirs(monkeypatch, loader, repo_id, folder_name, local_file):
    """SAELens's own loader for the release, its download replaced by ``local_file``; the SAE is
    built as ``SAE.from_pretrained`` builds it."""
    monkeypatch.setattr(loaders, "hf_hub_download", lambda *a, **kw: str(local_file))
    overrides = {"d_in": D_IN, "d_sae": D_SAE, "normalize_activations": "none"}
    cfg, state, _ = loader(repo_id, folder_name, device="cpu", cfg_overrides=overrides)
    cfg = loaders.handle_config_defaulting(cfg)
    sae = SAE.get_sae_class_for_architecture(cfg["architecture"])(
        SAE.get_sae_config_class_for_architecture(cfg["architecture"]).from_dict(cfg)
    )
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state)
    return sae


def test_gemma_scope_npz_equals_saelens_and_reads_the_hookpoint_from_the_path(tmp_path, acts, monkeypatch):
    npz = write_gemma(tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_20")
    ours = load_sae(npz.parent)  # the folder, or the file itself
    assert load_sae(npz).fingerprint == ours.fingerprint
    assert ours.name == "gemma-scope-width_16k-average_l0_20"
    assert (ours.source, ours.architecture, ours.hook_name, ours.hookpoint) == (
        "gemma-scope",
        "jumprelu",
        "blocks.1.hook_resid_post",
        "layers.1",
    )
    sl = theirs(
        monkeypatch,
        loaders.gemma_2_sae_huggingface_loader,
        "google/gemma-scope-2b-pt-res",
        "layer_1/width_16k/average_l0_20",
        npz,
    )
    with torch.no_grad():
        want = sl.encode(acts)
    got = ours.encode(acts)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert 0 < (got > 0).float().mean() < 1
    # the format's own definition: f = pre * [pre > threshold], pre = x @ W_enc + b_enc (no b_dec)
    with np.load(npz) as p:
        pre = acts.numpy() @ p["W_enc"] + p["b_enc"]
        np.testing.assert_allclose(got.numpy(), pre * (pre > p["threshold"]), atol=1e-5)


def test_gemma_scope_mlp_release_lowercase_keys_and_given_hookpoint(tmp_path):
    npz = write_gemma(tmp_path / "gemma-scope-9b-pt-mlp" / "layer_2" / "width_16k" / "average_l0_7", lowercase=True)
    assert load_sae(npz).hookpoint == "layers.2.mlp_out"
    bare = write_gemma(tmp_path / "my-mlp-runs" / "layer_3" / "sae")  # no Gemma Scope release folder
    with pytest.raises(SAEError, match="no hookpoint given and none in the path"):
        load_sae(bare)
    assert load_sae(bare, hookpoint="layers.3").hookpoint == "layers.3"
    assert load_sae(bare, hookpoint="blocks.3.hook_resid_post").hookpoint == "layers.3"
    with pytest.raises(
        SAEError, match=r"the path says blocks.2.hook_mlp_out \(layers.2.mlp_out\), but hookpoint 'layers.5'"
    ):
        load_sae(npz, hookpoint="layers.5")
    att = write_gemma(tmp_path / "gemma-scope-2b-pt-att" / "layer_1" / "width_16k" / "average_l0_9")
    with pytest.raises(SAEError, match="per-head"):
        load_sae(att)


def test_qwen_scope_pt_equals_saelens_with_k_from_the_release_name(tmp_path, acts, monkeypatch):
    pt = write_qwen(tmp_path / f"SAE-Res-Qwen3-1.7B-Base-W32K-L0_{K}")
    ours = load_sae(pt)
    assert (ours.source, ours.architecture, ours.hookpoint, ours.k, ours.d_in, ours.d_sae) == (
        "qwen-scope",
        "topk",
        "layers.1",
        K,
        D_IN,
        D_SAE,
    )
    sl = theirs(
        monkeypatch, loaders.qwen_scope_sae_huggingface_loader, f"Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_{K}", pt.name, pt
    )
    with torch.no_grad():
        want = sl.encode(acts)
    got = ours.encode(acts)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert int((got > 0).sum(-1).max()) == K
    # the model card's definition: top-k of x @ W_enc.T + b_enc, scattered (positive here: b_enc is +0.5)
    sd = torch.load(pt, weights_only=True)
    pre = acts @ sd["W_enc"].T + sd["b_enc"]
    vals, idx = pre.topk(K, dim=-1)
    torch.testing.assert_close(got, torch.zeros_like(pre).scatter_(-1, idx, vals), atol=1e-5, rtol=0)


def test_qwen_scope_negative_pre_activations_read_0_as_in_saelens_not_as_in_the_model_card_demo(
    tmp_path, acts, monkeypatch
):
    """A negative b_enc makes some of the k selected pre-activations negative: SAELens's qwen_scope
    loader and we read them as 0; the model card's demo (top-k values scattered as they are) keeps them."""
    pt = write_qwen(tmp_path / f"SAE-Res-Qwen3-1.7B-Base-W32K-L0_{K}", b_enc_shift=-0.4)
    sd = torch.load(pt, weights_only=True)
    pre = acts @ sd["W_enc"].T + sd["b_enc"]
    vals, idx = pre.topk(K, dim=-1)
    negative = vals < 0
    assert 0 < negative.float().mean() < 1  # selected features with negative pre-activations, and positive ones
    ours = load_sae(pt).encode(acts)
    sl = theirs(
        monkeypatch, loaders.qwen_scope_sae_huggingface_loader, f"Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_{K}", pt.name, pt
    )
    with torch.no_grad():
        torch.testing.assert_close(ours, sl.encode(acts), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, torch.zeros_like(pre).scatter_(-1, idx, vals.clamp_min(0)), atol=1e-5, rtol=0)
    assert (ours >= 0).all()
    demo = torch.zeros_like(pre).scatter_(-1, idx, vals)  # the demo's encoding
    differs = (demo - ours).abs() > 1e-6
    assert differs.sum() == negative.sum() and (demo[differs] < 0).all()  # only where it keeps a negative value


def test_qwen_scope_folder_of_layers_and_k(tmp_path):
    folder = tmp_path / "SAE-Res-Qwen3.5-2B-Base-W32K-L0_50"
    for layer in (0, 1, 2):
        write_qwen(folder, layer)
    with pytest.raises(SAEError, match=r"holds 3 Qwen-Scope layers \(layer0.sae.pt … layer2.sae.pt\)"):
        load_sae(folder)
    picked = load_sae(folder, hookpoint="layers.2")
    assert (picked.hookpoint, picked.k, picked.name) == ("layers.2", 50, "SAE-Res-Qwen3.5-2B-Base-W32K-L0_50")
    plain = write_qwen(tmp_path / "plain")
    with pytest.raises(SAEError, match=r"needs 0 < k <= d_sae=256, got k=None"):
        load_sae(plain)
    assert load_sae(plain, k=16).k == 16


def test_goodfire_state_dict_equals_saelens(tmp_path, acts, monkeypatch):
    pth = write_goodfire(tmp_path)
    ours = load_sae(pth)
    assert ours.name == "Llama-3.1-8B-Instruct-SAE-l19"
    assert (ours.source, ours.architecture, ours.hook_name, ours.hookpoint) == (
        "goodfire",
        "standard",
        "blocks.19.hook_resid_post",
        "layers.19",
    )
    sl = theirs(
        monkeypatch, loaders.get_goodfire_huggingface_loader, "Goodfire/Llama-3.1-8B-Instruct-SAE-l19", pth.name, pth
    )
    with torch.no_grad():
        want = sl.encode(acts)
    torch.testing.assert_close(ours.encode(acts), want, atol=1e-5, rtol=0)
    sd = torch.load(pth, weights_only=True)  # and the release's own definition: relu(encoder_linear(x))
    want_def = torch.relu(acts @ sd["encoder_linear.weight"].T + sd["encoder_linear.bias"])
    torch.testing.assert_close(ours.encode(acts), want_def, atol=1e-5, rtol=0)


def test_a_sparsify_folder_of_one_hookpoint_needs_no_hookpoint(tmp_path):
    pytest.importorskip("sparsify")
    from sparsify import SparseCoder, SparseCoderConfig

    SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K)).save_to_disk(tmp_path / "run" / "layers.1")
    sae = load_sae(tmp_path / "run")
    assert (sae.source, sae.hookpoint) == ("sparsify", "layers.1")
    with pytest.raises(
        SAEError, match=r"SAE 'layers.1' reads layers.1 \(our layers.1\), not the requested hookpoint 'layers.2'"
    ):
        load_sae(tmp_path / "run", hookpoint="layers.2")


def test_cli_collects_qwen_scope_features_from_the_file(tiny_model_dir, tmp_path, settings, capsys):
    import json

    from workers.cli import main

    pt = write_qwen(tmp_path / "SAE-Res-Qwen3-1.7B-Base-W32K-L0_8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(d.text for d in DOCS))
    argv = ["collect", "--model", str(tiny_model_dir), "--sae", str(pt), "--corpus", str(corpus)]
    argv += ["--max-tokens", "200", "--window", "8", "--context", "16", "--quantiles", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_units"] == D_SAE and out["hookpoint"].startswith("layers.1.sae-SAE-Res-Qwen3-1-7B-Base-W32K-L0_8-")
    _truncate(pt)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "weights_only=True" in err and "Traceback" not in err


def test_collect_over_gemma_scope_features(tiny_model, tmp_path):
    npz = write_gemma(tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_20")
    sae = load_sae(npz.parent)
    records = collect(
        tiny_model, resolve_hookpoint(tiny_model.model, sae.hookpoint), DOCS, CFG, progress=False, encoder=sae
    )
    assert len(records) == D_SAE and any(r.live for r in records)
    assert records[0].hookpoint.startswith("layers.1.sae-")


# -- bad files ------------------------------------------------------------------------------------


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _truncate(write_gemma(d / "gemma-scope-2b-pt-res" / "layer_1")), "cannot read the weights"),
        (
            lambda d: _truncate(write_qwen(d / "x-L0_8")),
            r"cannot read the weights with torch.load\(weights_only=True\)",
        ),
        (lambda d: _truncate(write_goodfire(d)), r"cannot read the weights with torch.load\(weights_only=True\)"),
        (lambda d: torch.save({"W_enc": _Evil()}, d / "layer1.sae.pt"), r"weights_only=True"),
        (
            lambda d: torch.save({"W_enc": torch.zeros(2), "note": "hello"}, d / "layer1.sae.pt"),
            "entry 'note' is a str, not a tensor",
        ),
        (lambda d: torch.save([torch.zeros(2)], d / "layer1.sae.pt"), "holds a list, not a state dict"),
        (
            lambda d: torch.save(
                {
                    "W_enc": _rand(D_SAE, D_IN),
                    "W_dec": _rand(D_IN, D_SAE),
                    "b_enc": _rand(D_SAE + 1),
                    "b_dec": _rand(D_IN),
                },
                d / "layer1.sae.pt",
            ),
            r"b_enc has shape \[257\], expected \[256\]",
        ),
        (
            lambda d: np.savez(
                d / "params.npz",
                W_enc=np.zeros((D_IN, D_SAE), np.float32),
                W_dec=np.zeros((D_SAE, D_IN + 1), np.float32),
                b_enc=np.zeros(D_SAE, np.float32),
                b_dec=np.zeros(D_IN, np.float32),
                threshold=np.zeros(D_SAE, np.float32),
            ),
            r"W_dec has shape \[256, 65\], expected \[256, 64\]",
        ),
        (
            lambda d: np.savez(d / "params.npz", W_enc=np.full((2, 2), np.nan, np.float32)),
            "'W_enc' contains NaN or Inf",
        ),
        (lambda d: np.savez(d / "params.npz", W_enc=np.zeros((2, 2), np.float32)), r"missing weight\(s\) W_dec, b_enc"),
        (lambda d: torch.save({"something": torch.zeros(2)}, d / "other.pth"), "neither encoder_linear"),
    ],
    ids=[
        "npz-truncated",
        "pt-truncated",
        "pth-truncated",
        "pt-pickled-object",
        "pt-string",
        "pt-list",
        "pt-shapes",
        "npz-shapes",
        "npz-nan",
        "npz-missing",
        "pth-unknown",
    ],
)
def test_bad_files_are_clear_sae_errors(tmp_path, capsys, make, message):
    d = tmp_path / "gemma-scope-2b-pt-res" / "layer_1"
    d.mkdir(parents=True)
    make(d)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    with pytest.raises(SAEError, match=message):
        load_sae(files[0], k=4)
    assert "pickled code ran" not in capsys.readouterr().out  # weights_only never runs what a file holds


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    StandardSAE(
        StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post"))
    ).save_model(tmp_path)
    _truncate(tmp_path / "sae_weights.safetensors")
    with pytest.raises(SAEError, match="cannot read the weights"):
        load_sae(tmp_path)
