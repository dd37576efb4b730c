"""Directions (probe, steering or concept vectors): loading, projection, names, bad files, collection."""

import json

import numpy as np
import pytest
import torch
from builders.collect import DOCS
from safetensors.torch import save_file

from explainer.collect.collector import CollectConfig, collect
from explainer.collect.directions import load_directions
from explainer.collect.hooks import resolve_hookpoint
from explainer.errors import SAEError

NAMES = ["joy", "fear", "hallucination"]
CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=300, batch_size=4, n_quantiles=4)


def test_safetensors_directions_with_names_and_hookpoint(tmp_path):
    m = torch.randn(3, 64) * 5
    save_file(
        {"directions": m},
        tmp_path / "emotions.safetensors",
        metadata={"names": json.dumps(NAMES), "hookpoint": "blocks.1.hook_resid_post"},
    )
    d = load_directions(tmp_path / "emotions.safetensors")
    assert (d.name, d.names, d.hookpoint, d.width, d.d_in) == ("emotions", NAMES, "layers.1", 3, 64)
    torch.testing.assert_close(d.vectors.norm(dim=1), torch.ones(3))
    x = torch.randn(5, 7, 64)
    torch.testing.assert_close(d.encode(x), x @ (m / m.norm(dim=1, keepdim=True)).T, atol=1e-5, rtol=0)


def test_npy_directions_with_sidecar_names_and_default_names(tmp_path):
    np.save(tmp_path / "probe.npy", np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32))
    assert load_directions(tmp_path / "probe.npy").names == ["direction-0", "direction-1", "direction-2"]
    (tmp_path / "probe.npy.names.json").write_text(json.dumps(NAMES))
    d = load_directions(tmp_path / "probe.npy")
    assert d.names == NAMES and d.hookpoint is None
    np.save(tmp_path / "one.npy", np.ones(64, dtype=np.float32))  # a single vector is one direction
    assert load_directions(tmp_path / "one.npy").width == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: np.save(p / "d.npy", np.zeros((2, 64), dtype=np.float32)),
            r"direction\(s\) \[0, 1\] have zero length",
        ),
        (lambda p: np.save(p / "d.npy", np.full((2, 64), np.nan, dtype=np.float32)), "NaN or Inf"),
        (lambda p: np.save(p / "d.npy", np.ones((2, 3, 4), dtype=np.float32)), r"matrix \[n, d\]"),
        (lambda p: (p / "d.npy").write_bytes(b"nonsense"), "cannot read directions"),
        (
            lambda p: (
                np.save(p / "d.npy", np.ones((2, 64), dtype=np.float32)),
                (p / "d.npy.names.json").write_text('["only one"]'),
            ),
            "JSON list of 2 strings",
        ),
    ],
)
def test_bad_directions_files(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(SAEError, match=message):
        load_directions(tmp_path / "d.npy")


def test_bad_directions_paths(tmp_path):
    with pytest.raises(SAEError, match="does not exist"):
        load_directions(tmp_path / "missing.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(SAEError, match=".safetensors or .npy"):
        load_directions(tmp_path / "d.txt")
    save_file({"a": torch.ones(2, 4), "b": torch.ones(2, 4)}, tmp_path / "two.safetensors")
    with pytest.raises(SAEError, match="expected a tensor 'directions' or a single tensor, found a, b"):
        load_directions(tmp_path / "two.safetensors")


def test_collect_directions_names_units_and_checks_width(tiny_model, tmp_path):
    m = torch.randn(3, 64)
    save_file({"directions": m}, tmp_path / "emotions.safetensors", metadata={"names": json.dumps(NAMES)})
    d = load_directions(tmp_path / "emotions.safetensors")
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    records = collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=d)
    assert [r.name for r in records] == NAMES
    assert records[2].unit_id == f"tiny-llama/layers.1.dir-emotions-{d.fingerprint[:6]}/2"
    raw = collect(tiny_model, hp, DOCS, CFG, progress=False)
    # a direction along a basis vector is that residual dimension's activation
    e = torch.zeros(1, 64)
    e[0, 5] = 3.0
    save_file({"directions": e}, tmp_path / "axis.safetensors")
    axis = collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=load_directions(tmp_path / "axis.safetensors"))
    assert axis[0].stats.max == pytest.approx(raw[5].stats.max, abs=1e-5)
    assert axis[0].windows[0].activations == pytest.approx(raw[5].windows[0].activations, abs=1e-5)
    with pytest.raises(SAEError, match="dimension 64, but hookpoint layers.1.mlp has width 128"):
        collect(tiny_model, resolve_hookpoint(tiny_model.model, "layers.1.mlp"), DOCS, CFG, progress=False, encoder=d)
