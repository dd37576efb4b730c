"""Checkpoints: a collection killed at ~80% resumes from its last checkpoint and gives exactly the
records of an uninterrupted run; a checkpoint of another collection is never loaded."""

import pytest
import torch
from builders.collect import DOCS

from explainer.collect.checkpoint import load_checkpoint
from explainer.collect.collector import CollectConfig, Collector, collect, make_sequences
from explainer.collect.hooks import resolve_hookpoint

CFG = CollectConfig(
    window=8,
    context=16,
    top_k=4,
    n_random=2,
    max_tokens=400,
    batch_size=2,
    n_quantiles=4,
    pool_per_quantile=2,
    min_density=0.0,
)


class Killed(RuntimeError):
    pass


def count_forwards(model, kill_after=None):
    """A forward hook on block 0 counting batches, raising once ``kill_after`` batches are done."""
    calls = {"n": 0}

    def hook(*_):
        if kill_after is not None and calls["n"] >= kill_after:
            raise Killed("killed")
        calls["n"] += 1

    return calls, model.model.layers[0].register_forward_hook(hook)


@pytest.fixture(scope="module")
def setup(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    n_batches = Collector(tiny_model, hp, make_sequences(DOCS, tiny_model.tokenizer, CFG), CFG).n_batches
    return hp, n_batches, collect(tiny_model, hp, DOCS, CFG, progress=False)


def test_a_run_killed_at_80_percent_resumes_with_the_same_result(tiny_model, setup, tmp_path):
    hp, n_batches, uninterrupted = setup
    assert n_batches >= 10
    ckpt = tmp_path / "run.pt"
    kill_after = int(0.8 * n_batches)
    calls, handle = count_forwards(tiny_model.model, kill_after)
    try:
        with pytest.raises(Killed):
            collect(tiny_model, hp, DOCS, CFG, progress=False, checkpoint=ckpt, checkpoint_every=3)
    finally:
        handle.remove()
    assert calls["n"] == kill_after and ckpt.is_file()
    key = Collector(tiny_model, hp, make_sequences(DOCS, tiny_model.tokenizer, CFG), CFG).key()
    next_batch, _ = load_checkpoint(ckpt, key)
    assert next_batch == kill_after // 3 * 3 and next_batch > n_batches // 2

    calls, handle = count_forwards(tiny_model.model)
    try:
        resumed = collect(tiny_model, hp, DOCS, CFG, progress=False, checkpoint=ckpt, checkpoint_every=3)
    finally:
        handle.remove()
    assert calls["n"] == n_batches - next_batch  # resumed, not restarted
    assert resumed == uninterrupted
    assert not ckpt.exists()  # removed once the records are built


def test_a_checkpoint_of_another_collection_is_ignored(tiny_model, setup, tmp_path):
    hp, n_batches, uninterrupted = setup
    ckpt = tmp_path / "run.pt"
    other = CollectConfig(**{**CFG.to_dict(), "seed": 1})
    calls, handle = count_forwards(tiny_model.model, n_batches - 2)
    try:
        with pytest.raises(Killed):
            collect(tiny_model, hp, DOCS, other, progress=False, checkpoint=ckpt, checkpoint_every=2)
    finally:
        handle.remove()
    assert ckpt.is_file()
    calls, handle = count_forwards(tiny_model.model)
    try:
        again = collect(tiny_model, hp, DOCS, CFG, progress=False, checkpoint=ckpt, checkpoint_every=2)
    finally:
        handle.remove()
    assert calls["n"] == n_batches and again == uninterrupted


def test_a_corrupt_checkpoint_is_ignored(tiny_model, setup, tmp_path):
    hp, n_batches, uninterrupted = setup
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"not a checkpoint")
    assert collect(tiny_model, hp, DOCS, CFG, progress=False, checkpoint=ckpt) == uninterrupted


def test_collect_stage_resumes_a_killed_collection(tiny_model, tiny_model_dir, settings, tmp_path):
    """Through the pipeline: a failed collection is recorded, its checkpoint kept, and the re-run
    finishes it with the records of an uninterrupted run."""
    from explainer.collect.models import load_model
    from explainer.pipeline.collection import collect_stage
    from explainer.runtime import get_store

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(__import__("json").dumps({"id": d.doc_id, "domain": d.domain, "text": d.text}) for d in DOCS),
        encoding="utf-8",
    )
    lm = load_model(str(tiny_model_dir))
    n_batches = Collector(
        lm, resolve_hookpoint(lm.model, "layers.1.mlp"), make_sequences(DOCS, lm.tokenizer, CFG), CFG
    ).n_batches
    calls, handle = count_forwards(lm.model, n_batches - 3)
    try:
        with pytest.raises(Killed):
            collect_stage(settings, str(tiny_model_dir), "layers.1.mlp", str(corpus), CFG, progress=False)
    finally:
        handle.remove()
    store = get_store(settings)
    ckpts = list((settings.data_dir / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1
    cid = ckpts[0].stem
    assert store.get_collection(cid)["status"] == "failed"
    assert collect_stage(settings, str(tiny_model_dir), "layers.1.mlp", str(corpus), CFG, progress=False) == cid
    assert store.get_collection(cid)["status"] == "done" and not ckpts[0].exists()
    fresh = collect(lm, resolve_hookpoint(lm.model, "layers.1.mlp"), DOCS, CFG, progress=False)
    got = store.get_records([r.unit_id for r in fresh], cid)
    assert [got[r.unit_id][1] for r in fresh] == fresh
    torch.testing.assert_close(torch.tensor(fresh[0].stats.max), torch.tensor(got[fresh[0].unit_id][1].stats.max))
