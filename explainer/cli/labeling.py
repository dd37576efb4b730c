"""`explainer collect` and `explainer label`: run the subject model over a corpus, then explain, score and
index its units through the labeling backend (Celery)."""

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
    notice,
)
from explainer.collect.collector import CollectConfig
from explainer.errors import InputError
from explainer.settings import DEFAULT_MODEL, Settings


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
        action="append",
        default=None,
        help="layers.L.mlp (MLP neurons), layers.L (residual stream), layers.L.mlp_in, "
        "layers.L.mlp_out or layers.L.attn_out; with --sae, defaults to the SAE's own; `collect` takes it "
        "repeated: every hookpoint in one forward pass, each its own collection",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="`collect` only: the MLP neurons of these layers (e.g. 0-29, or 0-3,8) in one forward pass, "
        "each layer its own collection",
    )
    p.add_argument(
        "--sae",
        default=None,
        help="SAE/transcoder folder written by SAELens (cfg.json + sae_weights.safetensors) or "
        "sparsify (cfg.json + sae.safetensors, or a folder of hookpoint folders), or a Gemma Scope params.npz, "
        "Qwen-Scope layer{n}.sae.pt or Goodfire .pth: its features are the units",
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
        "--shards",
        type=int,
        default=1,
        help="split the corpus into this many shards, each a task on the 'collect' queue, merged into "
        "the same records as one process (default: %(default)s)",
    )
    p.add_argument(
        "--collect-here",
        action="store_true",
        help="with a broker configured, collect in this process instead of on a worker of the 'collect' queue",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _collect_config(args: argparse.Namespace) -> CollectConfig:
    wrong = [
        f"{flag} must be {rule} (got {value})"
        for flag, value, ok, rule in (
            ("--max-tokens", args.max_tokens, args.max_tokens > 0, "> 0"),
            ("--window", args.window, args.window >= 4, ">= 4"),
            ("--top-k", args.top_k, args.top_k >= 2, ">= 2"),
            ("--context", args.context, args.context >= args.window, f">= --window ({args.window})"),
            ("--quantiles", args.quantiles, args.quantiles >= 0, ">= 0"),
            ("--random", args.random, args.random >= 0, ">= 0"),
        )
        if not ok
    ]
    if wrong:
        raise InputError("; ".join(wrong))
    return CollectConfig(
        window=args.window,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        context=args.context,
        n_quantiles=args.quantiles,
        n_random=args.random,
    )


def _hookpoints(args: argparse.Namespace) -> list[str]:
    """The hookpoints of ``--hookpoint`` (repeatable) and ``--layers``, in order, without repeats."""
    from explainer.collect.multi import parse_layers

    names = list(args.hookpoint or [])
    if args.layers:
        names += [f"layers.{layer}.mlp" for layer in parse_layers(args.layers)]
    return list(dict.fromkeys(names))


def _collect_many(settings: Settings, args: argparse.Namespace, hookpoints: list[str]) -> list[str]:
    """Collect several hookpoints in shared forward passes, in this process; their collection ids."""
    from explainer.pipeline.multi import collect_many_stage

    if args.sae or args.directions or args.layer is not None or args.shards != 1:
        raise InputError("many hookpoints per pass take raw units only: no --sae, --directions, --layer or --shards")
    if settings.broker_url and not args.collect_here:
        raise InputError("many hookpoints per pass run in this process: add --collect-here")
    return collect_many_stage(
        settings, args.model, hookpoints, args.corpus, _collect_config(args), progress=not args.json
    )


def _collect(settings: Settings, args: argparse.Namespace) -> str:
    """Run (or reuse) the collection the collect/label arguments describe; returns its id."""
    from explainer.pipeline.collection import collect_stage, normalize_hookpoint

    hookpoints = _hookpoints(args)
    if len(hookpoints) > 1 or args.layers:
        raise InputError("`label` takes one hookpoint: collect many with `explainer collect --layers`, then label each")
    own = (args.sae or args.directions) and args.layer is None and not hookpoints
    hp = None if own else normalize_hookpoint(args.layer, hookpoints[0] if hookpoints else None)
    if args.shards != 1:
        if args.shards < 1 or args.collect_here:
            raise InputError("--shards must be at least 1, and shards run on the 'collect' queue (no --collect-here)")
        return backend_of(args).collect_sharded(
            settings,
            args.model,
            hp,
            args.corpus,
            _collect_config(args).to_dict(),
            args.sae,
            args.directions,
            args.shards,
            notice=None if args.json else notice,
        )
    if settings.broker_url and not args.collect_here:
        # A GPU host's worker on the `collect` queue runs the subject model; paths must exist there.
        return backend_of(args).collect_on_worker(
            settings,
            args.model,
            hp,
            args.corpus,
            _collect_config(args).to_dict(),
            args.sae,
            args.directions,
            notice=None if args.json else notice,
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
    hookpoints = _hookpoints(args)
    if len(hookpoints) > 1 or args.layers:
        cids = _collect_many(settings, args, hookpoints)
        return {"collections": [_collection_summary(settings, cid) for cid in cids]}
    return _collection_summary(settings, _collect(settings, args))


def _collection_summary(settings: Settings, cid: str) -> dict[str, Any]:
    from explainer.runtime import get_store

    col = get_store(settings).get_collection(cid)
    if col is None:  # the workers stored it elsewhere: a deployment whose processes disagree on the database
        raise InputError(
            f"collection {cid} was reported collected but is not in {settings.describe_store()}: do the workers "
            "and this command use the same database (EXPLAINER_DATABASE_URL)?"
        )
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
    from explainer.pipeline.collection import select_units
    from explainer.pipeline.options import LabelOptions
    from explainer.runtime import get_store

    steering = intervention_overrides(args)  # the --intervention-* flags, checked first; they travel with the tasks
    cid = _collect(settings, args)
    if args.unit_ids:
        unit_ids = list(dict.fromkeys(args.unit_ids))
        known = {r["unit_id"] for r in get_store(settings).unit_rows(cid, live_only=False)}
        if set(unit_ids) - known:
            from explainer.errors import UnknownUnitError

            raise UnknownUnitError(sorted(set(unit_ids) - known)[:20])
    else:
        n = args.units if args.units is not None else ("all" if args.sae else 12)
        unit_ids = select_units(settings, cid, None if n == "all" else int(n))
    if not unit_ids:
        raise InputError("no live units to label in this collection")
    llm = explainer_llm(settings, args)
    if args.best_of < 1:
        raise InputError("--best-of must be at least 1")
    from explainer.score.registry import make_scorer

    scoring = dataclasses.replace(settings, **dict(steering))
    for name in (args.scorer or []) + ([args.cascade_scorer] if args.cascade_scorer else []):
        make_scorer(name, settings=scoring)  # unknown names and bad settings fail here, before any work is queued
    if args.cascade_scorer and make_scorer(args.cascade_scorer, settings=scoring).kind != "simulation":
        raise InputError(
            f"--cascade-scorer must be a simulator (it ranks candidates on the top windows the "
            f"explainer saw, which hold no non-activating windows); {args.cascade_scorer!r} is not"
        )
    from explainer.llm.prompts import load_template

    template = load_template(args.explain_prompt)  # an unknown prompt fails here, before any work is queued
    opts = LabelOptions(
        explainer=llm,
        retry_failed=args.retry_failed,
        best_of=args.best_of,
        baseline_candidate=not args.no_baseline,
        cascade_scorer=args.cascade_scorer,
        explain_prompt=args.explain_prompt,
        intervention=steering,
    )
    if args.scorer:
        opts = dataclasses.replace(opts, scorers=tuple(dict.fromkeys(args.scorer)))
    if template.get("output_side") or (not args.no_output_side and len(unit_ids) <= OUTPUT_SIDE_UNITS):
        from explainer.intervene.service import ensure_output_sides

        skipped = ensure_output_sides(settings, unit_ids, notice=None if args.json else notice)
        if skipped and not args.json:
            notice(f"{len(skipped)} unit(s) have no output side; first: {next(iter(skipped.values()))}")
    result = backend_of(args).label_units(settings, cid, unit_ids, opts, progress=not args.json)
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
OUTPUT_SIDE_UNITS = 4096
"""Up to this many labeled units get their output side computed by default (one projection each)."""


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


def print_label(result: Any, settings: Settings | None = None) -> None:
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
        level = s["meaning"].split(":", 1)[0] if s and s.get("meaning") else ""
        print(f"  {u['unit_id']:40s} {format(s['value'], '+.3f') + ' ' + level if s else '   -  '}  {text}")
    for uid, err in result["task_errors"].items():
        print(f"  task error {uid}: {err}")


def register(sub: Any) -> None:
    """Add these commands to the ``explainer`` subcommand parser."""
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
    add_explainer_args(p)
    p.add_argument("--retry-failed", action="store_true", help="retry units whose explanation or score failed before")
    p.add_argument(
        "--scorer",
        action="append",
        default=None,
        metavar="NAME",
        help="scorer to store (repeatable; default: simulation-context, chosen by make bench-discrimination; "
        "also: simulation-embedding, simulation-logits, intervention, intervention-embedding…)",
    )
    add_intervention_args(p)
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
    p.add_argument(
        "--explain-prompt",
        default="explain",
        metavar="NAME",
        help="explainer prompt in prompts/ (or a .yaml path); explain_output also shows the tokens each unit "
        "promotes and suppresses (default: explain)",
    )
    p.add_argument(
        "--no-output-side",
        action="store_true",
        help=f"do not compute the tokens each unit promotes and suppresses (done for up to {OUTPUT_SIDE_UNITS} units)",
    )
    p.set_defaults(func=cmd_label, show=print_label)
