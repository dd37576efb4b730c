"""``make bench-audit [CONCEPTS=FILE]``: the audit on planted failure modes, where the truth is known.

For each concept, cases are lines of Python standard-library source (domain ``code``) and of its
docstrings (domain ``prose``); a case is labelled ``fail`` exactly when its response matches the
concept. On the embedded model (SmolLM2-135M, MLP neurons of one layer) we report the held-out
AUROC of the audit's probe, how many of its top units fire on the concept's tokens (per-token
AUROC of the unit's statistic, concept vs other tokens, >= 0.75) against as many random units,
and how many of their explanations name the concept: the bench's lines are collected at the
audited hookpoint (the ``collect`` path, one pass for every unit), each top unit is labelled by the
no-LLM baseline explainer over its top windows (its most frequent strongly activating tokens), and
an explanation is on the concept when one of the tokens it lists matches the concept's pattern.
Then the same audit on the shipped QA case set: in-domain AUROC per domain and the mean
off-diagonal of the transfer matrix. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import configure_runtime
from explainer.audit.analysis import analyse
from explainer.audit.cases import Case, read_cases
from explainer.audit.probe import auroc
from explainer.audit.stats import case_statistics, token_statistics, unit_space
from explainer.collect.collector import CollectConfig, collect
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.models import load_model
from explainer.collect.planted import load_concepts
from explainer.explain.baseline import baseline_explanation
from store.records import Document, UnitRecord

SHIPPED = Path(__file__).resolve().parents[1] / "explainer" / "audit" / "data" / "cases_smollm2.jsonl"
FIRES = 0.75
DEFAULT_NAMES = "digits,negations,return,self"
LABEL_CFG = CollectConfig(window=16, context=64, top_k=10, n_random=0, max_tokens=24_000, batch_size=8, n_quantiles=0)
"""The collection the top units are labelled from: 5 top windows each go to the explainer."""
LINES_PER_DOC = 24


def _lines() -> dict[str, list[str]]:
    """Short lines of stdlib source: code lines and docstring/comment (prose) lines."""
    import argparse as a
    import json as j
    import textwrap as t

    code: list[str] = []
    prose: list[str] = []
    for mod in (a, j, t, random, inspect):
        for raw in inspect.getsource(mod).splitlines():
            s = raw.strip()
            if not 12 <= len(s) <= 90:
                continue
            (prose if s[0].isalpha() and not s.endswith((":", ")", ",")) and " = " not in s else code).append(s)
    return {"code": code, "prose": prose}


def bench_corpus(lines: dict[str, list[str]]) -> list[Document]:
    """The bench's lines as documents of ``LINES_PER_DOC`` lines, code and prose alternating."""
    per = {d: [pool[i : i + LINES_PER_DOC] for i in range(0, len(pool), LINES_PER_DOC)] for d, pool in lines.items()}
    docs = []
    for k in range(max(len(v) for v in per.values())):
        for d, chunks in per.items():
            if k < len(chunks):
                docs.append(Document(f"{d}:{k}", d, "\n".join(chunks[k]) + "\n"))
    return docs


def label_units(lm, hookpoint: str, docs: list[Document]) -> dict[int, UnitRecord]:
    """Every unit's record over ``docs`` (the collect path, :data:`LABEL_CFG`), by unit index."""
    records = collect(lm, resolve_hookpoint(lm.model, hookpoint), docs, LABEL_CFG, progress=False)
    return {r.index: r for r in records}


def on_concept(concept, explanation: str | None) -> bool:
    """Whether a token the baseline explanation lists (not its "often after" context) matches the concept."""
    if not explanation:
        return False
    listed = explanation.split(" (often after ")[0]
    return any(concept.pattern.search(t) for t in re.findall(r'"([^"]+)"', listed))


def planted_cases(concept, lines: dict[str, list[str]], per_class: int, rng: random.Random) -> list[Case] | None:
    cases = []
    for domain, pool in lines.items():
        pos = [s for s in pool if concept.pattern.search(s)]
        neg = [s for s in pool if not concept.pattern.search(s)]
        if len(pos) < per_class or len(neg) < per_class:
            return None
        for label, src in (("fail", pos), ("pass", neg)):
            for s in rng.sample(src, per_class):
                cases.append(Case("Next line:\n", s, label, domain, None, (), ""))  # type: ignore[arg-type]
    return cases


def fires_on_concept(lm, space, concept, cases: list[Case], units: list[int]) -> list[float | None]:
    """Per-unit token AUROC: the unit's statistic on concept tokens vs the others."""
    stats, on = [], []
    for c in cases:
        spans, s = token_statistics(lm, space, c)
        hits = [m.span() for m in concept.pattern.finditer(c.response)]
        on += [any(a < e and b > st for st, e in hits) for a, b in spans]
        stats.append(s[:, units])
    x, y = np.concatenate(stats), np.array(on, dtype=int)
    return [auroc(y, x[:, k]) for k in range(len(units))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concepts", default=None, help="planted-concepts YAML (default: bench/concepts.yaml)")
    ap.add_argument(
        "--names", default=None, help="concepts to use (default: all of --concepts, else " + DEFAULT_NAMES + ")"
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=16, help="cases per class per domain")
    ap.add_argument("--top", type=int, default=10, help="top units checked on the concept")
    ap.add_argument("--cases", default=str(SHIPPED), help="QA case set")
    ap.add_argument("--min-per-class", type=int, default=5, help="QA: per-domain fit minimum (default: %(default)s)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rng = random.Random(0)
    names = args.names or (None if args.concepts else DEFAULT_NAMES)
    wanted = set(names.split(",")) if names else None
    concepts = [c for c in load_concepts(args.concepts) if wanted is None or c.name in wanted]
    lm = load_model(args.model)
    space = unit_space(lm, f"layers.{args.layer}.mlp")
    lines = _lines()
    records = label_units(lm, space.hookpoint.name, bench_corpus(lines))

    def explained(units: list[int]) -> list[str | None]:
        return [baseline_explanation(records[i]) for i in units]

    planted: dict[str, dict[str, Any]] = {}
    random_units: dict[str, dict[str, Any]] = {}
    for concept in concepts:
        cases = planted_cases(concept, lines, args.per_class, rng)
        if cases is None:
            planted[concept.name] = {"skipped": "too few matching or non-matching lines"}
            continue
        x = case_statistics(lm, space, cases)
        found = analyse(x, cases, [space.unit_id(i) for i in range(space.width)], random_draws=10, bootstrap=300)
        s = found.summary
        top = [int(i) for i in found.probe.selected[: args.top]]
        held = [c for c, t in zip(cases, found.test, strict=True) if t]
        rand = sorted(int(i) for i in np.random.default_rng(0).choice(space.width, max(1, len(top)), replace=False))
        fire_top = fires_on_concept(lm, space, concept, held, top) if top else []
        fire_rand = fires_on_concept(lm, space, concept, held, rand)
        top_labels, rand_labels = explained(top), explained(rand)
        planted[concept.name] = {
            "auroc": s["pooled"]["test"]["auroc"],
            "auroc_ci": s["pooled"]["test"]["ci"],
            "top_units": len(top),
            "top_unit_indices": top,
            "top_units_on_concept": sum(1 for a in fire_top if a is not None and a >= FIRES),
            "top_units_token_auroc": [None if a is None else round(a, 3) for a in fire_top],
            "explanations_on_concept": sum(on_concept(concept, e) for e in top_labels),
            "top_units_explanations": top_labels,
            "transfer": s["transfer"]["matrix"],
            "selected_share": s["selected_units"]["share"],
        }
        random_units[concept.name] = {
            "probe_auroc_mean": s["random_units"]["random_auroc_mean"],
            "units_on_concept": sum(1 for a in fire_rand if a is not None and a >= FIRES),
            "explanations_on_concept": sum(on_concept(concept, e) for e in rand_labels),
            "units": len(rand),
        }
        print(concept.name, json.dumps(planted[concept.name]), file=sys.stderr, flush=True)
    qa_cases = read_cases(args.cases)
    xq = case_statistics(lm, space, qa_cases)
    fq = analyse(
        xq,
        qa_cases,
        [space.unit_id(i) for i in range(space.width)],
        random_draws=10,
        bootstrap=300,
        min_per_class=args.min_per_class,
    )
    sq = fq.summary
    qa = {
        "cases": len(qa_cases),
        "layer": args.layer,
        "usable_domains": sq["usable_domains"],
        "in_domain_auroc": {
            d: (v.get("own_probe") or {}).get("auroc") for d, v in sq["domains"].items() if v["usable"]
        },
        "pooled_auroc_per_domain": {d: v["pooled_probe"]["auroc"] for d, v in sq["domains"].items()},
        "pooled_auroc": sq["pooled"]["test"]["auroc"],
        "transfer_off_diagonal_mean": sq["transfer"]["off_diagonal_mean"],
        "selected_units": sq["selected_units"]["count"],
        "random_units": sq["random_units"],
        "warnings": sq["warnings"],
    }
    out = {
        "planted": planted,
        "random_units": random_units,
        "qa": qa,
        "model": lm.name,
        "layer": args.layer,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
