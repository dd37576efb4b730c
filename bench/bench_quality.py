"""Quality benchmark: planted units through the real explain → score → index → search path.

Each planted concept (the token-level bench/concepts.yaml and the contextual
bench/concepts_context.yaml, or --concepts FILE...; each file is a set of its own) becomes a unit whose activation is
a rule over the default corpus's tokens and whose ground-truth description is known. For every
explainer — the no-LLM baseline, the local LLM (SmolLM2-135M-Instruct) and, when
EXPLAINER_LLM_BASE_URL is set, that endpoint — the planted records are stored as a collection of
their own (subject model ``planted-EXPLAINER``) in a temporary data directory and run through
``pipeline.explain_stage``, ``score_stage`` and ``index_stage``. Printed per explainer: the mean and
median simulation score of the stored explanations, and recall@1 / recall@3 when each concept's
ground-truth description is the search query (``explainer.search.hybrid.search`` filtered to that
explainer's model). The last line is one JSON object of the figures.

    python -m bench.bench_quality [--concepts FILE ...] [--limit N] [--explainers baseline,local]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_discrimination import set_label  # noqa: E402
from explainer.collect.corpus import corpus_fingerprint, default_corpus  # noqa: E402
from explainer.collect.planted import (  # noqa: E402
    CONTEXT_CONCEPTS,
    DEFAULT_CONCEPTS,
    load_concepts,
    planted_record,
    tokenize_windows,
)
from explainer.llm.chat import LLMConfig  # noqa: E402
from explainer.pipeline import stages as pipeline  # noqa: E402
from explainer.runtime import get_store  # noqa: E402
from explainer.score.registry import DEFAULT_SCORERS  # noqa: E402
from explainer.search.hybrid import SearchFilters, search  # noqa: E402
from explainer.settings import load_settings  # noqa: E402
from store.records import make_unit_id  # noqa: E402

HOOKPOINT = "layers.0.mlp"


def explainer_options(name: str, settings, scorers: tuple[str, ...]) -> pipeline.LabelOptions:
    """LabelOptions of one benchmarked explainer: each explains on its own (no baseline competing)."""
    if name == "baseline":
        return pipeline.LabelOptions(
            explainer=LLMConfig(model="baseline"), best_of=0, baseline_candidate=True, scorers=scorers
        )
    if name == "local":
        return pipeline.LabelOptions(explainer=LLMConfig(model="smollm2-135m", device=settings.device), scorers=scorers)
    if name == "endpoint":
        return pipeline.LabelOptions(
            explainer=LLMConfig(
                model=settings.llm_model, base_url=settings.llm_base_url, timeout_s=settings.llm_timeout_s
            ),
            scorers=scorers,
        )
    raise SystemExit(f"unknown explainer {name!r}: baseline, local or endpoint")


def run_explainer(
    name: str, settings, concepts, windows, corpus_fp: str, scorers: tuple[str, ...], progress, label: str = "token"
) -> dict:
    store = get_store(settings)
    model = f"planted-{name}" if label == "token" else f"planted-{name}-{label}"
    records = []
    for i, c in enumerate(concepts):
        r = planted_record(c, windows, model=model)
        records.append(replace(r, unit_id=make_unit_id(model, HOOKPOINT, i), hookpoint=HOOKPOINT, index=i))
    cid = f"bench-quality-{name}-{label}"
    store.start_collection(cid, model, HOOKPOINT, "default", corpus_fp, {"window": 32, "planted": True})
    store.finish_collection(cid, records, sum(len(w.tokens) for w in windows))
    opts = explainer_options(name, settings, scorers)
    t0 = time.perf_counter()
    rows = []
    for c, rec in zip(concepts, records):
        eid = pipeline.explain_stage(settings, cid, rec.unit_id, opts)
        pipeline.score_stage(settings, eid, opts)
        pipeline.index_stage(settings, eid, scorers[0])
        expl = store.get_explanation(eid)
        scores = {s: store.get_score(eid, s) for s in scorers}
        first = scores[scorers[0]]
        value = first.value if first and first.status == "ok" else None
        assert expl is not None
        cands = expl.settings.get("candidates") or []
        rows.append(
            {
                "concept": c.name,
                "unit_id": rec.unit_id,
                "status": expl.status,
                "text": expl.text,
                "retried": any(c_.get("attempts") == 2 or len(c_.get("raw") or []) == 2 for c_ in cands),
                "error": expl.error,
                "score": value,
                "other_scores": {s: v.value for s, v in scores.items() if s != scorers[0] and v},
            }
        )
        progress(
            f"{name:9s} {c.name:18s} {expl.status:6s} {value if value is not None else float('nan'):+.3f}  "
            f"{(expl.text or expl.error or '')[:70]}"
        )
    explain_s = time.perf_counter() - t0
    ranks = []
    for c, rec in zip(concepts, records):
        hits = search(settings, c.description, SearchFilters(model=model), limit=3)
        ids = [h["unit_id"] for h in hits]
        ranks.append(ids.index(rec.unit_id) + 1 if rec.unit_id in ids else None)
    ok = [r["score"] for r in rows if r["score"] is not None]
    return {
        "units": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "mean_score": round(statistics.mean(ok), 4) if ok else None,
        "median_score": round(statistics.median(ok), 4) if ok else None,
        "mean_score_failed_as_0": round(sum(ok) / len(rows), 4) if rows else None,
        "retried": sum(r["retried"] for r in rows),
        "mean_other_scores": {
            s: round(statistics.mean(v), 4)
            for s in scorers[1:]
            if (v := [r["other_scores"][s] for r in rows if r["other_scores"].get(s) is not None])
        },
        "recall_at_1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
        "recall_at_3": round(sum(r is not None for r in ranks) / len(ranks), 4),
        "seconds": round(explain_s, 1),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--concepts",
        nargs="+",
        default=None,
        help="planted concepts YAML files, one set each (default: bench/concepts.yaml bench/concepts_context.yaml)",
    )
    ap.add_argument("--limit", type=int, default=None, help="use only the first N concepts of each set (default: all)")
    ap.add_argument(
        "--explainers",
        default=None,
        help="comma-separated: baseline, local, endpoint (default: baseline,local and endpoint "
        "when EXPLAINER_LLM_BASE_URL is set)",
    )
    ap.add_argument(
        "--scorer",
        action="append",
        default=None,
        help="scorers stored (repeatable; the first is the headline; default: the shipped DEFAULT_SCORERS)",
    )
    ap.add_argument("--data-dir", default=None, help="keep the benchmark's store here (default: a temporary dir)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    progress = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    env_settings = load_settings()
    names = (
        args.explainers.split(",")
        if args.explainers
        else ["baseline", "local"] + (["endpoint"] if env_settings.llm_base_url else [])
    )
    scorers = tuple(dict.fromkeys(args.scorer or list(DEFAULT_SCORERS)))

    files = args.concepts or [str(DEFAULT_CONCEPTS), str(CONTEXT_CONCEPTS)]
    labels = [set_label(f) for f in files]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"concept files must have distinct names: {', '.join(files)}")
    sets = {label: load_concepts(f)[: args.limit] for label, f in zip(labels, files)}
    from transformers import AutoTokenizer

    from explainer.collect.models import resolve_model

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    docs = default_corpus()
    windows = tokenize_windows(docs, tok, window=32)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        data_dir = args.data_dir or tmp
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_") or "LLM" in k or "SIMULATOR" in k}
        settings = load_settings({**env, "EXPLAINER_DATA_DIR": data_dir})
        t0 = time.perf_counter()
        fp = corpus_fingerprint(docs)
        by_set = {
            label: {n: run_explainer(n, settings, cs, windows, fp, scorers, progress, label) for n in names}
            for label, cs in sets.items()
        }
        seconds = time.perf_counter() - t0
    head = scorers[0]
    print(
        f"\n{'set':9s} {'explainer':10s} {'units':>5s} {'ok':>4s} {'mean ' + head:>26s} {'median':>8s} "
        f"{'recall@1':>9s} {'recall@3':>9s} {'seconds':>8s}"
    )
    for label, results in by_set.items():
        for n, r in results.items():
            fmt = lambda x: "   n/a" if x is None else f"{x:+.3f}"  # noqa: E731
            print(
                f"{label:9s} {n:10s} {r['units']:5d} {r['ok']:4d} {fmt(r['mean_score']):>26s} "
                f"{fmt(r['median_score']):>8s} {r['recall_at_1']:9.3f} {r['recall_at_3']:9.3f} {r['seconds']:8.1f}"
            )
    summary = {
        label: {n: {k: v for k, v in r.items() if k != "rows"} for n, r in results.items()}
        for label, results in by_set.items()
    }
    first = next(iter(summary))
    out = {
        "benchmark": "quality",
        "concepts": {label: len(cs) for label, cs in sets.items()},
        "scorer": head,
        "scorers": list(scorers),
        "explainers": summary[first],
        "sets": summary,
        "recall_at_3": {label: {n: r["recall_at_3"] for n, r in res.items()} for label, res in summary.items()},
        "seconds": round(seconds, 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    rows = {label: {n: r["rows"] for n, r in results.items()} for label, results in by_set.items()}
    return {**out, "rows": rows[first], "rows_by_set": rows}


if __name__ == "__main__":
    main()
