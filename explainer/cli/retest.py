"""`explainer retest`: re-test a run's or collection's explanations on a new checkpoint, with a CI gate
(``--fail-if broken>5%`` exits 1 when tripped) and a drift report (JSON, Markdown, HTML or PDF); with
``--probe`` and ``--cases``, a failure-mode audit's probe is re-tested on the same cases too."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from explainer.cli.common import (
    add_explainer_args,
    add_intervention_args,
    backend_of,
    explainer_llm,
    intervention_overrides,
)
from explainer.errors import InputError
from explainer.settings import Settings


def cmd_retest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.retest.report import FORMATS, write_drift_report
    from explainer.retest.run import RetestOptions, retest
    from explainer.retest.verdict import gate_failures, parse_rule
    from explainer.score.registry import make_scorer

    rules = args.fail_if or []
    try:
        for rule in rules:
            parse_rule(rule)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    steering = intervention_overrides(args)
    settings = dataclasses.replace(settings, **dict(steering))  # the --intervention-* flags
    for name in args.scorer or []:
        make_scorer(name, settings=settings)  # unknown names fail before anything is collected
    if (args.probe is None) != (args.cases is None):
        raise InputError("--probe and --cases go together: the probe is re-tested on the same case set")
    if any(r.replace(" ", "").startswith("probe:") for r in rules) and args.probe is None:
        raise InputError("a --fail-if probe:… rule needs --probe and --cases")
    outputs = args.output or []
    for out in outputs:
        if out.rsplit(".", 1)[-1].lower() not in FORMATS:
            raise InputError(f"-o {out}: the suffix must be one of .{', .'.join(FORMATS)}")
    if args.probe is not None:  # read, and its width checked on both models, before anything is collected
        from explainer.retest.probe import check_probe

        check_probe(args.probe, args.cases, args.model, device=settings.device)
    relabel = None
    if args.relabel:
        from explainer.pipeline.options import LabelOptions

        backend = backend_of(args)
        opts = LabelOptions(explainer=explainer_llm(settings, args), intervention=steering)
        if args.scorer:
            opts = dataclasses.replace(opts, scorers=tuple(dict.fromkeys(args.scorer)))

        def relabel(collection_id: str, unit_ids: list[str]) -> dict[str, Any]:
            r = backend.label_units(settings, collection_id, unit_ids, opts, progress=not args.json)
            return {k: v for k, v in dataclasses.asdict(r).items() if k != "task_errors"} | {
                "task_errors": len(r.task_errors)
            }

    doc = retest(
        settings,
        args.source,
        RetestOptions(
            model=args.model, corpus=args.corpus, scorers=tuple(args.scorer or ()), max_tokens=args.max_tokens
        ),
        progress=not args.json,
        relabel=relabel,
    )
    if args.probe is not None:
        from explainer.retest.probe import retest_probe

        doc["probe"] = retest_probe(args.probe, args.cases, args.model, device=settings.device)
    doc["gate"] = {"rules": rules, "failed": gate_failures(rules, doc["summary"], doc.get("probe"))} if rules else None
    for out in outputs:
        write_drift_report(doc, out, secrets=settings.secrets)
    doc["written"] = outputs
    return doc


def print_retest(doc: dict[str, Any], settings: Settings | None = None) -> None:
    from explainer.retest.report import render_markdown

    print(render_markdown({k: v for k, v in doc.items() if k != "written"}), end="")
    r = doc.get("relabel")
    if r is not None and "run_id" in r:  # the labeling run of --relabel, to follow with `explainer runs show`
        c = r["counts"]
        print(
            f"relabel: run {r['run_id']} re-explains {len(r['unit_ids'])} broken unit(s): {c['done']} done, "
            f"{c['failed']} failed, {c['pending']} pending ({r['skipped']} finished before, {r['submitted']} sent "
            f"now, {r['task_errors']} task error(s))"
        )
    elif r is not None:
        print(f"relabel: {r['note']}")
    for out in doc["written"]:
        print(f"wrote {out}")


def exit_status(doc: dict[str, Any]) -> int:
    """1 when a ``--fail-if`` rule is tripped, else 0 (errors stay 2)."""
    return 1 if doc.get("gate") and doc["gate"]["failed"] else 0


def register(sub: Any) -> None:
    """Add ``retest`` to the ``explainer`` subcommand parser."""
    p = sub.add_parser(
        "retest",
        help="collect a run's or collection's units on a new checkpoint and say which explanations still hold",
    )
    p.add_argument(
        "--from", dest="source", required=True, metavar="RUN_OR_COLLECTION", help="labeling run or collection id"
    )
    p.add_argument("--model", required=True, help="the new checkpoint: packaged name, HF directory or .gguf file")
    p.add_argument("--corpus", default=None, help="corpus to collect over (default: the old collection's)")
    p.add_argument(
        "--scorer", action="append", default=None, metavar="NAME", help="scorer (repeatable; default: those stored)"
    )
    add_intervention_args(p)
    p.add_argument(
        "--max-tokens", type=int, default=None, help="corpus tokens to read (default: as the old collection)"
    )
    p.add_argument(
        "--relabel", action="store_true", help="re-explain units whose best explanation broke, as a labeling run"
    )
    add_explainer_args(p)
    p.add_argument(
        "--fail-if",
        action="append",
        default=None,
        metavar="RULE",
        help="exit 1 when tripped, e.g. broken>5%%, dead>=3, broken+dead>0.1; probe:broken>0 counts the "
        "re-tested probe's domains (repeatable)",
    )
    p.add_argument(
        "--probe",
        default=None,
        metavar="PROBE_JSON",
        help="also re-test this failure-mode probe (from explainer audit): per-domain AUROC before and after, and "
        "whether its thresholds still hold (needs --cases)",
    )
    p.add_argument("--cases", default=None, metavar="JSONL", help="the probe's case set (as given to explainer audit)")
    p.add_argument(
        "-o",
        "--output",
        action="append",
        default=None,
        metavar="PATH",
        help="drift report .json, .md, .html or .pdf (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the retest document as JSON")
    p.set_defaults(func=cmd_retest, show=print_retest, exit_status=exit_status)
