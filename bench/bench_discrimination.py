"""Discrimination benchmark: does a scorer rank a planted unit's true description above the
other concepts' descriptions?

For every planted concept (bench/concepts.yaml or --concepts FILE), the held-out windows of
its planted unit are simulated from the right description and from mismatched ones (the other
concepts' descriptions); each scorer's pooled correlation is compared. Prints per scorer the
share of (right, wrong) pairs ranked correctly, the AUROC (right = positive), the mean gap,
the cascade figures, and one JSON line at the end. ``--write`` stores the shipped scorers'
figures in explainer/score/scorer_discrimination.json, which reports show next to each score.

    python -m bench.bench_discrimination [--concepts FILE] [--llm-concepts 12] [--llm-wrong 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.models import load_model  # noqa: E402
from explainer.collect.planted import load_concepts, planted_record, tokenize_windows  # noqa: E402
from explainer.score.correlation import score_simulation  # noqa: E402
from explainer.score.embedding import EmbeddingSimulator  # noqa: E402
from explainer.score.registry import DISCRIMINATION_FILE, make_scorer  # noqa: E402
from store.vectors import LocalEmbedder  # noqa: E402


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def score(sim, text, record) -> float:
    windows = record.windows_for("heldout")
    pred = sim.simulate(text, windows)
    return score_simulation([list(w.activations) for w in windows], pred, [w.domain for w in windows], n_boot=10).value


def evaluate(name, sim, records, descriptions, wrong_of, progress) -> dict:
    rows, pairs, pos, neg = {}, [], [], []
    t0 = time.perf_counter()
    calls = 0
    for rec in records:
        c = rec.unit_id.rsplit("/", 1)[1]
        right = score(sim, descriptions[c], rec)
        wrong = {o: score(sim, descriptions[o], rec) for o in wrong_of(c)}
        calls += 1 + len(wrong)
        rows[c] = {"right": right, "wrong": wrong}
        pos.append(right)
        neg.extend(wrong.values())
        pairs.extend((right > w) + 0.5 * (right == w) for w in wrong.values())
        progress(f"{name:32s} {c:12s} right={right:+.3f} wrong(mean)={statistics.mean(wrong.values()):+.3f}")
    secs = time.perf_counter() - t0
    return {
        "pairs_correct": sum(pairs) / len(pairs),
        "auroc": auroc(pos, neg),
        "mean_gap": statistics.mean(pos) - statistics.mean(neg),
        "mean_right": statistics.mean(pos),
        "n_concepts": len(records),
        "n_pairs": len(pairs),
        "simulations_per_s": calls / secs,
        "rows": rows,
    }


def cascade(cheap: dict, expensive: dict, m: int) -> dict:
    """Rank each concept's candidates with the cheap scorer, spend the expensive one on the top m."""
    agree, right_full, right_cascade, calls_full, calls_cascade = 0, 0, 0, 0, 0
    for c, row in expensive["rows"].items():
        cands = {c: row["right"], **row["wrong"]}
        cheap_scores = {d: (cheap["rows"][c]["right"] if d == c else cheap["rows"][c]["wrong"][d]) for d in cands}
        shortlist = sorted(cands, key=lambda d: -cheap_scores[d])[:m]
        best_full = max(cands, key=cands.get)
        best_cascade = max(shortlist, key=cands.get)
        agree += best_full == best_cascade
        right_full += best_full == c
        right_cascade += best_cascade == c
        calls_full += len(cands)
        calls_cascade += len(shortlist)
    n = len(expensive["rows"])
    return {
        "shortlist": m,
        "top1_agreement": agree / n,
        "llm_calls_saved": 1 - calls_cascade / calls_full,
        "right_chosen_full": right_full / n,
        "right_chosen_cascade": right_cascade / n,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", default=None, help="planted concepts YAML (default: bench/concepts.yaml)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--llm-concepts", type=int, default=12, help="concepts scored by the (slow) local LLM simulator")
    ap.add_argument(
        "--llm-wrong", type=int, default=2, help="mismatched descriptions per concept for the LLM simulator"
    )
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument(
        "--write", action="store_true", help=f"store the shipped scorers' figures in {DISCRIMINATION_FILE.name}"
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    progress = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))

    concepts = load_concepts(args.concepts)
    lm = load_model("smollm2-135m")
    windows = tokenize_windows(default_corpus(), lm.tokenizer, window=args.window)
    records = [r for r in (planted_record(c, windows) for c in concepts) if len(r.windows_for("heldout", "top")) >= 2]
    descriptions = {c.name: c.description for c in concepts}
    names = [r.unit_id.rsplit("/", 1)[1] for r in records]
    all_wrong = lambda c: [o for o in names if o != c]  # noqa: E731

    def some_wrong(c):
        i = names.index(c)
        return [names[(i + j) % len(names)] for j in range(1, args.llm_wrong + 1)]

    embedder = LocalEmbedder()
    results = {
        "simulation-embedding": evaluate(
            "simulation-embedding", make_scorer("simulation-embedding"), records, descriptions, all_wrong, progress
        ),
        "simulation-embedding[token-only]": evaluate(
            "simulation-embedding[token-only]", EmbeddingSimulator(embedder), records, descriptions, all_wrong, progress
        ),
        "simulation-embedding[context-only]": evaluate(
            "simulation-embedding[context-only]",
            EmbeddingSimulator(embedder, context_tokens=4, context_weight=1.0),
            records,
            descriptions,
            all_wrong,
            progress,
        ),
    }
    figures = {}
    if not args.skip_llm:
        llm_records = records[: args.llm_concepts]
        results["simulation-logits"] = evaluate(
            "simulation-logits", make_scorer("simulation-logits"), llm_records, descriptions, some_wrong, progress
        )
        emb_subset = evaluate(
            "simulation-embedding",
            make_scorer("simulation-embedding"),
            llm_records,
            descriptions,
            some_wrong,
            lambda s: None,
        )
        figures["cascade"] = cascade(emb_subset, results["simulation-logits"], m=1)

    print(f"\n{'scorer':36s} {'pairs ok':>9s} {'AUROC':>7s} {'gap':>7s} {'right':>7s} {'sims/s':>8s} {'concepts':>8s}")
    for name, r in results.items():
        print(
            f"{name:36s} {r['pairs_correct']:9.3f} {r['auroc']:7.3f} {r['mean_gap']:+7.3f} {r['mean_right']:+7.3f}"
            f" {r['simulations_per_s']:8.1f} {r['n_concepts']:8d}"
        )
    if "cascade" in figures:
        c = figures["cascade"]
        print(
            f"\ncascade (embedding shortlist of {c['shortlist']}, then the LLM simulator): "
            f"{c['llm_calls_saved']:.0%} LLM calls saved, top-1 agreement with simulating everything "
            f"{c['top1_agreement']:.0%}; right description chosen: full {c['right_chosen_full']:.0%}, "
            f"cascade {c['right_chosen_cascade']:.0%}"
        )
    summary = {name: {k: round(v, 4) for k, v in r.items() if k != "rows"} for name, r in results.items()}
    out = {
        "benchmark": "discrimination",
        "concepts": len(records),
        "window": args.window,
        "scorers": summary,
        **figures,
    }
    if args.write:
        shipped = {k: v for k, v in summary.items() if k in ("simulation-embedding", "simulation-logits")}
        DISCRIMINATION_FILE.write_text(
            json.dumps(
                {
                    "measured": time.strftime("%Y-%m-%d"),
                    "concepts": len(records),
                    "command": "make bench-discrimination",
                    "scorers": shipped,
                },
                indent=2,
            )
            + "\n"
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
