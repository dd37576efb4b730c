"""Re-test benchmark: SmolLM2-135M, a control checkpoint and a copy fine-tuned on one domain.

In a temporary data directory: SmolLM2-135M (the packaged GGUF) is collected at one MLP layer over
the default corpus; a few units per domain (code, docs, legal; the most peaked ones) are explained
by the no-LLM baseline through ``explain_stage`` and scored with ``simulation-embedding``. Two new
checkpoints are written as Hugging Face folders by the same code: the control (the same weights,
saved again) and a copy whose blocks up to the hooked one are fine-tuned for a hundred-odd AdamW
steps on the legal domain of the default corpus (the recipe of tests/retest/test_retest_smollm2.py:
120 steps at lr 5e-4, 2 × 32 tokens a step). Each is re-tested with :func:`explainer.retest.run.retest`. Printed per checkpoint: the
verdict counts, the broken share, the time per unit, the mean activation shift per domain (of the
explained units, and of every unit of the hookpoint) and the three units that moved most with their old and new top windows. The last line is one JSON object.

    python -m bench.bench_retest [--layer 3] [--units-per-domain 4] [--steps 120] [--lr 5e-4] [--max-tokens 6000]

It exits with status 1 when the control reports a unit broken (the same weights must hold).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explainer.collect.collector import CollectConfig  # noqa: E402
from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.models import load_model  # noqa: E402
from explainer.llm.chat import LLMConfig  # noqa: E402
from explainer.pipeline import collection  # noqa: E402
from explainer.pipeline import stages as pipeline  # noqa: E402
from explainer.retest.run import RetestOptions, evidence, retest  # noqa: E402
from explainer.retest.summary import unit_domain  # noqa: E402
from explainer.runtime import get_store  # noqa: E402
from explainer.settings import load_settings  # noqa: E402

DOMAINS = ("code", "docs", "legal")


def fine_tune(
    model,
    tokenizer,
    texts: list[str],
    steps: int,
    lr: float,
    up_to: int | None,
    batch: int = 2,
    seq_len: int = 32,
    log_every: int | None = 10,
):
    """A copy of ``model`` trained ``steps`` next-token AdamW steps on random chunks of ``texts``,
    and the loss of each step; with ``up_to``, only blocks 0…``up_to`` are trained (the others and
    the tied embeddings stay frozen), which keeps a CPU fine-tune short and moves exactly the blocks
    the hooked units read. The loss is printed every ``log_every`` steps (never with ``None``)."""
    import torch

    tuned = copy.deepcopy(model).train()
    if up_to is not None:
        for name, p in tuned.named_parameters():
            parts = name.split(".")
            block = int(parts[parts.index("layers") + 1]) if "layers" in parts else None
            p.requires_grad_(block is not None and block <= up_to)
    ids = tokenizer("\n".join(texts), return_tensors="pt").input_ids[0]
    chunks = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len, seq_len)] or [ids[:seq_len]]
    opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        pick = torch.randint(len(chunks), (min(batch, len(chunks)),), generator=gen)
        x = torch.stack([chunks[int(i)] for i in pick])
        loss = tuned(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and step % log_every == 0:
            print(f"  step {step}: loss {losses[-1]:.3f}", flush=True)
    return tuned.eval(), losses


def save(model, tokenizer, path: Path) -> str:
    """A Hugging Face folder; a model dequantised from a GGUF file (which transformers will not
    save as such) is written as its config without the GGUF marking and its float32 weights."""
    config = model.config.to_dict()
    if "quantization_config" in config:
        from safetensors.torch import save_model

        path.mkdir(parents=True, exist_ok=True)
        del config["quantization_config"]
        (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_model(model, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def label_old(settings, layer: int, max_tokens: int, per_domain: int) -> tuple[str, int]:
    """Collect SmolLM2-135M at ``layers.L.mlp``; explain and score ``per_domain`` units per domain."""
    cfg = CollectConfig(max_tokens=max_tokens)
    cid = collection.collect_stage(settings, "smollm2-135m", f"layers.{layer}.mlp", None, cfg, progress=False)
    store = get_store(settings)
    chosen: dict[str, list[str]] = {d: [] for d in DOMAINS}
    for uid in collection.select_units(settings, cid, None):
        dom = unit_domain(store.get_record(uid, cid))
        if dom in chosen and len(chosen[dom]) < per_domain:
            chosen[dom].append(uid)
        if all(len(v) == per_domain for v in chosen.values()):
            break
    opts = pipeline.LabelOptions(
        explainer=LLMConfig(model="baseline"), best_of=0, baseline_candidate=True, scorers=("simulation-embedding",)
    )
    units = [u for us in chosen.values() for u in us]
    for uid in units:
        pipeline.score_stage(settings, pipeline.explain_stage(settings, cid, uid, opts), opts)
    return cid, len(units)


def moved_evidence(settings, doc: dict, unit: dict) -> dict:
    """Old and new top windows of a unit that held (the retest output carries them only for the
    others): read from the two collections it compared."""
    store = get_store(settings)
    old = store.get_records([unit["unit_id"]], doc["collections"]["old_on_corpus"]).get(unit["unit_id"])
    new = store.get_records([unit["new_unit_id"]], doc["collections"]["new"]).get(unit["new_unit_id"])
    return {"old": evidence(old[1] if old else None, 2), "new": evidence(new[1] if new else None, 2)}


def show(settings, name: str, doc: dict) -> dict:
    s, t = doc["summary"], doc["timing"]
    print(
        f"\n{name}: {s['units']} units — {s['holds']} hold, {s['weakened']} weakened, {s['broken']} broken, "
        f"{s['dead']} dead; broken share {s['broken_share']:.1%}; {t['seconds_per_unit']:.2f} s per unit "
        f"(collect {t['collect_s']:.1f} s, score {t['score_s']:.1f} s, total {t['total_s']:.1f} s)"
    )
    for dom, d in doc["by_domain"].items():
        shift = "–" if d["mean_shift"] is None else f"{d['mean_shift']:.3f}"
        print(f"  {dom:6s} units {d['units']:2d}  mean drop {d['mean_drop']:+.3f}  mean |log2 max ratio| {shift}")
    for dom, d in doc["hookpoint_by_domain"].items():
        mean = "–" if d["mean_shift"] is None else f"{d['mean_shift']:.3f}"
        median = "–" if d["median_shift"] is None else f"{d['median_shift']:.3f}"
        print(
            f"  every unit of the hookpoint, {dom:6s}: {d['units']:4d} units, |log2 max ratio| mean {mean} median {median}"
        )
    moved = sorted(doc["units"], key=lambda u: -((u["drift"] or {}).get("shift") or 0.0))[:3]
    for u in moved:
        d = u["drift"]
        print(
            f"  moved: {u['unit_id']} ({u['domain']}) {u['verdict']}: max {d['max']['old']:.3g}→{d['max']['new']:.3g}, "
            f"score {u['old']['value']:+.3f}→{(u['new'] or {}).get('value', float('nan')):+.3f}; "
            f"explanation: {u['explanations'][0]['text']}"
        )
        shown = u.get("evidence") or moved_evidence(settings, doc, u)
        for side in ("old", "new"):
            for w in shown[side][:2]:
                print(f"      {side} ({w['domain']}, max {w['max']:.3g}): {w['text'][:110]}")
    return {
        "units": s["units"],
        "broken_share": s["broken_share"],
        "verdicts": {v: s[v] for v in ("holds", "weakened", "broken", "dead")},
        "seconds_per_unit": round(t["seconds_per_unit"], 3),
        "score_seconds_per_unit": round(t["score_s"] / s["units"], 4) if s["units"] else None,
        "collect_s": round(t["collect_s"], 1),
        "mean_shift_by_domain": {k: v["mean_shift"] for k, v in doc["by_domain"].items()},
        "mean_drop_by_domain": {k: v["mean_drop"] for k, v in doc["by_domain"].items()},
        "hookpoint_shift_by_domain": {
            k: {"units": v["units"], "mean": v["mean_shift"], "median": v["median_shift"]}
            for k, v in doc["hookpoint_by_domain"].items()
        },
        "most_moved": [u["unit_id"] for u in moved],
    }


def main() -> None:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=6_000)
    ap.add_argument("--units-per-domain", type=int, default=4)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--domain", default="legal", choices=DOMAINS, help="the fine-tuning domain")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-retest-") as tmp:
        os.environ["EXPLAINER_DATA_DIR"] = str(Path(tmp) / "data")
        settings = load_settings()
        cid, n = label_old(settings, args.layer, args.max_tokens, args.units_per_domain)
        print(f"old: smollm2-135m layers.{args.layer}.mlp, collection {cid}, {n} units explained and scored")
        lm = load_model("smollm2-135m", settings.device)
        control = save(lm.model, lm.tokenizer, Path(tmp) / "smollm2-135m-control")
        texts = [d.text for d in default_corpus() if d.domain == args.domain]
        t_ft = time.perf_counter()
        tuned, losses = fine_tune(lm.model, lm.tokenizer, texts, args.steps, args.lr, up_to=args.layer)
        ft_s = time.perf_counter() - t_ft
        k = max(1, min(10, len(losses) // 2))
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        print(
            f"fine-tuned on {args.domain}: {args.steps} steps, mean loss of the first/last {k} steps {first:.2f} → {last:.2f}, {ft_s:.0f} s"
        )
        tuned_dir = save(tuned, lm.tokenizer, Path(tmp) / f"smollm2-135m-{args.domain}")
        del tuned
        results = {}
        for name, path in (("control", control), ("fine_tuned", tuned_dir)):
            results[name] = show(settings, name, retest(settings, cid, RetestOptions(model=path), progress=False))
    out = {
        "benchmark": "retest",
        "model": "smollm2-135m",
        "hookpoint": f"layers.{args.layer}.mlp",
        "max_tokens": args.max_tokens,
        "fine_tune": {
            "domain": args.domain,
            "steps": args.steps,
            "lr": args.lr,
            "loss_first_last": [round(first, 3), round(last, 3)],
            "seconds": round(ft_s, 1),
        },
        **results,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    if results["control"]["verdicts"]["broken"]:
        sys.exit(f"the control (the same weights) reported {results['control']['verdicts']['broken']} unit(s) broken")


if __name__ == "__main__":
    main()
