"""Command line: thin adapters over the pipeline, search, views and report functions.

Every command has ``--help`` and ``--json``; expected errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from explainer.collect.collector import CollectConfig
from explainer.errors import ConfigError, ExplainerError, InputError
from explainer.llm.ratelimit import configure as configure_limits
from explainer.pipeline.backend import LabelBackend
from explainer.settings import DEFAULT_MODEL, Settings, load_settings
from store.keyword import SOURCES


def _add_collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="subject model: packaged short name, HF directory or .gguf (default: %(default)s)",
    )
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="MLP neurons of this block (default 15); same as --hookpoint layers.L.mlp",
    )
    p.add_argument(
        "--hookpoint",
        default=None,
        help="layers.L.mlp (MLP neurons), layers.L (residual stream), layers.L.mlp_in, "
        "layers.L.mlp_out or layers.L.attn_out; with --sae, defaults to the SAE's own",
    )
    p.add_argument(
        "--sae",
        default=None,
        help="SAE/transcoder folder written by SAELens (cfg.json + sae_weights.safetensors) or "
        "sparsify (cfg.json + sae.safetensors, or a folder of hookpoint folders): its features are the units",
    )
    p.add_argument(
        "--directions", default=None, help="a .safetensors or .npy matrix of directions: the projections are the units"
    )
    p.add_argument(
        "--corpus",
        default=None,
        help="'default' (stdlib code, docstrings, licenses) or a .txt/.jsonl file or directory",
    )
    p.add_argument(
        "--max-tokens", type=int, default=CollectConfig.max_tokens, help="corpus tokens to read (default: %(default)s)"
    )
    p.add_argument("--window", type=int, default=CollectConfig.window, help="tokens per window (default: %(default)s)")
    p.add_argument(
        "--top-k", type=int, default=CollectConfig.top_k, help="top windows kept per unit (default: %(default)s)"
    )
    p.add_argument(
        "--context",
        type=int,
        default=CollectConfig.context,
        help="tokens per forward-pass sequence; windows are cut around the max (default: %(default)s)",
    )
    p.add_argument(
        "--quantiles",
        type=int,
        default=CollectConfig.n_quantiles,
        help="activation strata with one window each, 0 for none (default: %(default)s)",
    )
    p.add_argument(
        "--random",
        type=int,
        default=CollectConfig.n_random,
        help="random windows per unit, held out (default: %(default)s)",
    )
    p.add_argument(
        "--collect-here",
        action="store_true",
        help="with a broker configured, collect in this process instead of on a worker of the 'collect' queue",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _collect_config(args: argparse.Namespace) -> CollectConfig:
    if args.max_tokens <= 0 or args.window < 4 or args.top_k < 2:
        raise InputError("--max-tokens must be > 0, --window >= 4 and --top-k >= 2")
    if args.context < args.window or args.quantiles < 0 or args.random < 0:
        raise InputError("--context must be >= --window, --quantiles and --random >= 0")
    return CollectConfig(
        window=args.window,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        context=args.context,
        n_quantiles=args.quantiles,
        n_random=args.random,
    )


def _collect(settings: Settings, args: argparse.Namespace) -> str:
    """Run (or reuse) the collection the collect/label arguments describe; returns its id."""
    from explainer.pipeline.stages import collect_stage, normalize_hookpoint

    own = (args.sae or args.directions) and args.layer is None and not args.hookpoint
    hp = None if own else normalize_hookpoint(args.layer, args.hookpoint)
    if settings.broker_url and not args.collect_here:
        # A GPU host's worker on the `collect` queue runs the subject model; paths must exist there.
        return _backend(args).collect_on_worker(
            settings,
            args.model,
            hp,
            args.corpus,
            _collect_config(args).to_dict(),
            args.sae,
            args.directions,
            notice=None if args.json else lambda m: print(m, file=sys.stderr),
        )
    return collect_stage(
        settings,
        args.model,
        hp,
        args.corpus,
        _collect_config(args),
        progress=not args.json,
        sae=args.sae,
        directions=args.directions,
    )


def cmd_collect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.runtime import get_store

    cid = _collect(settings, args)
    col = get_store(settings).get_collection(cid)
    assert col is not None, cid  # collect stored it
    live = len(get_store(settings).unit_rows(cid, live_only=True))
    return {
        "collection_id": cid,
        "model": col["model"],
        "hookpoint": col["hookpoint"],
        "corpus": col["corpus"],
        "n_tokens": col["n_tokens"],
        "n_units": col["n_units"],
        "live_units": live,
    }


def cmd_label(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.llm.chat import LLMConfig
    from explainer.pipeline.options import LabelOptions
    from explainer.pipeline.stages import select_units
    from explainer.runtime import get_store

    cid = _collect(settings, args)
    if args.unit_ids:
        unit_ids = list(dict.fromkeys(args.unit_ids))
        known = {r["unit_id"] for r in get_store(settings).unit_rows(cid, live_only=False)}
        if set(unit_ids) - known:
            from explainer.errors import UnknownUnitError

            raise UnknownUnitError(sorted(set(unit_ids) - known)[:20])
    else:
        n = args.units if args.units is not None else ("all" if args.sae else 12)
        unit_ids = select_units(settings, cid, None if n == "all" else n)
    if not unit_ids:
        raise InputError("no live units to label in this collection")
    base_url = args.explainer_base_url or settings.llm_base_url
    llm = LLMConfig(
        model=args.explainer_model or settings.llm_model,
        base_url=base_url,
        timeout_s=settings.llm_timeout_s,
        device=settings.device,
    )
    if args.best_of < 1:
        raise InputError("--best-of must be at least 1")
    from explainer.score.registry import make_scorer

    for name in (args.scorer or []) + ([args.cascade_scorer] if args.cascade_scorer else []):
        make_scorer(name, settings=settings)  # unknown names fail here, before any work is queued
    if args.cascade_scorer and make_scorer(args.cascade_scorer, settings=settings).kind != "simulation":
        raise InputError(
            f"--cascade-scorer must be a simulator (it ranks candidates on the top windows the "
            f"explainer saw, which hold no non-activating windows); {args.cascade_scorer!r} is not"
        )
    opts = LabelOptions(
        explainer=llm,
        retry_failed=args.retry_failed,
        best_of=args.best_of,
        baseline_candidate=not args.no_baseline,
        cascade_scorer=args.cascade_scorer,
        **({"scorers": tuple(dict.fromkeys(args.scorer))} if args.scorer else {}),
    )
    result = _backend(args).label_units(settings, cid, unit_ids, opts, progress=not args.json)
    from explainer.report.entries import entry_summary, unit_entries

    out: dict[str, Any] = {
        "collection_id": cid,
        "run_id": result.run_id,
        "run": result.counts,
        "submitted": result.submitted,
        "already_finished": result.skipped,
    }
    if len(unit_ids) <= LABEL_LISTED_UNITS:  # a whole SAE is summarised by `explainer runs show`
        units = [entry_summary(e) for e in unit_entries(settings, unit_ids, cid)]
        for u in units:
            u.pop("top_example", None)
        out["counts"] = {k: sum(1 for u in units if u["status"] == k) for k in ("ok", "failed", "pending")}
        out["units"] = units
    return {
        **out,
        "task_errors": dict(list(result.task_errors.items())[:LABEL_LISTED_UNITS]),
        "seconds": round(result.seconds, 1),
        "store": get_store(settings).count_rows(),
    }


LABEL_LISTED_UNITS = 100
"""`explainer label` lists each unit only for runs up to this size."""


def _units_arg(value: str) -> int | str:
    if value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of units or 'all', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--units must be at least 1")
    return n


def cmd_runs(settings: Settings, args: argparse.Namespace) -> Any:
    from explainer.runtime import get_store
    from store import runs

    store = get_store(settings)
    if args.action == "list":
        return runs.list_runs(store, limit=args.limit)
    if not args.run_id:
        raise InputError("give the run id: explainer runs show RUN")
    found = runs.find_runs(store, args.run_id)
    if len(found) != 1:
        raise InputError(
            f"no run {args.run_id!r}" if not found else f"run id {args.run_id!r} is ambiguous: give more of it"
        )
    return runs.run_detail(store, found[0], failures_limit=args.limit)


def cmd_search(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    from explainer.search.hybrid import SearchFilters, search

    filters = SearchFilters(
        model=args.model, layer=args.layer, source=args.source, min_score=args.min_score, domain=args.domain
    )
    return search(settings, args.query, filters, args.limit, args.offset)


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.search.reindex import reindex

    return reindex(settings)


def cmd_check(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.search.reindex import check

    return check(settings)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn

    from explainer.api.app import create_app, load_api_config
    from explainer.errors import ConfigError

    config = load_api_config()
    if not config.configured:
        raise ConfigError("no API keys configured: set EXPLAINER_API_READ_KEYS and/or EXPLAINER_API_WRITE_KEYS")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)  # per request; requests run side by side
    uvicorn.run(create_app(settings, config, warm_up=True), host=args.host, port=args.port, log_level="info")
    return {"stopped": True}


def cmd_show(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.report.entries import entry_summary, unit_entries

    entry = unit_entries(settings, [args.unit_id])[0]
    out = entry_summary(entry)
    out["windows"] = [
        {
            "id": w.window_id,
            "kind": w.kind,
            "split": w.split,
            "domain": w.domain,
            "doc_id": w.doc_id,
            "max": w.max_activation,
            "text": "".join(w.tokens),
        }
        for w in entry.record.windows
    ]
    out["explainer_model"], out["prompt"] = entry.explainer_model, entry.prompt
    return out


def cmd_report(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.report.model import FORMATS
    from explainer.report.render import write_report
    from explainer.report.select import select_report

    fmt = args.format or (Path(args.output).suffix.lstrip(".").lower() if args.output else "")
    fmt = fmt if fmt in FORMATS else "html"
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
    )
    out = Path(args.output) if args.output else settings.data_dir / f"report.{fmt}"
    write_report(entries, out, fmt, meta)
    return {"path": str(out), "units": len(entries), "format": fmt, **({"note": meta.note} if meta.note else {})}


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.pipeline.calibrate import CalibrationOptions, calibrate
    from explainer.score.registry import make_scorer

    for name in args.scorer or []:
        make_scorer(name, settings=settings)  # unknown names fail before anything is collected
    opts = CalibrationOptions(
        corpus=args.corpus, domain=args.domain, scorers=tuple(args.scorer or ()), max_tokens=args.max_tokens
    )
    return calibrate(settings, args.units, opts, progress=not args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explainer",
        description="Explain what units inside a language model do, score the explanations, search and report them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "collect", help="run the subject model over a corpus and keep each unit's top and random windows"
    )
    _add_collect_args(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("label", help="collect (once), then explain, score and index units through Celery")
    _add_collect_args(p)
    p.add_argument(
        "--units",
        type=_units_arg,
        default=None,
        help="label this many live units, the most selective first, or 'all' (default: all with --sae, else 12)",
    )
    p.add_argument("--unit-ids", nargs="+", default=None, help="label exactly these unit ids")
    p.add_argument(
        "--explainer-model", default=None, help="explainer LLM (default: EXPLAINER_LLM_MODEL or the packaged SmolLM2)"
    )
    p.add_argument(
        "--explainer-base-url",
        default=None,
        help="OpenAI-compatible endpoint (default: EXPLAINER_LLM_BASE_URL; unset = in-process)",
    )
    p.add_argument("--retry-failed", action="store_true", help="retry units whose explanation or score failed before")
    p.add_argument(
        "--scorer",
        action="append",
        default=None,
        metavar="NAME",
        help="scorer to store (repeatable; default: simulation-context, chosen by make bench-discrimination; "
        "also: simulation-embedding, simulation-logits)",
    )
    p.add_argument(
        "--best-of", type=int, default=1, help="LLM answers per unit; the best by the cheap scorer is kept (default: 1)"
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="do not let the no-LLM baseline compete with the LLM's answers"
    )
    p.add_argument(
        "--cascade-scorer",
        default=None,
        metavar="NAME",
        help="expensive scorer spent only on the 2 best candidates (e.g. simulation-logits)",
    )
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("runs", help="labeling runs: 'runs' lists them, 'runs show RUN' shows one with its failures")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("run_id", nargs="?", default=None, help="run id (or a unique prefix of it) for 'show'")
    p.add_argument("--limit", type=int, default=50, help="runs listed, or failures shown (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("search", help="search explanations by description")
    p.add_argument("query", help="what the unit does, in words (semantic and keyword ranking, fused)")
    p.add_argument("--model", default=None, help="only units of this subject model")
    p.add_argument("--layer", type=int, default=None, help="only units of this block")
    p.add_argument(
        "--source",
        default=None,
        choices=list(SOURCES),
        help="kind of unit: MLP neurons, residual stream, SAE features, directions, ...",
    )
    p.add_argument("--min-score", type=float, default=None, help="only explanations scored at least this (-1..1)")
    p.add_argument("--domain", default=None, help="only units whose top windows include this corpus domain")
    p.add_argument("--limit", type=int, default=10, help="hits per page, at most 50 (default: %(default)s)")
    p.add_argument("--offset", type=int, default=0, help="hits to skip (offset + limit <= 100)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("reindex", help="rebuild the search indexes (Chroma and keyword) from the SQL store")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("check", help="report differences between SQL and the search indexes (exit 1 if any)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", help="serve the HTTP API and the search page (needs EXPLAINER_API_*_KEYS)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for query embeddings (default: %(default)s; 0 = torch's default)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on exit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("show", help="show one unit: statistics, explanation, scores, windows")
    p.add_argument("unit_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

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
    p.add_argument("--layer", type=int, default=None, help="with --query: only units of this block")
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
    p.set_defaults(func=cmd_calibrate)
    return parser


def _ci(ci: Any) -> str:
    """``[low, high]`` of a 95% interval, or ``[no interval]`` where none could be computed."""
    if not ci or ci[0] is None or ci[1] is None:
        return "[no interval]"
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _print_human(command: str, result: Any) -> None:
    if command == "search":
        if not result:
            print("no hits")
        for h in result:
            s = h["score"]
            score = f"{s['value']:+.3f} {_ci(s['ci95'])}" if s else "unscored"
            sim = "—" if h["similarity"] is None else f"{h['similarity']:.3f}"
            ranks = f"sem #{h['semantic_rank'] or '–'} kw #{h['keyword_rank'] or '–'}"
            print(f"{h['rank']:2d}. {h['unit_id']}  score={score}  sim={sim}  ({ranks})\n    {h['explanation']}")
            if h.get("top_example"):
                print(f"    e.g. {h['top_example'][:160]}")
    elif command == "check":
        print("in sync" if result["in_sync"] else "OUT OF SYNC")
        print(
            f"  sql explanations {result['sql_explanations']}, vector entries {result['vector_entries']}, "
            f"keyword docs {result['keyword_docs']}"
        )
        for part in ("vector", "keyword"):
            for kind, d in result[part].items():
                if d["count"]:
                    print(f"  {part} {kind}: {d['count']}  e.g. {', '.join(d['ids'][:5])}")
    elif command == "label":
        r = result["run"]
        print(
            f"run {result['run_id'][:12]}: {r['done']} done, {r['failed']} failed, {r['pending']} pending of "
            f"{r['units']} units ({result['already_finished']} finished before, {result['submitted']} sent now; "
            f"{r['tokens']} tokens) in {result['seconds']} s"
        )
        for u in result.get("units", []):
            s = u["score"]
            text = u["explanation"] if u["status"] == "ok" else f"[{u['status']}] {u['error']}"
            if u.get("source") == "baseline":
                text += "  [no-LLM baseline]"
            print(f"  {u['unit_id']:40s} {format(s['value'], '+.3f') if s else '   -  '}  {text}")
        for uid, err in result["task_errors"].items():
            print(f"  task error {uid}: {err}")
    elif command == "runs" and isinstance(result, list):
        if not result:
            print("no runs")
        for r in result:
            print(
                f"{r['id'][:12]}  {r['status']:10s} {r['done']:>7d} done {r['failed']:>6d} failed {r['pending']:>7d} pending"
                f"  {r['tokens']:>10d} tokens  {r['explainer_model']}  {','.join(r['simulator'])}  {r['created_at']:%Y-%m-%d %H:%M}"
            )
    elif command == "runs":
        print(f"run {result['id']}  [{result['status']}]  collection {result['collection_id']}")
        print(f"  explainer {result['explainer_model']}  scorers {', '.join(result['simulator'])}")
        print(
            f"  {result['done']} done, {result['failed']} failed, {result['pending']} pending of {result['units']} units;"
            f" {result['tokens']} tokens spent"
        )
        print(
            f"  started {result['started_at']}  stopped {result['finished_at'] or '-'}"
            + (f"  note: {result['error']}" if result["error"] else "")
        )
        for f in result["failures"]:
            print(f"  failed {f['unit_id']} ({f['stage']}): {f['reason']}")
    elif command == "calibrate":
        print(f"workflow domain {result['domain']} ({result['corpus']}):")
        for r in result["results"]:
            score = f"{r['value']:+.3f} {_ci(r['ci95'])}" if r["status"] == "ok" else f"failed: {r['error']}"
            print(f"  {r['unit_id']:40s} {r['scorer']:22s} {score}")
        for s in result["skipped"]:
            print(f"  {s['unit_id']:40s} skipped: {s['reason']}")
    elif command == "show":
        s = result["score"]
        print(f"{result['unit_id']}  [{result['status']}]  {result['explanation'] or result['error'] or ''}")
        print(f"  score: {json.dumps(s)}\n  stats: {json.dumps(result['stats'])}  prompt: {result['prompt']}")
        for w in result["windows"]:
            print(
                f"  {w['id']:10s} {w['split']:8s} max={w['max']:.2f} {w['domain']:6s} {' '.join(w['text'].split())[:100]}"
            )
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


def _backend(args: argparse.Namespace) -> LabelBackend:
    if args.backend is None:
        raise ConfigError(
            "labeling needs a backend: run the `explainer` command (workers.cli), or pass main(backend=...)"
        )
    return args.backend


def main(argv: list[str] | None = None, backend: LabelBackend | None = None) -> int:
    """Run one command. ``backend`` runs labeling chains and remote collections (the ``explainer``
    command passes Celery's, :class:`workers.backend.CeleryBackend`)."""
    args = build_parser().parse_args(argv)
    args.backend = backend
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        configure_limits(settings)
        result = args.func(settings, args)
    except ExplainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_human(args.command, result)
    if args.command == "check" and not result["in_sync"]:
        return 1  # differences found (2 stays for errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
