"""The width check of a re-test with an SAE or directions: the new model's hookpoint must be as wide
as the SAE or directions read (``d_in``), checked when the new model is loaded, before anything is
collected."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from explainer.errors import HookpointError
from explainer.retest.run import check_new_model

COLLECTION = {"id": "c0ffee", "n_units": 3}


def _inputs(hookpoint, sae=None, directions=None):
    return {"hookpoint": hookpoint, "sae": sae, "directions": directions}


def test_directions_read_the_hookpoints_width(tiny_model_dir, tmp_path):
    path = tmp_path / "emotions.safetensors"
    save_file({"directions": torch.randn(3, 64)}, path)  # vectors of the residual stream (64 wide)
    assert check_new_model(_inputs("layers.1", directions=str(path)), COLLECTION, str(tiny_model_dir), "cpu")
    with pytest.raises(
        HookpointError, match=r"hookpoint layers.1.mlp is 128 wide, but the directions 'emotions' reads 64"
    ):
        check_new_model(_inputs("layers.1.mlp", directions=str(path)), COLLECTION, str(tiny_model_dir), "cpu")


def _sae(path, d_in):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    config = StandardSAEConfig(d_in=d_in, d_sae=32, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post"))
    StandardSAE(config).save_model(path)
    return str(path)


def test_an_sae_reads_the_hookpoints_width(tiny_model_dir, tmp_path):
    fits = _sae(tmp_path / "sae-64", 64)  # the tiny LLaMA's residual stream is 64 wide
    assert check_new_model(_inputs("layers.1", sae=fits), COLLECTION, str(tiny_model_dir), "cpu")
    wide = _sae(tmp_path / "sae-128", 128)  # an SAE trained on a model twice as wide
    with pytest.raises(HookpointError, match=r"hookpoint layers.1 is 64 wide, but the SAE '[^']+' reads 128"):
        check_new_model(_inputs("layers.1", sae=wide), COLLECTION, str(tiny_model_dir), "cpu")
