"""Sharded collection: the shard plan, the tie order, and merged shards equal to one process."""

from __future__ import annotations

import re

import pytest
import torch
from builders.collect import DOCS
from builders.workers import ROOT, worker_env

from explainer.collect.collector import CollectConfig, Collector, make_sequences
from explainer.collect.evidence import DenseColumns, TopWindows, rank_key
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.shards import (
    collect_sharded,
    merge_states,
    merge_top,
    plan_shards,
    run_shard,
    state_from_bytes,
    state_to_bytes,
)
from explainer.errors import InputError
from store.records import Document

CFG = CollectConfig(
    window=8,
    context=16,
    top_k=4,
    n_random=3,
    max_tokens=600,
    batch_size=2,
    n_quantiles=4,
    pool_per_quantile=2,
    min_density=0.0,
)
# Documents repeated under other ids give sequences with identical activations: exact ties.
TIED_DOCS = DOCS + [Document(f"{d.doc_id}#copy", d.domain, d.text) for d in DOCS[1:3]]


def assert_same_records(a, b):
    assert [r.unit_id for r in a] == [r.unit_id for r in b]
    for x, y in zip(a, b):
        assert x.windows == y.windows, x.unit_id  # same top, quantile and random windows, same order
        assert x.skip_reason == y.skip_reason
        for f in ("max", "mean", "std", "density"):
            assert getattr(x.stats, f) == pytest.approx(getattr(y.stats, f), rel=1e-6, abs=1e-6), (x.unit_id, f)
        assert (x.stats.n_tokens, x.stats.histogram, x.stats.quantiles) == (
            y.stats.n_tokens,
            y.stats.histogram,
            pytest.approx(y.stats.quantiles, rel=1e-6, abs=1e-6),
        )


def test_plan_cuts_whole_batches_into_near_equal_contiguous_shards():
    plan = plan_shards(10, 4)
    assert [(s.first_batch, s.end_batch) for s in plan] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [s.index for s in plan] == [0, 1, 2, 3] and {s.n_shards for s in plan} == {4}
    assert plan_shards(3, 1)[0].batches == range(3)
    with pytest.raises(InputError, match="at least 1"):
        plan_shards(3, 0)
    with pytest.raises(InputError, match="needs at least one batch"):
        plan_shards(3, 4)


def test_rank_key_orders_by_value_then_lowest_sequence():
    values = torch.tensor([-2.0, -0.5, 0.0, 1e-30, 0.25, 3.0, 3.0, float("-inf"), 1e30])
    seqs = torch.tensor([0, 1, 2, 3, 4, 9, 5, 6, 7])
    order = torch.sort(rank_key(values, seqs), descending=True).indices.tolist()
    assert order == [8, 6, 5, 4, 3, 2, 1, 0, 7]  # 3.0 at sequence 5 before 3.0 at sequence 9
    empty = rank_key(torch.tensor([float("-inf")]), torch.tensor([-1]))
    assert bool(empty > rank_key(torch.tensor([float("-inf")]), torch.tensor([0])))  # an empty slot is kept first


def test_top_windows_keep_the_same_ties_whatever_the_batching():
    """Six sequences, one unit, activations with three-way ties at the k-th place: one pass of
    six rows, three passes of two, and two merged halves all keep sequences (0, 1, 3)."""
    maxima = torch.tensor([5.0, 2.0, 1.0, 2.0, 2.0, 1.0])
    acts = maxima.view(6, 1, 1).expand(6, 4, 1).contiguous()  # [B, T, U]: the max on every token

    def run(batches):
        top = TopWindows(1, 3, 2, "cpu")
        for lo, hi in batches:
            a = acts[lo:hi]
            top.update(a.amax(1), a.amax(1), torch.arange(lo, hi), torch.full((hi - lo,), 4), DenseColumns(a), 1)
        return top

    whole, pairs = run([(0, 6)]), run([(0, 2), (2, 4), (4, 6)])
    halves = [run([(0, 3)]).state(), run([(3, 6)]).state()]
    merged = merge_top(halves, 3)
    for top in (whole, pairs):
        kept = top.seq[0, top.order()[0]].tolist()
        assert kept == [0, 1, 3]
    assert merged["seq"][0].tolist() == [0, 1, 3] and merged["value"][0].tolist() == [5.0, 2.0, 2.0]


@pytest.fixture(scope="module")
def setup(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    seqs = make_sequences(TIED_DOCS, tiny_model.tokenizer, CFG)
    single = Collector(tiny_model, hp, seqs, CFG)
    single.run()
    return hp, seqs, single


@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_merged_shards_equal_a_single_process_run(tiny_model, setup, n_shards):
    hp, seqs, single = setup
    assert single.n_batches >= 14
    merged = collect_sharded(tiny_model, hp, seqs, CFG, n_shards)
    for part in ("top", "pool"):  # the kept (sequence, unit) sets are identical, slot order aside
        a, b = getattr(single, part), getattr(merged, part)
        assert torch.equal(a.seq.gather(1, a.order()), b.seq.gather(1, b.order())), part
    assert torch.equal(single.stats.hist, merged.stats.hist)
    assert torch.equal(single.stats.max, merged.stats.max)
    assert torch.allclose(single.stats.sum, merged.stats.sum, rtol=1e-9, atol=1e-9)
    assert torch.equal(single.rand_acts, merged.rand_acts)
    records = merged.records()
    assert_same_records(records, single.records())
    assert sum(1 for r in records if r.windows) > 100  # most of the 128 neurons are live: a real comparison
    assert any(w.doc_id.endswith("#copy") for r in records for w in r.windows if w.kind == "top")


def test_ties_between_identical_documents_go_to_the_earlier_sequence(tiny_model, setup):
    """Each copied document's sequences tie exactly with the original's: wherever one of the pair
    is a top window and the other is not, the kept one is the original (the lower sequence id)."""
    _, _, single = setup
    records = single.records()
    checked = 0
    for r in records:
        docs = [w.doc_id for w in r.windows if w.kind == "top"]
        for d in docs:
            if d.endswith("#copy"):
                assert d.removesuffix("#copy") in docs, r.unit_id
                checked += 1
    assert checked > 0


def test_a_killed_shard_resumes_from_its_checkpoint(tiny_model, setup, tmp_path):
    hp, seqs, _ = setup
    shard = plan_shards(Collector(tiny_model, hp, seqs, CFG).n_batches, 2)[1]
    clean = run_shard(Collector(tiny_model, hp, seqs, CFG), shard)
    ckpt = tmp_path / "shard1.pt"
    calls = {"n": 0}

    def killer(*_):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt

    handle = tiny_model.model.model.layers[0].register_forward_hook(killer)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_shard(Collector(tiny_model, hp, seqs, CFG), shard, checkpoint=ckpt, checkpoint_every=2)
    finally:
        handle.remove()
    assert ckpt.is_file()
    calls["n"] = 0
    handle = tiny_model.model.model.layers[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        resumed = run_shard(Collector(tiny_model, hp, seqs, CFG), shard, checkpoint=ckpt, checkpoint_every=2)
    finally:
        handle.remove()
    assert calls["n"] == len(shard.batches) - 4  # batches 5+ only: the 4 checkpointed ones are not redone
    assert not ckpt.exists()
    assert set(resumed) == set(clean)
    for name in clean:
        assert torch.equal(resumed[name], clean[name]), name


def test_shard_state_round_trips_through_bytes(tiny_model, setup):
    hp, seqs, _ = setup
    shard = plan_shards(Collector(tiny_model, hp, seqs, CFG).n_batches, 4)[2]
    state = run_shard(Collector(tiny_model, hp, seqs, CFG), shard)
    back = state_from_bytes(state_to_bytes(state))
    assert all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_states([])


# -- through the pipeline: shard stages, the merge, the Celery tasks ------------------------------


def write_corpus(path):
    import json

    path.write_text(
        "\n".join(json.dumps({"id": d.doc_id, "domain": d.domain, "text": d.text}) for d in TIED_DOCS),
        encoding="utf-8",
    )
    return str(path)


def count_forwards(model, kill_after=None):
    calls = {"n": 0}

    def hook(*_):
        if kill_after is not None and calls["n"] >= kill_after:
            raise RuntimeError("killed")
        calls["n"] += 1

    return calls, model.model.layers[0].register_forward_hook(hook)


def test_a_failed_shard_is_rerun_alone_and_merged_once(tiny_model_dir, settings, tmp_path):
    from explainer.collect.collector import collect
    from explainer.collect.models import load_model
    from explainer.pipeline.sharded import ShardsMissingError, collect_shard_stage, merge_shards_stage
    from explainer.runtime import get_store
    from store import shards as rows

    corpus, model, store = write_corpus(tmp_path / "c.jsonl"), str(tiny_model_dir), get_store(settings)
    lm = load_model(model)
    hp = resolve_hookpoint(lm.model, "layers.1.mlp")
    plan = plan_shards(Collector(lm, hp, make_sequences(TIED_DOCS, lm.tokenizer, CFG), CFG).n_batches, 3)

    def shard(i):
        return collect_shard_stage(settings, model, "layers.1.mlp", corpus, CFG, i, 3)

    assert shard(0)["ran"]
    calls, handle = count_forwards(lm.model, kill_after=2)  # shard 1 dies after two batches
    try:
        with pytest.raises(RuntimeError, match="killed"):
            shard(1)
    finally:
        handle.remove()
    assert shard(2)["ran"]
    with pytest.raises(ShardsMissingError, match=r"shard\(s\) \[1\] of 3"):
        merge_shards_stage(settings, model, "layers.1.mlp", corpus, CFG, 3)
    cid = shard(0)["collection_id"]
    assert store.get_collection(cid) is None  # nothing written before the merge
    assert sorted(rows.done_shards(store, cid, 3)) == [0, 2]

    calls, handle = count_forwards(lm.model)
    try:
        again = [shard(i) for i in range(3)]
    finally:
        handle.remove()
    assert [s["ran"] for s in again] == [False, True, False]
    # only the failed shard ran, from its last checkpoint (saved after each of its first two batches)
    assert calls["n"] == len(plan[1].batches) - 2
    assert merge_shards_stage(settings, model, "layers.1.mlp", corpus, CFG, 3) == cid
    assert store.get_collection(cid)["status"] == "done" and rows.done_shards(store, cid, 3) == {}
    single = collect(lm, hp, TIED_DOCS, CFG, progress=False)
    got = store.get_records([r.unit_id for r in single], cid)
    assert_same_records([got[r.unit_id][1] for r in single], single)
    # a late duplicate shard or merge changes nothing
    assert not shard(1)["ran"] and merge_shards_stage(settings, model, "layers.1.mlp", corpus, CFG, 3) == cid


def test_cli_collects_in_shards_through_the_embedded_worker(tiny_model_dir, settings, tmp_path, capsys, monkeypatch):
    """`explainer collect --shards 3` runs three tasks on the in-process worker's collect queue and a
    merge; its records equal a single-process collection's, under the same collection id."""
    import json

    from explainer.runtime import get_store
    from explainer.settings import load_settings
    from workers.cli import main

    corpus = write_corpus(tmp_path / "c.jsonl")
    argv = ["collect", "--model", str(tiny_model_dir), "--layer", "1", "--corpus", corpus]
    argv += ["--max-tokens", "700", "--window", "8", "--context", "16", "--top-k", "4", "--quantiles", "4", "--json"]
    assert main([*argv, "--shards", "3"]) == 0
    sharded = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("EXPLAINER_DATA_DIR", str(tmp_path / "single"))
    assert main(argv) == 0
    single = json.loads(capsys.readouterr().out)
    assert sharded == single and single["n_units"] == 128 and single["n_tokens"] >= 600
    cid = single["collection_id"]
    a, b = get_store(settings), get_store(load_settings())
    ids = [r["unit_id"] for r in b.unit_rows(cid, live_only=False)]
    got_a, got_b = a.get_records(ids, cid), b.get_records(ids, cid)
    assert_same_records([got_a[u][1] for u in ids], [got_b[u][1] for u in ids])
    assert main([*argv, "--shards", "0"]) == 2
    assert "--shards must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.redis
def test_shards_run_on_two_collect_workers_through_redis(tiny_model_dir, settings, redis_url, tmp_path):
    """Two `celery -A workers worker -Q collect` processes on Redis take the shard tasks of one
    `explainer collect --shards 3`; the merged records equal a single-process collection's."""
    import subprocess
    import sys
    from pathlib import Path

    from explainer.collect.collector import collect
    from explainer.collect.models import load_model
    from explainer.runtime import get_store

    env = worker_env(settings.data_dir, 13, 14)
    corpus = write_corpus(tmp_path / "c.jsonl")
    get_store(settings)  # the schema exists before two workers open the SQLite file at once
    celery = str(Path(sys.executable).parent / "celery")
    logs = [tmp_path / f"collect{i}.log" for i in range(2)]
    workers = [
        subprocess.Popen(
            [celery, "-A", "workers", "worker", "-Q", "collect", "-n", f"collect{i}@%h", "--concurrency", "1"]
            + ["--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
        )
        for i, log in enumerate(logs)
    ]
    try:
        argv = ["collect", "--model", str(tiny_model_dir), "--layer", "1", "--corpus", corpus, "--max-tokens", "700"]
        argv += ["--window", "8", "--context", "16", "--top-k", "4", "--quantiles", "4", "--shards", "3", "--json"]
        proc = subprocess.run(
            [sys.executable, "-m", "workers.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    cid = json.loads(proc.stdout)["collection_id"]
    text = "".join(log.read_text(errors="replace") for log in logs)
    assert len(re.findall(r"explainer\.collect_shard\[[^\]]+\] succeeded", text)) == 3
    assert len(re.findall(r"explainer\.collect_merge\[[^\]]+\] succeeded", text)) == 1
    lm = load_model(str(tiny_model_dir))
    cfg = CollectConfig(window=8, context=16, top_k=4, n_quantiles=4, max_tokens=700)
    single = collect(lm, resolve_hookpoint(lm.model, "layers.1.mlp"), TIED_DOCS, cfg, progress=False)
    got = get_store(settings).get_records([r.unit_id for r in single], cid)
    assert_same_records([got[r.unit_id][1] for r in single], single)


def test_merged_shards_of_a_top_k_sae_equal_a_single_process_run(tiny_model):
    """The sparse path (each token's k active features, never a dense batch) shards the same way."""
    from explainer.collect.sae import SparseAutoencoder

    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder(
        name="tiny-topk",
        source="test",
        architecture="topk",
        activation="topk",
        hook_name="layers.1",
        hookpoint="layers.1",
        weights={"W_enc": torch.randn(64, 256, generator=g) / 8, "b_enc": torch.zeros(256), "b_in": torch.zeros(64)},
        k=8,
        fingerprint="1" * 16,
    )
    assert sae.sparse_k == 8  # the collector takes the sparse path
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    seqs = make_sequences(TIED_DOCS, tiny_model.tokenizer, CFG)
    single = Collector(tiny_model, hp, seqs, CFG, sae)
    single.run()
    merged = collect_sharded(tiny_model, hp, seqs, CFG, 4, sae)
    records = merged.records()
    assert_same_records(records, single.records())
    assert sum(1 for r in records if r.windows) > 50
