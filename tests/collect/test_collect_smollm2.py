"""Collection on the real SmolLM2-135M (slow): MLP neurons against brute force, and a SAELens SAE
written for SmolLM2's residual stream, named by its TransformerLens hook, against the library."""

import pytest
import torch

from explainer.collect.collector import CollectConfig, collect, make_sequences
from explainer.collect.corpus import default_corpus
from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.collect.sae import load_sae

pytestmark = pytest.mark.slow

CFG = CollectConfig(max_tokens=768, top_k=6, n_random=3, n_quantiles=4, batch_size=8)


@pytest.fixture(scope="module")
def smol():
    from explainer.collect.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def docs():
    corpus = default_corpus(8_000)
    return [d for d in corpus if d.domain == "code"][:3] + [d for d in corpus if d.domain == "legal"][:3]


def brute(smol, hp, docs, encode=lambda a: a):
    tok = smol.tokenizer
    out = []
    with torch.no_grad():
        for s in make_sequences(docs, tok, CFG):
            ids = torch.tensor([[tok.bos_token_id, *s.token_ids]])
            out.append(encode(capture(smol.model, hp, ids, torch.ones_like(ids))[0, 1:]))
    return out


def test_smollm2_mlp_neurons_match_brute_force(smol, docs):
    hp = resolve_hookpoint(smol.model, "layers.15.mlp")
    assert hp.width == 1536
    records = collect(smol, hp, docs, CFG, progress=False)
    per_seq = brute(smol, hp, docs)
    allacts = torch.cat(per_seq)
    got = torch.tensor([[r.stats.max, r.stats.density] for r in records])
    want = torch.stack([allacts.max(0).values, (allacts > 0).float().mean(0)], dim=1)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)
    seq_max = torch.stack([a.max(0).values for a in per_seq])
    for u in (0, 100, 1034, 1535):
        tops = [w.max_activation for w in records[u].windows if w.kind == "top"]
        assert tops == pytest.approx(seq_max[:, u].sort(descending=True).values[: len(tops)].tolist(), abs=2e-3)
    assert sum(r.live for r in records) > 500


def test_smollm2_saelens_sae_on_the_residual_stream(smol, docs, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    theirs = TopKSAE(
        TopKSAEConfig(d_in=576, d_sae=1024, k=16, metadata=SAEMetadata(hook_name="blocks.12.hook_resid_post"))
    )
    with torch.no_grad():
        theirs.b_dec.copy_(torch.randn(576) * 0.5)
    theirs.save_model(tmp_path)
    assert sae_lens.SAE.load_from_disk(tmp_path).cfg.d_sae == 1024
    sae = load_sae(tmp_path)
    hp = resolve_hookpoint(smol.model, sae.hookpoint)
    assert hp.name == "layers.12" and hp.width == 576
    records = collect(smol, hp, docs, CFG, progress=False, encoder=sae)
    raw = brute(smol, hp, docs)
    with torch.no_grad():
        per_seq = [theirs.encode(x) for x in raw]
        torch.testing.assert_close(sae.encode(raw[0]), per_seq[0], atol=1e-5, rtol=1e-5)
    allf = torch.cat(per_seq)
    got = torch.tensor([r.stats.max for r in records])
    torch.testing.assert_close(got, allf.max(0).values.clamp(min=0), atol=2e-3, rtol=1e-3)
    assert sum(r.live for r in records) > 50
