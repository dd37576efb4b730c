"""The pipeline's stages as plain functions over ids and the stores.

The CLI, the tests and the Celery tasks all call these. Each stage is idempotent: it
returns early when its row already exists, and writes with upserts keyed on what makes
the row unique. Expected failures (unparseable answers, permanent LLM errors, prompts
that do not fit) are recorded as rows with ``status='failed'``; transient LLM errors are
raised so that the caller can retry, and recorded only on the final attempt.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from explainer.collect.budget import check_budget
from explainer.collect.collector import (
    CollectConfig,
    Collector,
    make_sequences,
    sequences_fingerprint,
    unit_hookpoint,
)
from explainer.collect.corpus import stream_corpus
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.models import load_model, load_tokenizer, resolve_model
from explainer.errors import ExplainerError, LLMError, ScoreError, TransientLLMError
from explainer.explain.explainer import explain_unit
from explainer.llm.chat import ChatClientFactory, make_chat_model
from explainer.llm.prompts import load_template
from explainer.pipeline.options import LabelOptions
from explainer.provenance import collection_provenance
from explainer.runtime import get_store
from explainer.score.correlation import score_simulation
from explainer.score.registry import evaluate, make_scorer, make_simulator
from explainer.search.index import index_metadata, index_stage  # noqa: F401  (the pipeline's last stage)
from explainer.settings import Settings

log = logging.getLogger(__name__)


# -- collect ------------------------------------------------------------------------------


def normalize_hookpoint(layer: int | None, hookpoint: str | None) -> str:
    """The hookpoint ``--layer`` / ``--hookpoint`` name (``--layer L`` is ``layers.L.mlp``; default
    layer 15). Both at once must name the same hookpoint: one is never silently preferred."""
    from explainer.errors import HookpointError

    if hookpoint and layer is not None and hookpoint != f"layers.{layer}.mlp":
        raise HookpointError(
            f"--layer {layer} (layers.{layer}.mlp) and --hookpoint {hookpoint} name different hookpoints: give one"
        )
    if hookpoint:
        return hookpoint
    return f"layers.{15 if layer is None else layer}.mlp"


def load_encoder(sae: str | None, directions: str | None, hookpoint: str | None) -> Any:
    """The SAE or directions that turn the hooked tensor into units, or ``None`` for raw units."""
    from explainer.errors import InputError

    if sae and directions:
        raise InputError("give either an SAE or directions, not both")
    if sae:
        from explainer.collect.sae import load_sae

        return load_sae(sae, hookpoint)
    if directions:
        from explainer.collect.directions import load_directions

        return load_directions(directions)
    return None


@dataclass(frozen=True)
class CollectionPlan:
    """What a collection is, resolved before any model is loaded: its id and its inputs."""

    collection_id: str
    source: Any
    corpus_name: str
    seqs: list[Any]
    """The corpus as far as the collection reads it, cut into sequences (the documents are streamed)."""
    corpus_fingerprint: str
    encoder: Any
    hookpoint: str


def plan_collection(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    sae: str | None = None,
    directions: str | None = None,
) -> CollectionPlan:
    """Resolve the model, corpus, encoder and hookpoint and name the collection (bad input fails here)."""
    from explainer.errors import HookpointError
    from store.records import key_id

    source = resolve_model(model)
    corpus_name, docs = stream_corpus(corpus)
    encoder = load_encoder(sae, directions, hookpoint)
    own = getattr(encoder, "hookpoint", None)
    if own and hookpoint and hookpoint not in (own, getattr(encoder, "hook_name", None)):
        raise HookpointError(f"{encoder.name!r} reads hookpoint {own}, not {hookpoint!r}")
    hookpoint = own or hookpoint
    if not hookpoint:
        raise HookpointError("the directions file names no hookpoint: give --hookpoint or --layer")
    seqs = make_sequences(docs, load_tokenizer(model, settings.device), cfg)  # reads only what is used
    corpus_fp = sequences_fingerprint(seqs)
    extra = [encoder.fingerprint] if encoder is not None else []
    cid = key_id(source.name, hookpoint, corpus_fp, sorted(cfg.to_dict().items()), *extra)
    return CollectionPlan(cid, source, corpus_name, seqs, corpus_fp, encoder, hookpoint)


def start_collector(
    settings: Settings,
    plan: CollectionPlan,
    model: str,
    cfg: CollectConfig,
    sae: str | None = None,
    directions: str | None = None,
    mark_running: bool = True,
    seqs: list[Any] | None = None,
) -> Collector:
    """Load the model, build the collection's collector (over ``seqs`` when given: the corpus
    already cut) and (with ``mark_running``) mark the collection running, discarding units a
    crashed earlier attempt left behind."""
    lm = load_model(model, settings.device)
    hp = resolve_hookpoint(lm.model, plan.hookpoint)
    encoder = plan.encoder
    units = encoder.width if encoder is not None else hp.width
    check_budget(cfg, units, getattr(lm.model, "config", None), str(lm.device))  # before anything is allocated
    collector = Collector(lm, hp, seqs if seqs is not None else plan.seqs, cfg, encoder)
    if not mark_running:
        return collector
    get_store(settings).start_collection(
        plan.collection_id,
        lm.name,
        unit_hookpoint(hp, encoder),
        plan.corpus_name,
        plan.corpus_fingerprint,
        {
            **cfg.to_dict(),
            **({"units": encoder.describe()} if encoder is not None else {}),
            "provenance": collection_provenance(plan.source, model, plan.hookpoint, sae, directions),
        },
    )
    return collector


def collect_stage(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    progress: bool = True,
    sae: str | None = None,
    directions: str | None = None,
) -> str:
    """Collect (or reuse) the unit records of ``model`` at ``hookpoint`` — its raw units, or the
    features of the SAE folder ``sae``, or the projections on the ``directions`` file — and return
    the collection id. Without a hookpoint, the SAE's (or directions') own is used. Bad input
    (unknown hookpoint, SAE width, corpus shorter than a window) fails before anything is written.
    A killed run resumes from its checkpoint under ``$EXPLAINER_DATA_DIR/checkpoints``."""
    plan = plan_collection(settings, model, hookpoint, corpus, cfg, sae, directions)
    cid = plan.collection_id
    store = get_store(settings)
    existing = store.get_collection(cid)
    if existing and existing["status"] == "done":
        log.info("reusing collection %s (%s units)", cid, existing["n_units"])
        return cid
    collector = start_collector(settings, plan, model, cfg, sae, directions)
    checkpoint = settings.data_dir / "checkpoints" / f"{cid}.pt"
    try:
        collector.run(progress=progress, checkpoint=checkpoint)
        records = collector.records(names=getattr(plan.encoder, "names", None))
        store.finish_collection(cid, records, records[0].stats.n_tokens if records else 0)
    except BaseException as exc:
        store.fail_collection(cid, f"{type(exc).__name__}: {exc}")
        raise
    checkpoint.unlink(missing_ok=True)
    return cid


def select_units(settings: Settings, collection_id: str, n: int | None) -> list[str]:
    """The ``n`` (``None``: all) live units whose activations are most peaked (max / std), a proxy for selectivity."""
    rows = get_store(settings).unit_rows(collection_id, live_only=True)
    rows.sort(key=lambda r: (-(r["max_act"] / (r["std_act"] + 1e-6)), r["idx"]))
    return [r["unit_id"] for r in rows[:n]]


# -- explain ------------------------------------------------------------------------------


def explanation_key(collection_id: str, unit_id: str, opts: LabelOptions) -> tuple[str, Any]:
    from store.records import make_explanation_id

    template = load_template(opts.explain_prompt)
    return make_explanation_id(unit_id, collection_id, opts.explainer.model, template.sha256), template


def _candidates(
    record: Any,
    opts: LabelOptions,
    template: Any,
    settings: Settings,
    final_attempt: bool,
    chat_factory: ChatClientFactory = make_chat_model,
) -> list[dict[str, Any]]:
    """``best_of`` LLM answers (the first greedy, the rest sampled) plus, optionally, the baseline."""
    from dataclasses import replace

    from explainer.explain.baseline import baseline_explanation

    out: list[dict[str, Any]] = []
    context_tokens = opts.explainer.context_tokens
    if opts.explainer.base_url and context_tokens is None:
        context_tokens = settings.llm_context_tokens  # EXPLAINER_LLM_CONTEXT
    for i in range(opts.best_of):
        cfg = (
            opts.explainer
            if i == 0
            else replace(opts.explainer, temperature=max(opts.explainer.temperature, 0.8), seed=i)
        )
        try:
            r = explain_unit(record, chat_factory(cfg, settings.llm_api_key), template, context_tokens)
            out.append(
                {
                    "source": f"llm-{i}",
                    "text": r.text,
                    "raw": r.raw,
                    "window_ids": list(r.window_ids),
                    "windows_shown": len(r.window_ids),
                    "windows_available": r.windows_available,
                    "attempts": r.attempts,
                    "rejected_raw": r.rejected_raw,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                }
            )
        except TransientLLMError as exc:
            if not final_attempt:
                raise
            out.append(
                {"source": f"llm-{i}", "text": None, "error": f"gave up after retries: {exc}", "no_answer": True}
            )
        except LLMError as exc:  # auth, unknown model, bad request: the endpoint gave no answer to use
            out.append({"source": f"llm-{i}", "text": None, "error": f"{type(exc).__name__}: {exc}", "no_answer": True})
        except ExplainerError as exc:  # RejectedAnswer keeps the raw texts: stored, never as explanation text
            out.append(
                {
                    "source": f"llm-{i}",
                    "text": None,
                    "error": f"{type(exc).__name__}: {exc}",
                    **({"raw": exc.raw_answers} if hasattr(exc, "raw_answers") else {}),
                }
            )
    if opts.baseline_candidate:
        text = baseline_explanation(record)
        out.append(
            {
                "source": "baseline",
                "text": text,
                "window_ids": [w.window_id for w in record.windows_for("explain", "top")],
            }
            if text
            else {"source": "baseline", "text": None, "error": "no strongly activating tokens"}
        )
    return out


def _select(record: Any, candidates: list[dict[str, Any]], opts: LabelOptions, settings: Settings) -> dict[str, Any]:
    """Rank usable candidates with the cheap scorer on the windows the explainer saw (never on
    held-out windows, so the stored score carries no selection bias); with ``cascade_scorer``,
    re-rank the ``cascade_top`` best of them with that (expensive) scorer."""
    ok = [c for c in candidates if c["text"]]
    if len(ok) == 1:
        return ok[0]
    windows = record.windows_for("explain", "top")
    true = [list(w.activations) for w in windows]
    domains = [w.domain for w in windows]

    def rank(scorer_name: str, cands: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        sim = make_simulator(
            scorer_name, simulator_model=opts.simulator_model, device=settings.device, settings=settings
        )
        for c in cands:
            try:
                c[key] = score_simulation(true, sim.simulate(c["text"], windows), domains, n_boot=0).value
            except ScoreError as exc:  # unrankable (non-finite predictions): ranked last, reason kept
                c[key], c[f"{key}_error"] = None, str(exc)
        return sorted(cands, key=lambda c: -c[key] if c[key] is not None else math.inf)

    ranked = rank(opts.selection_scorer, ok, "selection_score")
    if opts.cascade_scorer:
        ranked = rank(opts.cascade_scorer, ranked[: opts.cascade_top], "cascade_score")
    return ranked[0]


def explain_stage(
    settings: Settings,
    collection_id: str,
    unit_id: str,
    opts: LabelOptions,
    final_attempt: bool = True,
    chat_factory: ChatClientFactory = make_chat_model,
) -> str:
    """Explain one unit from its record in ``collection_id``; returns the explanation id
    (the row may hold a failure: no candidate was usable). ``chat_factory`` makes the explainer's
    chat client (e.g. :func:`explainer.llm.chat.chat_factory` over an injected ``httpx.Client``)."""
    store = get_store(settings)
    eid, template = explanation_key(collection_id, unit_id, opts)
    existing = store.get_explanation(eid)
    if existing and (existing.status == "ok" or not opts.retry_failed):
        return eid
    record = store.get_record(unit_id, collection_id)
    if record is None:
        from explainer.errors import UnknownUnitError

        raise UnknownUnitError([unit_id])
    candidates = _candidates(record, opts, template, settings, final_attempt, chat_factory)
    common: dict[str, Any] = dict(
        unit_id=unit_id,
        collection_id=collection_id,
        explainer_model=opts.explainer.model,
        prompt_name=template.name,
        prompt_version=template.version,
        prompt_hash=template.sha256,
    )
    run_settings = {
        **opts.explainer.public(),
        "best_of": opts.best_of,
        "baseline_candidate": opts.baseline_candidate,
        "selection_scorer": opts.selection_scorer,
        "cascade_scorer": opts.cascade_scorer,
    }
    tokens: dict[str, Any] = dict(
        prompt_tokens=sum(c.get("prompt_tokens") or 0 for c in candidates),
        completion_tokens=sum(c.get("completion_tokens") or 0 for c in candidates),
    )
    llm = [c for c in candidates if c["source"] != "baseline"]
    if llm and all(c.get("no_answer") for c in llm) and any(c["text"] for c in candidates):
        # the explainer never answered: a baseline may win a comparison, never stand in for the explainer
        where = f" at {opts.explainer.base_url}" if opts.explainer.base_url else ""
        reasons = "; ".join(f"{c['source']}: {c['error']}" for c in llm)
        return store.save_explanation(
            status="failed",
            error=f"explainer {opts.explainer.model}{where} never answered: {reasons}",
            settings={**run_settings, "candidates": candidates},
            keep_ok=True,
            **tokens,
            **common,
        )
    if not any(c["text"] for c in candidates):
        errors = (
            candidates[0]["error"]
            if len(candidates) == 1
            else "; ".join(f"{c['source']}: {c['error']}" for c in candidates)
        )
        return store.save_explanation(
            status="failed",
            error=errors,
            settings={**run_settings, "candidates": candidates},
            keep_ok=True,
            **tokens,
            **common,
        )
    best = _select(record, candidates, opts, settings)
    return store.save_explanation(
        status="ok",
        text=best["text"],
        window_ids=best["window_ids"],
        keep_ok=True,
        settings={**run_settings, "selected": best["source"], "candidates": candidates},
        **tokens,
        **common,
    )


# -- simulate and score -------------------------------------------------------------------


def score_stage(settings: Settings, explanation_id: str, opts: LabelOptions, final_attempt: bool = True) -> str:
    """Score the explanation on the held-out windows with every configured scorer and store one
    score per scorer: its figure (pooled correlation for simulators, balanced accuracy or AUROC
    for window-level scorers), 95% interval, per-domain split, model, held-out ids and, in
    ``details``, how it was computed. A transient endpoint error (429, 5xx, timeout) is raised for
    the caller to retry unless this is the ``final_attempt``; then it is stored as a failure."""
    store = get_store(settings)
    expl = store.get_explanation(explanation_id)
    if expl is None or expl.status != "ok" or expl.text is None:
        return explanation_id
    record = None
    for name in opts.scorers:
        existing = store.get_score(explanation_id, name)
        if existing and (existing.status == "ok" or not opts.retry_failed):
            continue
        if record is None:
            record = store.get_record(expl.unit_id, expl.collection_id)
            if record is None:
                from explainer.errors import UnknownUnitError

                raise UnknownUnitError([expl.unit_id])
        windows = record.windows_for("heldout")
        common: dict[str, Any] = dict(
            explanation_id=explanation_id, scorer=name, heldout_ids=[w.window_id for w in windows]
        )
        try:
            sim = make_scorer(name, simulator_model=opts.simulator_model, device=settings.device, settings=settings)
            if not windows:
                raise ExplainerError("no held-out windows to score on")
            s = evaluate(sim, expl.text, windows, unit_id=expl.unit_id)
        except TransientLLMError as exc:
            if not final_attempt:
                raise
            store.save_score(
                simulator_model=None,
                status="failed",
                error=f"gave up after retries: {exc}",
                details={"method": name},
                **common,
            )
            continue
        except ExplainerError as exc:
            store.save_score(
                simulator_model=None,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                details={"method": name},
                **common,
            )
            continue
        store.save_score(
            simulator_model=s.model,
            status="ok",
            value=s.value,
            ci_low=s.ci_low,
            ci_high=s.ci_high,
            per_domain=s.per_domain,
            n_tokens=s.n_tokens,
            details=s.details,
            **common,
        )
    return explanation_id
