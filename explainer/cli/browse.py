"""`explainer search`, `show`, `runs`, `serve` and the index maintenance commands (`reindex`, `check`): read what
labeling stored."""

from __future__ import annotations

import argparse
from typing import Any

from explainer.cli.common import ci, int_in
from explainer.errors import InputError, UnknownUnitError
from explainer.settings import Settings
from store.keyword import SOURCES

NO_MATCH_SHOWN = 3
"""Hits printed when none is a good match (``--json`` gives them all)."""


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
            f"no run {args.run_id!r} in {settings.describe_store()}"
            if not found
            else f"run id {args.run_id!r} is ambiguous: give more of it"
        )
    return runs.run_detail(store, found[0], failures_limit=args.limit)


def cmd_search(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    from explainer.search.hybrid import SearchFilters, search

    filters = SearchFilters(
        model=args.model,
        layer=args.layer,
        source=args.source,
        min_score=args.min_score,
        domain=args.domain,
        min_intervention=args.min_intervention,
        intervention_scorer=args.intervention_scorer,
    )
    return search(settings, args.query, filters, args.limit, args.offset)


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.search.reindex import reindex

    return reindex(settings)


def cmd_check(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.search.reindex import check

    return check(settings)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.api.app import load_api_config, serve
    from explainer.errors import ConfigError

    config = load_api_config()
    if not config.configured:
        raise ConfigError("no API keys configured: set EXPLAINER_API_READ_KEYS and/or EXPLAINER_API_WRITE_KEYS")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)  # per request; requests run side by side
    serve(settings, config, args.host, args.port)
    return {"stopped": True}


def cmd_show(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.report.entries import entry_summary, unit_entries
    from explainer.runtime import get_store

    held = get_store(settings).unit_collections(args.unit_id)
    chosen = None
    if args.collection:
        match = [c for c in held if c.startswith(args.collection)]
        if len(match) != 1:
            where = f"; it is in {', '.join(c[:12] for c in held)}" if held else ""
            raise InputError(
                f"unit {args.unit_id} is in no collection {args.collection!r}{where}"
                if not match
                else f"collection {args.collection!r} is ambiguous for unit {args.unit_id}: give more of it"
            )
        chosen = match[0]
    try:
        entry = unit_entries(settings, [args.unit_id], chosen)[0]
    except UnknownUnitError as exc:
        raise UnknownUnitError(exc.missing, settings.describe_store()) from None
    out = entry_summary(entry)
    out["collection_id"] = entry.collection_id
    out["other_collections"] = [c for c in held if c != entry.collection_id]
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
    from explainer.runtime import get_store

    out["output_side"] = get_store(settings).output_sides([args.unit_id]).get(args.unit_id)
    out["steering_effect"] = get_store(settings).output_sides([args.unit_id], "steering").get(args.unit_id)
    if args.output_side and out["output_side"] is None:  # computed once, then stored with the unit
        from explainer.intervene.service import output_side

        out["output_side"] = output_side(settings, args.unit_id)
    return out


def print_runs(result: Any, settings: Settings | None = None) -> None:
    if isinstance(result, list):
        if not result:
            print("no runs" + (f" in {settings.describe_store()}" if settings else ""))
        for r in result:
            print(
                f"{r['id'][:12]}  {r['status']:10s} {r['done']:>7d} done {r['failed']:>6d} failed {r['pending']:>7d} pending"
                f"  {r['tokens']:>10d} tokens  {r['explainer_model']}  {','.join(r['simulator'])}  {r['created_at']:%Y-%m-%d %H:%M}"
            )
    else:
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


def print_search(result: Any, settings: Settings | None = None) -> None:
    if not result:
        print("no hits" + (f" in {settings.describe_store()}" if settings else ""))
    elif all(h.get("match") == "weak" for h in result):
        result = result[:NO_MATCH_SHOWN]
        print(
            "no good match: no explanation shares a word with the query or is close to it; "
            f"the {len(result)} closest (all with --json):"
        )
    mixed = any(h.get("match") != "weak" for h in result)
    for h in result:
        s = h["score"]
        score = f"{s['value']:+.3f} {ci(s['ci95'])}" if s else "unscored"
        sim = "—" if h["similarity"] is None else f"{h['similarity']:.3f}"
        ranks = f"sem #{h['semantic_rank'] or '–'} kw #{h['keyword_rank'] or '–'}"
        causal = (
            ""
            if h.get("intervention_score") is None
            else f"  {h.get('intervention_scorer') or 'intervention'}={h['intervention_score']:+.3f}"
        )
        origin = "  [no-LLM baseline]" if h.get("explanation_source") == "baseline" else ""
        named = f' "{h["unit_name"]}"' if h.get("unit_name") else ""
        named += "  [weak match]" if mixed and h.get("match") == "weak" else ""
        print(
            f"{h['rank']:2d}. {h['unit_id']}{named}  score={score}{causal}  sim={sim}  ({ranks})\n"
            f"    {h['explanation']}{origin}"
        )
        if s and s.get("meaning"):
            print(f"    score: {s['meaning']} ({s['scorer']}; {s['scorer_discrimination']})")
        if h.get("top_example"):
            print(f"    e.g. {h['top_example'][:160]}")


def print_check(result: Any, settings: Settings | None = None) -> None:
    print("in sync" if result["in_sync"] else "OUT OF SYNC")
    print(
        f"  sql explanations {result['sql_explanations']}, vector entries {result['vector_entries']}, "
        f"keyword docs {result['keyword_docs']}"
    )
    for part in ("vector", "keyword"):
        for kind, d in result[part].items():
            if d["count"]:
                print(f"  {part} {kind}: {d['count']}  e.g. {', '.join(d['ids'][:5])}")


def print_show(result: Any, settings: Settings | None = None) -> None:
    from explainer.score.meaning import score_kind, score_meaning

    s, st = result["score"], result["stats"]
    origin = "  [no-LLM baseline]" if result.get("source") == "baseline" else ""
    named = f' "{result["unit_name"]}"' if result.get("unit_name") else ""
    print(f"{result['unit_id']}{named}  [{result['status']}]  {result['explanation'] or result['error'] or ''}{origin}")
    if s:
        low, high = (list(s["ci95"] or ()) + [None, None])[:2]
        words = score_meaning(s["value"], low, high, kind=score_kind(s))["words"]
        domains = ", ".join(f"{d} {v:+.3f}" for d, v in sorted((s.get("per_domain") or {}).items()) if v is not None)
        print(f"  score: {s['scorer']} {s['value']:+.3f} {ci(s['ci95'])}: {words}")
        print(f"         {s.get('discrimination') or ''}" + (f"; per domain: {domains}" if domains else ""))
    else:
        print("  score: none (not scored yet, or scoring failed)")
    print(
        f"  stats: max {st['max']:.3f}, mean {st['mean']:.3f}, fires on {100 * (st['density'] or 0):.2f}% of tokens"
        f"  prompt: {result['prompt']}"
    )
    others = result.get("other_collections") or []
    print(
        f"  collection {result.get('collection_id')}"
        + (
            f" ({len(others) + 1} collections hold this unit; others: {', '.join(c[:12] for c in others)};"
            " choose with --collection)"
            if others
            else ""
        )
    )
    for w in result["windows"]:
        print(
            f"  {w['id']:10s} {w['split']:8s} max={w['max']:.2f} {w['domain']:6s} {' '.join(w['text'].split())[:100]}"
        )
    for side in ("promoted", "suppressed") if result.get("output_side") else ():
        print(f"  {side}: " + ", ".join(repr(t["token"]) for t in result["output_side"][side]))
    from explainer.report.text import steering_lines

    for line in steering_lines(result.get("steering_effect")):
        print(f"  {line}")


def register(sub: Any) -> None:
    """Add these commands to the ``explainer`` subcommand parser."""
    p = sub.add_parser("runs", help="labeling runs: 'runs' lists them, 'runs show RUN' shows one with its failures")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("run_id", nargs="?", default=None, help="run id (or a unique prefix of it) for 'show'")
    p.add_argument(
        "--limit", type=int_in(1, 100_000), default=50, help="runs listed, or failures shown (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_runs, show=print_runs)

    p = sub.add_parser("search", help="search explanations by description")
    p.add_argument("query", help="what the unit does, in words (semantic and keyword ranking, fused)")
    p.add_argument("--model", default=None, help="only units of this subject model")
    p.add_argument("--layer", type=int_in(0, 10_000), default=None, help="only units of this block")
    p.add_argument(
        "--source",
        default=None,
        choices=list(SOURCES),
        help="kind of unit: MLP neurons, residual stream, SAE features, directions, ...",
    )
    p.add_argument("--min-score", type=float, default=None, help="only explanations scored at least this (-1..1)")
    p.add_argument(
        "--min-intervention",
        type=float,
        default=None,
        help="only explanations whose intervention score (of --intervention-scorer) is at least this",
    )
    p.add_argument(
        "--intervention-scorer",
        default=None,
        metavar="NAME",
        help="the intervention scorer --min-intervention reads and hits show: intervention (the filter's default), "
        "intervention-embedding or intervention-endpoint (their scales differ; default for hits: the first one "
        "each has)",
    )
    p.add_argument("--domain", default=None, help="only units whose top windows include this corpus domain")
    p.add_argument("--limit", type=int, default=10, help="hits per page, at most 50 (default: %(default)s)")
    p.add_argument("--offset", type=int, default=0, help="hits to skip (offset + limit <= 100)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_search, show=print_search)

    p = sub.add_parser("reindex", help="rebuild the search indexes (Chroma and keyword) from the SQL store")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("check", help="report differences between SQL and the search indexes (exit 1 if any)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_check, show=print_check, exit_status=lambda result: 0 if result["in_sync"] else 1)

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
    p.add_argument(
        "--collection",
        default=None,
        help="which collection of the unit (id or prefix; default: the latest it was explained in)",
    )
    p.add_argument(
        "--output-side",
        action="store_true",
        help="compute the tokens it promotes and suppresses when they are not stored yet (loads the model)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show, show=print_show)
