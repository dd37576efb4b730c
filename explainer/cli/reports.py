"""`explainer report` (audit reports in HTML, Markdown, JSON or PDF) and `explainer calibrate` (re-score
explanations on your own corpus, shown in reports as a workflow domain)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from explainer.cli.common import ci, int_in
from explainer.errors import InputError
from explainer.settings import Settings
from store.keyword import SOURCES


def cmd_report(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.report.render import output_format, write_report
    from explainer.report.select import select_report

    fmt = output_format(args.output, args.format)
    filters = {
        "model": args.model,
        "layer": args.layer,
        "source": args.source,
        "min_score": args.min_score,
        "domain": args.domain,
    }
    if args.query is None and any(v is not None for v in filters.values()):
        raise InputError("--model, --layer, --source, --min-score and --domain filter a --query")
    entries, meta = select_report(
        settings,
        unit_ids=args.units,
        query=args.query,
        filters=filters,
        run=args.run,
        limit=args.limit,
        generated_by="explainer report",
        where=settings.describe_store(),
    )
    out = Path(args.output) if args.output else settings.data_dir / f"report.{fmt}"
    write_report(entries, out, fmt, meta, secrets=settings.secrets)
    note = f"{meta.note} ({settings.describe_store()})" if meta.note and not entries else meta.note
    return {"path": str(out), "units": len(entries), "format": fmt, **({"note": note} if note else {})}


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.pipeline.calibrate import CalibrationOptions, calibrate
    from explainer.score.registry import make_scorer

    for name in args.scorer or []:
        make_scorer(name, settings=settings)  # unknown names fail before anything is collected
    opts = CalibrationOptions(
        corpus=args.corpus, domain=args.domain, scorers=tuple(args.scorer or ()), max_tokens=args.max_tokens
    )
    return calibrate(settings, args.units, opts, progress=not args.json)


def print_calibrate(result: Any, settings: Settings | None = None) -> None:
    from explainer.score.meaning import score_kind, score_meaning

    print(f"workflow domain {result['domain']} ({result['corpus']}):")
    for r in result["results"]:
        if r["status"] == "ok":
            low, high = (list(r["ci95"] or ()) + [None, None])[:2]
            words = score_meaning(r["value"], low, high, kind=score_kind(r))["words"]
            score = f"{r['value']:+.3f} {ci(r['ci95'])} {words}"
        else:
            score = f"failed: {r['error']}"
        print(f"  {r['unit_id']:40s} {r['scorer']:22s} {score}")
    for s in result["skipped"]:
        print(f"  {s['unit_id']:40s} skipped: {s['reason']}")


def register(sub: Any) -> None:
    """Add these commands to the ``explainer`` subcommand parser."""
    p = sub.add_parser(
        "report",
        help="write an audit report of labeled units: explanations, scores, warnings, "
        "evidence and provenance (HTML, Markdown, JSON or PDF)",
    )
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--units", nargs="+", default=None, help="these unit ids")
    sel.add_argument("--query", default=None, help="the units a search returns (filters below)")
    sel.add_argument("--run", default=None, help="the units of a labeling run or collection id")
    p.add_argument("--model", default=None, help="with --query: only units of this subject model")
    p.add_argument("--layer", type=int_in(0, 10_000), default=None, help="with --query: only units of this block")
    p.add_argument("--source", default=None, choices=list(SOURCES), help="with --query: kind of unit (as for search)")
    p.add_argument("--min-score", type=float, default=None, help="with --query: only explanations scored at least this")
    p.add_argument("--domain", default=None, help="with --query: only units whose top windows include this domain")
    p.add_argument("--limit", type=int, default=20, help="hits taken from --query, at most 50 (default: %(default)s)")
    p.add_argument(
        "--format", choices=["html", "md", "json", "pdf"], default=None, help="default: from the -o suffix, else html"
    )
    p.add_argument("-o", "--output", default=None, help="output file (default: $EXPLAINER_DATA_DIR/report.FORMAT)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "calibrate", help="re-score units' explanations on your own corpus; reports show it as a workflow domain"
    )
    p.add_argument("--units", nargs="+", required=True, help="unit ids whose explanations to calibrate")
    p.add_argument("--corpus", required=True, help="your corpus: a .txt or .jsonl file or a directory of them")
    p.add_argument("--domain", default=None, help="workflow domain name shown in reports (default: the corpus name)")
    p.add_argument(
        "--scorer",
        action="append",
        default=None,
        metavar="NAME",
        help="scorer (repeatable; default: those that scored each explanation)",
    )
    p.add_argument(
        "--max-tokens", type=int, default=None, help="corpus tokens to read (default: as the units' collection)"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_calibrate, show=print_calibrate)
