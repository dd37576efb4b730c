"""``explainer cases make|check``, ``explainer audit``, ``explainer directions make``, ``explainer
inspect`` and ``explainer monitor``: failure-mode audits from a case set, directions derived from it,
a text read through the explained units, and the probe file an audit writes applied to new
transcripts."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from explainer.audit.cases import MIN_PER_CLASS, CaseSetError, class_counts, read_cases, usable_domains
from explainer.cli.common import int_in
from explainer.settings import Settings

DEFAULT_CASES = Path(__file__).resolve().parents[1] / "audit" / "data" / "cases_smollm2.jsonl"
MAX_PER_DOMAIN = 1000
"""More questions than a domain has (the arithmetic one is generated: about 1,000 distinct)."""
MAX_SAMPLES = 64
MIN_PER_CLASS_ARG = int_in(1, 1_000_000)


def register(sub: Any) -> None:
    cases = sub.add_parser("cases", help="make or check a case set (prompt, response, fail/pass, domain) for audits")
    csub = cases.add_subparsers(dest="cases_command", required=True)
    mk = csub.add_parser("make", help="ask the model offline factual questions; keep consistently right/wrong ones")
    mk.add_argument("--model", default="smollm2-135m", help="subject model (default: %(default)s)")
    mk.add_argument("--out", required=True, help="JSONL file to write")
    mk.add_argument(
        "--per-domain", type=int_in(1, MAX_PER_DOMAIN), default=36, help="questions asked per domain (default: 36)"
    )
    mk.add_argument(
        "--samples", type=int_in(1, MAX_SAMPLES), default=4, help="sampled answers per question (default: 4)"
    )
    mk.add_argument("--temperature", type=_temperature, default=0.7, help="sampling temperature, > 0 (default: 0.7)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--json", action="store_true", help="print machine-readable JSON")
    mk.set_defaults(func=cmd_cases_make)
    ck = csub.add_parser("check", help="validate a case set and count its classes per domain")
    ck.add_argument("file", nargs="?", default=str(DEFAULT_CASES), help="JSONL case set (default: the shipped one)")
    ck.add_argument("--min-per-class", type=MIN_PER_CLASS_ARG, default=MIN_PER_CLASS)
    ck.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ck.set_defaults(func=cmd_cases_check)

    au = sub.add_parser("audit", help="find the units that predict a case set's failures, per domain; test them")
    au.add_argument("--cases", default=str(DEFAULT_CASES), help="JSONL case set (default: the shipped one)")
    au.add_argument("--model", default="smollm2-135m", help="subject model (default: %(default)s)")
    where = au.add_mutually_exclusive_group(required=True)
    where.add_argument("--layer", type=int, help="MLP neurons of this block (contribution statistic)")
    where.add_argument("--hookpoint", help="any hookpoint, e.g. layers.12 (activations)")
    where.add_argument(
        "--layers",
        help="layer sweep instead: the pooled probe's and each class's held-out AUROC at every MLP layer, e.g. 0-29",
    )
    au.add_argument("--sae", help="SAE folder: audit its features at --hookpoint")
    au.add_argument("--directions", help="directions file: audit its directions at --hookpoint")
    au.add_argument("--out", required=True, help="folder for probe.json and the report (audit.json/.md/.html/.pdf)")
    au.add_argument("--test-frac", type=float, default=0.3, help="held-out share per domain and label")
    au.add_argument("--min-per-class", type=MIN_PER_CLASS_ARG, default=MIN_PER_CLASS, help="per-domain fit minimum")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--no-causal", action="store_true", help="skip the scaling test")
    au.add_argument("--causal-cases", type=int, default=24, help="held-out questions in the scaling test")
    au.add_argument("--alphas", type=_alphas, default=None, help="scaling factors, e.g. 0,0.5,1,1.5,2,3 (the default)")
    au.add_argument(
        "--here",
        action="store_true",
        help="with a broker configured, run the audit in this process instead of on a collect worker",
    )
    au.add_argument(
        "--label",
        action="store_true",
        help="also label the selected units that have no explanation (a labeling run over the default corpus) "
        "and show each with its explanation, score and top example",
    )
    au.add_argument(
        "--label-top",
        type=int,
        default=None,
        metavar="N",
        help="with --label: label only the N selected units with the largest probe weights (default: all)",
    )
    au.add_argument("--json", action="store_true", help="print machine-readable JSON")
    au.set_defaults(func=cmd_audit, show=print_audit)

    dr = sub.add_parser("directions", help="directions from a case set (make), to label, search, steer and audit")
    dsub = dr.add_subparsers(dest="directions_command", required=True)
    dm = dsub.add_parser(
        "make", help="a direction per class (fail, pass) from a case set's answers, pooled and per domain"
    )
    dm.add_argument("--cases", default=str(DEFAULT_CASES), help="JSONL case set (default: the shipped one)")
    dm.add_argument("--model", default="smollm2-135m", help="subject model (default: %(default)s)")
    dwhere = dm.add_mutually_exclusive_group(required=True)
    dwhere.add_argument("--layer", type=int, help="the residual stream after this block (hookpoint layers.L)")
    dwhere.add_argument("--hookpoint", help="any activation hookpoint, e.g. layers.12 or layers.12.mlp_out")
    dm.add_argument("--method", choices=["mean-diff", "probe"], default="mean-diff", help="default: %(default)s")
    dm.add_argument(
        "--min-per-class", type=MIN_PER_CLASS_ARG, default=MIN_PER_CLASS, help="per-domain minimum of each class"
    )
    dm.add_argument("-o", "--out", required=True, help="directions file to write (.safetensors)")
    dm.add_argument("--json", action="store_true", help="print machine-readable JSON")
    dm.set_defaults(func=cmd_directions_make, show=print_directions)

    ins = sub.add_parser("inspect", help="read a text through the explained units most active on each token")
    ins.add_argument("text", help="the text to run through the model")
    ins.add_argument("--model", default="smollm2-135m", help="subject model (default: %(default)s)")
    iwhere = ins.add_mutually_exclusive_group(required=True)
    iwhere.add_argument("--layer", type=int, help="MLP neurons of this block (hookpoint layers.L.mlp)")
    iwhere.add_argument("--hookpoint", help="any hookpoint, e.g. layers.12")
    ins.add_argument("--sae", help="SAE folder: its features at --hookpoint")
    ins.add_argument("--directions", help="directions file: its directions at --hookpoint")
    ins.add_argument("--top", type=int, default=3, help="units shown per token (default: %(default)s)")
    ins.add_argument("--min-level", type=int, default=3, help="smallest level shown, 0-10 (default: %(default)s)")
    ins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ins.set_defaults(func=cmd_inspect, show=print_inspect)

    mo = sub.add_parser("monitor", help="score prompt/response pairs with an audit's probe file")
    mo.add_argument("--probe", required=True, help="probe.json written by `explainer audit`")
    mo.add_argument("--cases", required=True, help="JSONL of {prompt, response, domain[, answer_span]}")
    mo.add_argument("--model", help="where to load the probe's model from (default: the probe's model_source)")
    mo.add_argument("--allow-uncalibrated", action="store_true", help="use the pooled calibration for unknown domains")
    mo.add_argument("--json", action="store_true", help="print machine-readable JSON")
    mo.set_defaults(func=cmd_monitor, show=print_monitor)


def _temperature(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (answers are sampled), got {text!r}")
    return t


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"alphas must be comma-separated numbers, not {text!r}") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError("alphas must be between 0 and 100")
    return values


def cmd_cases_make(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.cases import write_cases
    from explainer.audit.make import make_cases
    from explainer.collect.models import load_model

    lm = load_model(args.model, settings.device)
    cases, stats = make_cases(
        lm, per_domain=args.per_domain, samples=args.samples, temperature=args.temperature, seed=args.seed
    )
    write_cases(args.out, cases)
    return {"out": args.out, "cases": len(cases), "per_domain": stats}


def cmd_cases_check(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cases = read_cases(args.file)
    usable, warnings = usable_domains(cases, args.min_per_class)
    return {
        "file": args.file,
        "cases": len(cases),
        "classes": class_counts(cases),
        "usable": usable,
        "warnings": warnings,
    }


def cmd_audit(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.service import run_audit
    from explainer.cli.common import backend_of, notice

    if args.label_top is not None and (args.label_top < 1 or not args.label):
        raise CaseSetError(
            f"--label-top must be at least 1, not {args.label_top}"
            if args.label_top < 1
            else "--label-top picks which selected units --label labels: give --label too"
        )
    if args.layers is not None:
        return _sweep(settings, args)

    params: dict[str, Any] = dict(
        model=args.model,
        cases_path=str(Path(args.cases).resolve()),
        out_dir=str(Path(args.out).resolve()),
        layer=args.layer,
        hookpoint=args.hookpoint,
        sae=args.sae,
        directions=args.directions,
        device=settings.device,
        test_frac=args.test_frac,
        seed=args.seed,
        min_per_class=args.min_per_class,
        causal=not args.no_causal,
        causal_cases=args.causal_cases,
        alphas=args.alphas,
    )
    if settings.broker_url and not args.here:  # a deployment: the subject model lives on the collect workers
        read_cases(args.cases)  # a bad case set fails here, before anything is queued
        result = backend_of(args).audit_on_worker(settings, params, notice=None if args.json else notice)
    else:
        result = run_audit(**params)
    if args.label and result["selected_units"]["ids"]:
        _label_selected(settings, args, result)
    return result


def _label_selected(settings: Settings, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """``audit --label``: collect the audited hookpoint over the default corpus (or reuse that
    collection), label the selected units that have no explanation yet as a normal labeling run
    (resumable: run it again and only what is missing is done), and attach each selected unit's
    explanation, score and strongest evidence to the audit and its report files."""
    from explainer.audit.report import write_report
    from explainer.audit.service import hookpoint_of
    from explainer.cli.common import backend_of, notice
    from explainer.collect.collector import CollectConfig
    from explainer.llm.chat import LLMConfig
    from explainer.pipeline.collection import collect_stage
    from explainer.pipeline.options import LabelOptions
    from explainer.report.entries import entry_summary, unit_entries
    from explainer.runtime import get_store

    hookpoint = hookpoint_of(args.layer, args.hookpoint)
    if settings.broker_url and not args.here:  # collected where the subject model lives
        from dataclasses import asdict

        cid = backend_of(args).collect_on_worker(
            settings, args.model, hookpoint, None, asdict(CollectConfig()), args.sae, args.directions, notice=notice
        )
    else:
        cid = collect_stage(
            settings,
            args.model,
            hookpoint,
            None,
            CollectConfig(),
            progress=not args.json,
            sae=args.sae,
            directions=args.directions,
        )
    selected = result["selected_units"]
    chosen = _top_weighted(selected["ids"], selected["weights"], args.label_top)
    live = {r["unit_id"] for r in get_store(settings).unit_rows(cid, live_only=True)}
    ids = [u for u in chosen if u in live]
    llm = LLMConfig(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        timeout_s=settings.llm_timeout_s,
        device=settings.device,
    )  # the explainer `explainer label` uses by default (EXPLAINER_LLM_*)
    opts = LabelOptions(explainer=llm)
    run = backend_of(args).label_units(settings, cid, ids, opts, progress=not args.json) if ids else None
    skipped = {"status": f"not labelled (outside --label-top {args.label_top})"}
    explained: dict[str, Any] = {u: skipped for u in selected["ids"] if u not in chosen}
    explained.update({u: {"status": "dead in the default corpus"} for u in chosen})
    explained.update({e.record.unit_id: entry_summary(e) for e in unit_entries(settings, ids, cid)} if ids else {})
    result["selected_units"]["explained"] = explained
    result["labeling"] = {
        "collection_id": cid,
        "run_id": run.run_id if run else None,
        "labeled": len(ids),
        "label_top": args.label_top,
    }
    result["inspected"] = _inspect_failures(settings, args, hookpoint, result.get("confident_failures") or [])
    result["report_files"] = write_report(result, Path(args.out))


def _top_weighted(ids: list[str], weights: list[float], n: int | None) -> list[str]:
    """The ``n`` units with the largest probe weights (all of them when ``n`` is ``None``), in
    their audit order."""
    if n is None or n >= len(ids):
        return list(ids)
    keep = set(sorted(range(len(ids)), key=lambda i: (-weights[i], i))[:n])
    return [u for i, u in enumerate(ids) if i in keep]


def _sweep(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.sweep import layer_sweep, parse_layers, write_sweep
    from explainer.collect.models import load_model

    if args.sae or args.directions:
        raise CaseSetError("--layers sweeps MLP neurons: it takes no --sae or --directions")
    parse_layers(args.layers)  # a malformed range fails before the model loads
    read_cases(args.cases)
    if not 0.05 <= args.test_frac <= 0.6:
        raise CaseSetError(f"test fraction must be in [0.05, 0.6], not {args.test_frac}")
    lm = load_model(args.model, settings.device)
    doc = layer_sweep(
        lm, args.cases, args.layers, test_frac=args.test_frac, seed=args.seed, min_per_class=args.min_per_class
    )
    doc["report_files"] = write_sweep(doc, args.out)
    doc["sweep"] = True
    return doc


def print_audit(r: dict[str, Any], settings: Settings | None = None) -> None:
    from explainer.audit.report import to_markdown

    if r.get("sweep"):
        from explainer.audit.sweep import to_markdown as sweep_markdown

        print(sweep_markdown(r))
        print(f"files: {', '.join(r['report_files'].values())}")
        return
    print(to_markdown(r))
    print(f"files: {', '.join(r['report_files'].values())}" + (f", {r['probe_file']}" if r["probe_file"] else ""))


def cmd_directions_make(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.directions import directions_from_cases
    from explainer.collect.models import load_model

    if args.layer is not None and args.layer < 0:
        raise CaseSetError(f"--layer must be >= 0, not {args.layer}")
    if not str(args.out).endswith(".safetensors"):
        raise CaseSetError(f"-o {args.out}: directions are written as a .safetensors file")
    read_cases(args.cases)  # a bad case set fails before the model loads
    hookpoint = args.hookpoint or f"layers.{args.layer}"
    lm = load_model(args.model, settings.device)
    return directions_from_cases(lm, args.cases, hookpoint, args.out, args.method, min_per_class=args.min_per_class)


def print_directions(r: dict[str, Any], settings: Settings | None = None) -> None:
    print(
        f"wrote {len(r['directions'])} directions at {r['hookpoint']} ({r['method']}, {r['cases']} cases) to {r['out']}"
    )
    for d in r["directions"]:
        auc = "–" if d["train_auroc"] is None else f"{d['train_auroc']:.3f}"
        print(f"  {d['index']:3d} {d['name']:30s} training AUROC {auc}")
    print(
        f"label, steer or audit them: explainer label --directions {r['out']} --hookpoint {r['hookpoint']} --units all"
    )


def _inspect_failures(
    settings: Settings, args: argparse.Namespace, hookpoint: str, failures: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The most confident failures read through the explained units: each answer token with the
    two explained units most active there (level 3 of 10 or more)."""
    from explainer.audit.inspect import inspect_text
    from explainer.collect.models import load_model
    from explainer.runtime import get_store

    lm = load_model(args.model, settings.device)
    out = []
    for case in failures:
        text = case["prompt"] + case["response"]
        r = inspect_text(
            lm, get_store(settings), text, hookpoint, sae=args.sae, directions=args.directions, top=2, min_level=3
        )
        answer = [t for t in r["tokens"] if t["end"] > len(case["prompt"])]
        out.append({**case, "tokens": answer})
    return out


def cmd_inspect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.inspect import inspect_text
    from explainer.audit.service import hookpoint_of
    from explainer.collect.models import load_model
    from explainer.runtime import get_store

    hookpoint = hookpoint_of(args.layer, args.hookpoint)
    if not args.text.strip():
        raise CaseSetError("the text to inspect is empty")
    if args.top < 1 or not 0 <= args.min_level <= 10:
        raise CaseSetError("--top must be at least 1 and --min-level between 0 and 10")
    lm = load_model(args.model, settings.device)
    return inspect_text(
        lm,
        get_store(settings),
        args.text,
        hookpoint,
        sae=args.sae,
        directions=args.directions,
        top=args.top,
        min_level=args.min_level,
    )


def print_inspect(r: dict[str, Any], settings: Settings | None = None) -> None:
    print(f"{r['model']}/{r['hookpoint']}: {r['explained_units']} explained unit(s); level 0-10 of each unit's maximum")
    for t in r["tokens"]:
        if not t["units"]:
            print(f"{t['token']!r}")
            continue
        for i, u in enumerate(t["units"]):
            score = (
                ""
                if u["score"] is None
                else f" [{u['score']['scorer']} {u['score']['value']:+.2f}, {u['score']['meaning']}]"
            )
            head = f"{t['token']!r}" if i == 0 else " " * len(repr(t["token"]))
            print(f"{head}  {u['level']:2d}  {u['unit_id']}: {u['explanation']}{score}")


def cmd_monitor(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.audit.probefile import monitor, read_probe
    from explainer.collect.models import load_model

    doc = read_probe(args.probe)
    items = []
    for n, line in enumerate(Path(args.cases).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CaseSetError(f"{args.cases} line {n}: not JSON ({exc.msg})") from None
    if not items:
        raise CaseSetError(f"{args.cases}: nothing to score")
    lm = load_model(args.model or doc.get("model_source") or doc["model"], settings.device)
    return {"probe": args.probe, "results": monitor(lm, doc, items, args.allow_uncalibrated)}


def print_monitor(r: dict[str, Any], settings: Settings | None = None) -> None:
    for i, x in enumerate(r["results"], 1):
        flag = "FLAGGED" if x["flagged"] else "ok"
        cal = "" if x["calibrated"] else " (uncalibrated domain: pooled calibration)"
        print(f"{i}: {x['domain']}: p(fail) {x['p_fail']:.3f}, logit {x['logit']:+.3f} -> {flag}{cal}")
