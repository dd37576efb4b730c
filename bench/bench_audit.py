"""``make bench-audit [CONCEPTS=FILE]``: the audit on planted failure modes, where the truth is known.

For each concept, cases are lines of Python standard-library source (domain ``code``) and of its
docstrings (domain ``prose``); a case is labelled ``fail`` exactly when its response matches the
concept. On the embedded model (SmolLM2-135M, MLP neurons of one layer) we report the held-out
AUROC of the audit's probe, how many of its top units fire on the concept's tokens (per-token
AUROC of the unit's statistic, concept vs other tokens, >= 0.75) against as many random units,
then the same audit on the shipped QA case set: in-domain AUROC per domain and the mean
off-diagonal of the transfer matrix. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
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
from explainer.collect.models import load_model
from explainer.collect.planted import load_concepts

SHIPPED = Path(__file__).resolve().parents[1] / "explainer" / "audit" / "data" / "cases_smollm2.jsonl"
FIRES = 0.75
DEFAULT_NAMES = "digits,negations,return,self"


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


def main() -> None:
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
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = random.Random(0)
    names = args.names or (None if args.concepts else DEFAULT_NAMES)
    wanted = set(names.split(",")) if names else None
    concepts = [c for c in load_concepts(args.concepts) if wanted is None or c.name in wanted]
    lm = load_model(args.model)
    space = unit_space(lm, f"layers.{args.layer}.mlp")
    lines = _lines()
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
        planted[concept.name] = {
            "auroc": s["pooled"]["test"]["auroc"],
            "auroc_ci": s["pooled"]["test"]["ci"],
            "top_units": len(top),
            "top_units_on_concept": sum(1 for a in fire_top if a is not None and a >= FIRES),
            "top_units_token_auroc": [None if a is None else round(a, 3) for a in fire_top],
            "transfer": s["transfer"]["matrix"],
            "selected_share": s["selected_units"]["share"],
        }
        random_units[concept.name] = {
            "probe_auroc_mean": s["random_units"]["random_auroc_mean"],
            "units_on_concept": sum(1 for a in fire_rand if a is not None and a >= FIRES),
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


if __name__ == "__main__":
    main()
