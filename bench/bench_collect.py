"""Collection speed against its floor, measured side by side on the same batches.

On SmolLM2-135M over the default corpus (CollectConfig defaults: 16 sequences of 64 tokens a
batch), every measured batch is run by each variant in turn (the order rotates per batch) so
that machine noise hits all of them alike:

- ``forward``: the bare forward pass truncated at the hookpoint (what ``capture`` does), the
  floor for raw units;
- ``forward+encode``: the same plus the SAE encode, the floor for SAE features;
- ``collect``: a full collection step (capture, encode, top-k, quantile pool, random windows,
  statistics), on the same device.

Sections: the 1,536 MLP neurons of layer 15; a 16,384-feature top-k SAE (k = 32, random weights)
on the residual stream after block 15; layers 3 vs 29 (cost must follow hook depth); and
``shards``: layer 3's MLP neurons collected by ``--shards`` spawned processes (one shard each, one
torch thread each) vs one process on the same corpus: whether the merged records are identical, and
the merge's cost against the single run's; ``layers``: all 30 MLP layers in one forward pass (one
collection each) vs 30 separate collections, tokens of corpus per second. The time
to turn the streaming state into records (once per collection) is reported apart. The last line
is one JSON object with every figure.

    python -m bench.bench_collect [--batches 5] [--sae-batches 4] [--depth-batches 3] [--warmup 2] [--device cpu]
                                [--shards 4] [--shard-tokens 16384] [--only-shards]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explainer.collect.collector import CollectConfig, Collector, make_sequences  # noqa: E402
from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.hooks import capture, resolve_hookpoint  # noqa: E402
from explainer.collect.models import load_model  # noqa: E402
from explainer.collect.sae import SparseAutoencoder  # noqa: E402


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_topk_sae(d_in: int, d_sae: int, k: int, hookpoint: str) -> SparseAutoencoder:
    import torch

    g = torch.Generator().manual_seed(0)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": torch.zeros(d_sae),
        "b_in": torch.randn(d_in, generator=g) * 0.1,
    }
    return SparseAutoencoder(
        name="random-topk-16k",
        source="bench",
        architecture="topk",
        activation="topk",
        hook_name=hookpoint,
        hookpoint=hookpoint,
        weights=w,
        k=k,
        fingerprint="0" * 16,
    )


def side_by_side(col: Collector, n_batches: int, variants: dict, warmup: int) -> dict[str, float]:
    """Tokens/s of each variant over the same ``n_batches`` batches, after ``warmup`` batches that
    every variant also runs but that are not timed (the first batches fill the top-k and the pool)."""
    names = list(variants)
    seconds = dict.fromkeys(names, 0.0)
    per_batch: list[dict[str, float]] = []
    tokens = 0
    for b in range(min(warmup + n_batches, col.n_batches)):
        inputs = col.batch_inputs(b)
        order = names[b % len(names) :] + names[: b % len(names)]
        took = {}
        for name in order:
            sync(col.device)
            t0 = time.perf_counter()
            variants[name](b, inputs)
            sync(col.device)
            took[name] = time.perf_counter() - t0
        if b >= warmup:
            for name in names:
                seconds[name] += took[name]
            per_batch.append(took)
            tokens += int(inputs[1][:, 1:].sum())
    floor = names[-2]  # the variant collect is compared with: forward, or forward+encode
    median = statistics.median(t[floor] / t[names[-1]] for t in per_batch)
    return {name: tokens / seconds[name] for name in names} | {"tokens": tokens, "median_batch_ratio": median}


def bare(col: Collector, encode: bool = False):
    def run(_b, inputs):
        ids, mask = inputs
        if encode:  # capture + encode, in the form collection consumes (a top-k SAE's k features per token)
            return col.unit_acts(ids, mask)
        return capture(col.loaded.model, col.hookpoint, ids.to(col.device), mask.to(col.device))[:, 1:, :]

    return run


def timed_records(col: Collector) -> float:
    t0 = time.perf_counter()
    col.records()
    return time.perf_counter() - t0


def _shard_worker(args: tuple) -> tuple[int, float, float, bytes]:
    """One shard in its own process (spawned, one torch thread): load the model, run the shard's
    batches; returns (shard, load seconds, run seconds, state bytes)."""
    import torch

    from explainer.collect.shards import run_shard, state_to_bytes

    index, n_shards, layer, max_tokens, device = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lm = load_model("smollm2-135m", device)
    hp = resolve_hookpoint(lm.model, f"layers.{layer}.mlp")
    seqs = make_sequences(default_corpus(), lm.tokenizer, CollectConfig(max_tokens=max_tokens))
    col = Collector(lm, hp, seqs, CollectConfig(max_tokens=max_tokens))
    from explainer.collect.shards import plan_shards

    shard = plan_shards(col.n_batches, n_shards)[index]
    t1 = time.perf_counter()
    state = run_shard(col, shard)
    return index, t1 - t0, time.perf_counter() - t1, state_to_bytes(state)


def shards_section(n_shards: int, layer: int, max_tokens: int, device: str) -> dict:
    """``n_shards`` shard processes vs one process over the same corpus: identical records, and
    the merge's cost (merge the states + build the records) against the single run's collection."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from explainer.collect.shards import merge_states, state_from_bytes

    cfg = CollectConfig(max_tokens=max_tokens)
    lm = load_model("smollm2-135m", device)
    hp = resolve_hookpoint(lm.model, f"layers.{layer}.mlp")
    seqs = make_sequences(default_corpus(), lm.tokenizer, cfg)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(n_shards, mp_context=get_context("spawn")) as pool:
        parts = sorted(pool.map(_shard_worker, [(i, n_shards, layer, max_tokens, device) for i in range(n_shards)]))
    sharded_wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    merged = Collector(lm, hp, seqs, cfg)
    state = state_from_bytes(parts[0][3])
    for part in parts[1:]:
        state = merge_states([state, state_from_bytes(part[3])])
    merged.load(state)
    merge_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    merged_records = merged.records()
    records_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    single = Collector(lm, hp, seqs, cfg)
    single.run()
    single_s = time.perf_counter() - t3
    single_records = single.records()
    identical_windows = all(a.windows == b.windows for a, b in zip(single_records, merged_records))
    worst = max(
        abs(getattr(a.stats, f) - getattr(b.stats, f))
        for a, b in zip(single_records, merged_records)
        for f in ("max", "mean", "std", "density")
    )
    same_top = all(
        bool(
            (
                getattr(single, p).seq.gather(1, getattr(single, p).order())
                == getattr(merged, p).seq.gather(1, getattr(merged, p).order())
            ).all()
        )
        for p in ("top", "pool")
    )
    tokens = int(single.stats.n_tokens)
    return {
        "n_shards": n_shards,
        "hookpoint": hp.name,
        "units": hp.width,
        "tokens": tokens,
        "identical": bool(identical_windows and same_top and worst <= 1e-6),
        "identical_windows": identical_windows,
        "max_stat_abs_diff": worst,
        "single_s": round(single_s, 2),
        "single_tok_s": round(tokens / single_s, 1),
        "sharded_wall_s": round(sharded_wall, 2),
        "shard_load_s": [round(p[1], 2) for p in parts],
        "shard_run_s": [round(p[2], 2) for p in parts],
        "merge_s": round(merge_s, 3),
        "merge_overhead": round(merge_s / single_s, 4),
        "records_s": round(records_s, 2),
        "state_mb_per_shard": round(len(parts[0][3]) / 1e6, 1),
    }


def layers_section(lm, seqs: list, n_batches: int) -> dict:
    """All MLP layers in one pass (one collector each, the pass stopped at the last layer) vs one
    separate collection per layer, over the same ``n_batches`` batches; tokens/s of corpus for each."""
    from explainer.collect.multi import MultiCollector

    cfg = CollectConfig()
    n_layers = len(lm.model.model.layers)
    hps = [resolve_hookpoint(lm.model, f"layers.{i}.mlp") for i in range(n_layers)]
    multi = MultiCollector.build(lm, hps, seqs, cfg)
    multi.step(0)  # warm-up, untimed
    t0 = time.perf_counter()
    tokens = sum(multi.step(b) for b in range(1, n_batches + 1))
    one_pass = time.perf_counter() - t0
    del multi
    separate = 0.0
    for hp in hps:
        col = Collector(lm, hp, seqs, cfg)
        t1 = time.perf_counter()
        for b in range(1, n_batches + 1):
            col.step(b)
        separate += time.perf_counter() - t1
    return {
        "layers": n_layers,
        "units_per_layer": hps[0].width,
        "tokens": tokens,
        "one_pass_tok_s": round(tokens / one_pass, 1),
        "separate_tok_s": round(tokens / separate, 1),
        "speedup": round(separate / one_pass, 2),
        "forward_blocks_ratio": round(sum(range(1, n_layers + 1)) / n_layers, 2),
    }


def main() -> None:
    configure_runtime()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=5, help="measured batches for the layer-15 MLP section")
    p.add_argument("--sae-batches", type=int, default=4, help="measured batches for the SAE section")
    p.add_argument("--depth-batches", type=int, default=3, help="measured batches for layers 3 and 29")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (1 for the depth section)")
    p.add_argument("--device", default=os.environ.get("EXPLAINER_DEVICE", "cpu"))
    p.add_argument("--shards", type=int, default=4, help="shard processes for the shards section (0 skips it)")
    p.add_argument("--shard-tokens", type=int, default=16 * 1024, help="corpus tokens for the shards section")
    p.add_argument("--only-shards", action="store_true", help="run only the shards section")
    p.add_argument("--layer-batches", type=int, default=2, help="measured batches for the all-layers section")
    p.add_argument("--only-layers", action="store_true", help="run only the all-layers section")
    args = p.parse_args()
    import torch

    if args.only_layers:
        lm = load_model("smollm2-135m", args.device)
        seqs = make_sequences(
            default_corpus(), lm.tokenizer, CollectConfig(max_tokens=(args.layer_batches + 1) * 16 * 64)
        )
        out = {"device": args.device, "load_avg_1m": round(os.getloadavg()[0], 2)}
        out["layers"] = layers_section(lm, seqs, args.layer_batches)
        print(json.dumps(out))
        return
    if args.only_shards:
        out = {"device": args.device, "load_avg_1m": round(os.getloadavg()[0], 2)}
        out["shards"] = shards_section(args.shards, 3, args.shard_tokens, args.device)
        print(json.dumps(out))
        return

    t_start = time.perf_counter()
    lm = load_model("smollm2-135m", args.device)
    cfg = CollectConfig()
    n = args.warmup + max(args.batches, args.sae_batches, args.depth_batches) + 1
    seqs = make_sequences(default_corpus(), lm.tokenizer, CollectConfig(max_tokens=n * 16 * 64))
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, {len(seqs)} sequences of <= {cfg.context} tokens,"
        f" {cfg.batch_size} a batch"
    )
    out: dict = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batch_tokens": cfg.batch_size * cfg.context,
        "warmup_batches": args.warmup,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }

    hp = resolve_hookpoint(lm.model, "layers.15.mlp")
    col = Collector(lm, hp, seqs, cfg)
    r = side_by_side(col, args.batches, {"forward": bare(col), "collect": col.step}, args.warmup)
    out["mlp15"] = {
        "units": hp.width,
        "forward_tok_s": round(r["forward"], 1),
        "collect_tok_s": round(r["collect"], 1),
        "ratio": round(r["collect"] / r["forward"], 3),
        "median_batch_ratio": round(r["median_batch_ratio"], 3),
        "records_s": round(timed_records(col), 2),
    }
    print(
        f"layers.15.mlp  {hp.width} neurons: forward {r['forward']:.0f} tok/s, collect {r['collect']:.0f} tok/s, "
        f"ratio {r['collect'] / r['forward']:.3f} (records {out['mlp15']['records_s']} s once)"
    )

    hp = resolve_hookpoint(lm.model, "layers.15")
    sae = random_topk_sae(hp.width, 16_384, 32, hp.name)
    col = Collector(lm, hp, seqs, cfg, encoder=sae)
    r = side_by_side(
        col,
        args.sae_batches,
        {"forward": bare(col), "forward+encode": bare(col, encode=True), "collect": col.step},
        args.warmup,
    )
    out["sae16k"] = {
        "units": sae.width,
        "k": sae.k,
        "hookpoint": hp.name,
        "forward_tok_s": round(r["forward"], 1),
        "forward_encode_tok_s": round(r["forward+encode"], 1),
        "collect_tok_s": round(r["collect"], 1),
        "ratio_vs_forward_encode": round(r["collect"] / r["forward+encode"], 3),
        "ratio_vs_forward": round(r["collect"] / r["forward"], 3),
        "median_batch_ratio_vs_forward_encode": round(r["median_batch_ratio"], 3),
        "records_s": round(timed_records(col), 2),
    }
    print(
        f"layers.15 + 16k top-k SAE: forward {r['forward']:.0f}, forward+encode {r['forward+encode']:.0f}, "
        f"collect {r['collect']:.0f} tok/s; collect / (forward+encode) {out['sae16k']['ratio_vs_forward_encode']:.3f} "
        f"(records {out['sae16k']['records_s']} s once)"
    )

    depth = {}
    for layer in (3, 29):
        hp = resolve_hookpoint(lm.model, f"layers.{layer}.mlp")
        col = Collector(lm, hp, seqs, cfg)
        r = side_by_side(col, args.depth_batches, {"forward": bare(col), "collect": col.step}, 1)
        depth[layer] = r
        print(
            f"layers.{layer}.mlp: forward {r['forward']:.0f} tok/s, collect {r['collect']:.0f} tok/s, "
            f"ratio {r['collect'] / r['forward']:.3f}"
        )
    out["depth"] = {
        "layer3_forward_tok_s": round(depth[3]["forward"], 1),
        "layer29_forward_tok_s": round(depth[29]["forward"], 1),
        "layer3_collect_tok_s": round(depth[3]["collect"], 1),
        "layer29_collect_tok_s": round(depth[29]["collect"], 1),
        "speedup_3_vs_29": round(depth[3]["collect"] / depth[29]["collect"], 2),
        "blocks_ratio_30_vs_4": 7.5,
        "layer3_ratio": round(depth[3]["collect"] / depth[3]["forward"], 3),
        "layer29_ratio": round(depth[29]["collect"] / depth[29]["forward"], 3),
    }
    print(
        f"layer 3 collects {out['depth']['speedup_3_vs_29']}x faster than layer 29 (30 vs 4 blocks run: 7.5x at most)"
    )
    out["layers"] = layers_section(lm, seqs, min(args.layer_batches, len(seqs) // cfg.batch_size - 1))
    print(f"all MLP layers: {out['layers']}")
    if args.shards:
        out["shards"] = shards_section(args.shards, 3, args.shard_tokens, args.device)
        print(f"shards: {out['shards']}")
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
