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

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.models import resolve_model  # noqa: E402
from explainer.collect.planted import (  # noqa: E402
    CONTEXT_CONCEPTS,
    DEFAULT_CONCEPTS,
    load_concepts,
    planted_record,
    tokenize_windows,
)
from explainer.score.contextual import ContextualSimulator  # noqa: E402
from explainer.score.correlation import score_simulation  # noqa: E402
from explainer.score.embedding import EmbeddingSimulator  # noqa: E402
from explainer.score.registry import DISCRIMINATION_FILE, make_scorer  # noqa: E402
from store.embedding import LocalEmbedder  # noqa: E402


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def score(sim, text, record) -> float:
    windows = record.windows_for("heldout")
    pred = sim.simulate(text, windows)
    return score_simulation([list(w.activations) for w in windows], pred, [w.domain for w in windows], n_boot=10).value


def summarise(rows: dict, simulations_per_s: float) -> dict:
    """Figures of {concept: {"right": score, "wrong": {other: score}}}."""
    pairs, pos, neg = [], [], []
    for row in rows.values():
        pos.append(row["right"])
        neg.extend(row["wrong"].values())
        pairs.extend((row["right"] > w) + 0.5 * (row["right"] == w) for w in row["wrong"].values())
    return {
        "pairs_correct": sum(pairs) / len(pairs),
        "auroc": auroc(pos, neg),
        "mean_gap": statistics.mean(pos) - statistics.mean(neg),
        "mean_right": statistics.mean(pos),
        "n_concepts": len(rows),
        "n_pairs": len(pairs),
        "simulations_per_s": simulations_per_s,
        "rows": rows,
    }


def evaluate(name, sim, records, descriptions, wrong_of, progress) -> dict:
    """Each record scored with its own description and with those of ``wrong_of(concept)``."""
    rows = {}
    t0 = time.perf_counter()
    calls = 0
    for rec in records:
        c = rec.unit_id.rsplit("/", 1)[1]
        right = score(sim, descriptions[c], rec)
        wrong = {o: score(sim, descriptions[o], rec) for o in wrong_of(c)}
        calls += 1 + len(wrong)
        rows[c] = {"right": right, "wrong": wrong}
        progress(f"{name:36s} {c:18s} right={right:+.3f} wrong(mean)={statistics.mean(wrong.values()):+.3f}")
    return summarise(rows, calls / (time.perf_counter() - t0))


def set_label(path: str | Path) -> str:
    """Short name of a concepts file: ``token`` for bench/concepts.yaml, else the stem without its
    ``concepts_`` prefix (bench/concepts_context.yaml → ``context``)."""
    stem = Path(path).stem
    return "token" if stem == "concepts" else stem.removeprefix("concepts_")


def figures_on(matrix: dict, names: list[str], simulations_per_s: float) -> dict:
    """Discrimination on the concepts ``names``, each against the other concepts of ``names`` only."""
    return summarise(
        {c: {"right": matrix[c][c], "wrong": {o: matrix[c][o] for o in names if o != c}} for c in names},
        simulations_per_s,
    )


def evaluate_sets(name, sim, records, descriptions, sets: dict[str, list[str]], progress) -> dict:
    """Every record scored with every description once; figures per concept set and on their union
    (each concept against every other concept of all sets)."""
    wrong_all = lambda c: [o for o in descriptions if o != c]  # noqa: E731
    union = evaluate(name, sim, records, descriptions, wrong_all, progress)
    matrix = {c: {c: row["right"], **row["wrong"]} for c, row in union["rows"].items()}
    speed = union["simulations_per_s"]
    per_set = {label: figures_on(matrix, names, speed) for label, names in sets.items()}
    return {"union": union, "sets": per_set}


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


SHIPPED = ("simulation-embedding", "simulation-context", "simulation-trained", "simulation-logits")
"""Scorers whose figures go to the discrimination file (reports show them beside scores)."""
CAUSAL_SCORERS = ("intervention", "intervention-embedding")
"""Scorers whose figures ``make bench-intervention --write`` measures on planted causal units and
stores in the same file; this benchmark keeps them (and their ``causal`` block) as they are."""


def cheap_scorers(embedder) -> dict:
    """The no-LLM simulators measured on every concept, with ablations (``[...]``): the embedding
    simulator's, and ``simulation-context`` as it was before the verbalised context."""
    return {
        "simulation-embedding": lambda: make_scorer("simulation-embedding"),
        "simulation-context": lambda: make_scorer("simulation-context"),
        "simulation-trained": lambda: make_scorer("simulation-trained"),
        "simulation-embedding[token-only]": lambda: EmbeddingSimulator(embedder),
        "simulation-embedding[context-only]": lambda: EmbeddingSimulator(
            embedder, context_tokens=4, context_weight=1.0
        ),
        # simulation-context version 1: raw-text spans only, no verbalised context
        "simulation-context[v1-spans]": lambda: ContextualSimulator(
            embedder, spans=((0, 0, 0.25), (4, 0, 0.5), (2, 2, 1.0)), verbal_weight=0.0
        ),
    }


def flat_figures(r: dict) -> dict:
    """One scorer's figures as the flat numbers the discrimination file holds: the union's
    (``auroc``, ``pairs_correct``, …) and each set's with the set as suffix (``auroc_context``)."""
    keys = ("pairs_correct", "auroc", "mean_gap", "mean_right", "n_concepts", "n_pairs")
    out = {k: round(r["union"][k], 4) for k in keys}
    for label, f in r["sets"].items():
        out.update({f"{k}_{label}": round(f[k], 4) for k in keys})
    out["simulations_per_s"] = round(r["union"]["simulations_per_s"], 4)
    return out


def write_discrimination(summary: dict, sets: dict[str, list[str]], files: list[str], command: str) -> None:
    """Store the shipped scorers' figures; scorers not measured this time keep their last figures."""
    try:
        old = json.loads(DISCRIMINATION_FILE.read_text())
    except (OSError, ValueError):
        old = {}
    scorers = {k: v for k, v in (old.get("scorers") or {}).items() if k in SHIPPED or k in CAUSAL_SCORERS}
    measured = dict(old.get("measured_per_scorer") or {})
    for k, v in summary.items():
        if k in SHIPPED:
            scorers[k] = v
            measured[k] = time.strftime("%Y-%m-%d")
    DISCRIMINATION_FILE.write_text(
        json.dumps(
            {
                "measured": time.strftime("%Y-%m-%d"),
                "measured_per_scorer": measured,
                "concepts": {label: len(names) for label, names in sets.items()},
                "concept_files": [
                    str(Path(f).resolve().relative_to(ROOT)) if Path(f).resolve().is_relative_to(ROOT) else str(f)
                    for f in files
                ],
                "command": command,
                **({"causal": old["causal"]} if "causal" in old else {}),
                "scorers": scorers,
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> dict:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--concepts",
        nargs="+",
        default=None,
        help="planted concepts YAML files, one set each (default: bench/concepts.yaml bench/concepts_context.yaml)",
    )
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N concepts of each set")
    ap.add_argument(
        "--scorers",
        default=None,
        help="comma-separated no-LLM scorers to measure (default: all of simulation-embedding, "
        "simulation-context, simulation-trained and the embedding ablations)",
    )
    ap.add_argument(
        "--llm-concepts", type=int, default=12, help="concepts per set scored by the (slow) local LLM simulator"
    )
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

    files = args.concepts or [str(DEFAULT_CONCEPTS), str(CONTEXT_CONCEPTS)]
    labels = [set_label(f) for f in files]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"concept files must have distinct names: {', '.join(files)}")
    per_file = [load_concepts(f)[: args.limit] for f in files]
    names_seen = [c.name for cs in per_file for c in cs]
    if len(set(names_seen)) != len(names_seen):
        dup = sorted({n for n in names_seen if names_seen.count(n) > 1})
        raise SystemExit(f"concept names must be unique across files: {', '.join(dup)}")
    from transformers import AutoTokenizer

    src = resolve_model("smollm2-135m")  # the tokenizer only: no model weights are loaded here
    tokenizer = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    windows = tokenize_windows(default_corpus(), tokenizer, window=args.window)
    sets: dict[str, list[str]] = {}
    records, descriptions = [], {}
    for label, concepts in zip(labels, per_file):
        recs = [r for r in (planted_record(c, windows) for c in concepts) if len(r.windows_for("heldout", "top")) >= 2]
        records += recs
        sets[label] = [r.unit_id.rsplit("/", 1)[1] for r in recs]
        descriptions.update({c.name: c.description for c in concepts if c.name in sets[label]})

    embedder = LocalEmbedder()
    available = cheap_scorers(embedder)
    chosen = args.scorers.split(",") if args.scorers else list(available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise SystemExit(f"unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    results = {n: evaluate_sets(n, available[n](), records, descriptions, sets, progress) for n in chosen}

    extra = {}
    if not args.skip_llm:
        # The LLM simulator is slow: a few concepts of each set, a few wrong descriptions each.
        def some_wrong(names):
            return lambda c: [names[(names.index(c) + j) % len(names)] for j in range(1, args.llm_wrong + 1)]

        llm = make_scorer("simulation-logits")
        emb = make_scorer("simulation-embedding")
        llm_sets, emb_rows, llm_rows, speeds = {}, {}, {}, []
        for label, names in sets.items():
            recs = [r for r in records if r.unit_id.rsplit("/", 1)[1] in names[: args.llm_concepts]]
            llm_sets[label] = evaluate("simulation-logits", llm, recs, descriptions, some_wrong(names), progress)
            speeds.append(llm_sets[label]["simulations_per_s"])
            llm_rows.update(llm_sets[label]["rows"])
            emb_rows.update(
                evaluate("simulation-embedding", emb, recs, descriptions, some_wrong(names), lambda s: None)["rows"]
            )
        results["simulation-logits"] = {"union": summarise(llm_rows, statistics.mean(speeds)), "sets": llm_sets}
        extra["cascade"] = cascade({"rows": emb_rows}, {"rows": llm_rows}, m=1)

    print(
        f"\n{'scorer':36s} {'set':9s} {'pairs ok':>9s} {'AUROC':>7s} {'gap':>7s} {'right':>7s} {'sims/s':>8s} {'concepts':>8s}"
    )
    for name, r in results.items():
        for label, f in [*r["sets"].items(), ("union", r["union"])]:
            print(
                f"{name:36s} {label:9s} {f['pairs_correct']:9.3f} {f['auroc']:7.3f} {f['mean_gap']:+7.3f}"
                f" {f['mean_right']:+7.3f} {f['simulations_per_s']:8.1f} {f['n_concepts']:8d}"
            )
    # Ablations ("[...]") are not registered scorers, so they cannot be the default.
    best = max((n for n in results if "[" not in n), key=lambda n: results[n]["union"]["auroc"])
    print(f"\nbest AUROC on the union of {' + '.join(sets)}: {best} ({results[best]['union']['auroc']:.3f})")
    fooled = {
        n: sorted(c for c, row in r["union"]["rows"].items() if any(w >= row["right"] for w in row["wrong"].values()))
        for n, r in results.items()
    }
    for n, cs in fooled.items():
        print(f"{n}: a wrong description scores at least as well as the right one on {', '.join(cs) or 'no concept'}")
    if "cascade" in extra:
        c = extra["cascade"]
        print(
            f"\ncascade (embedding shortlist of {c['shortlist']}, then the LLM simulator): "
            f"{c['llm_calls_saved']:.0%} LLM calls saved, top-1 agreement with simulating everything "
            f"{c['top1_agreement']:.0%}; right description chosen: full {c['right_chosen_full']:.0%}, "
            f"cascade {c['right_chosen_cascade']:.0%}"
        )
    summary = {name: flat_figures(r) for name, r in results.items()}
    out = {
        "benchmark": "discrimination",
        "concepts": {label: len(names) for label, names in sets.items()},
        "window": args.window,
        "best_on_union": best,
        "scorers": summary,
        "fooled_by_a_wrong_description": fooled,
        **extra,
    }
    if args.write:
        args_given = sys.argv[1:] if argv is None else argv
        write_discrimination(summary, sets, files, " ".join(["python -m bench.bench_discrimination", *args_given]))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
