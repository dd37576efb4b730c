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
from typing import TYPE_CHECKING, Any

from explainer.errors import ExplainerError, LLMError, ScoreError, TransientLLMError
from explainer.explain.explainer import RejectedAnswer, explain_unit, stored_output_side
from explainer.llm.chat import ChatClientFactory, make_chat_model
from explainer.llm.prompts import load_template
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from explainer.score.base import UnitScorer
from explainer.score.correlation import score_simulation
from explainer.score.registry import evaluate, make_scorer, make_simulator
from explainer.search.index import index_metadata, index_stage  # noqa: F401  (the pipeline's last stage)
from explainer.settings import Settings

if TYPE_CHECKING:
    from store.records import UnitRecord

log = logging.getLogger(__name__)


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
    output = stored_output_side(get_store(settings), record.unit_id) if template.get("output_side") else None
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
            r = explain_unit(record, chat_factory(cfg, settings.llm_api_key), template, context_tokens, output)
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
                    **({"raw": exc.raw_answers} if isinstance(exc, RejectedAnswer) else {}),
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
    record: UnitRecord | None = None,
) -> str:
    """Explain one unit from its record in ``collection_id``; returns the explanation id
    (the row may hold a failure: no candidate was usable). ``chat_factory`` makes the explainer's
    chat client (e.g. :func:`explainer.llm.chat.chat_factory` over an injected ``httpx.Client``);
    ``record``: the unit's record when the caller read it already (else it is read here)."""
    store = get_store(settings)
    eid, template = explanation_key(collection_id, unit_id, opts)
    existing = store.get_explanation(eid)
    if existing and (existing.status == "ok" or not opts.retry_failed):
        return eid
    if record is None:
        record = store.get_record(unit_id, collection_id)
    if record is None:
        from explainer.errors import UnknownUnitError

        raise UnknownUnitError([unit_id])
    return store.save_explanation(
        keep_ok=True, **explanation_fields(record, collection_id, opts, template, settings, final_attempt, chat_factory)
    )


def explanation_fields(
    record: UnitRecord,
    collection_id: str,
    opts: LabelOptions,
    template: Any,
    settings: Settings,
    final_attempt: bool = True,
    chat_factory: ChatClientFactory = make_chat_model,
) -> dict[str, Any]:
    """Ask the explainer (``best_of`` candidates, the best one kept) and return the explanation to
    store (:func:`store.rows.explanation_row`'s fields), ok or failed with its reason; raises
    :class:`TransientLLMError` for the caller to retry unless this is the ``final_attempt``."""
    unit_id = record.unit_id
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
        return dict(
            status="failed",
            error=f"explainer {opts.explainer.model}{where} never answered: {reasons}",
            settings={**run_settings, "candidates": candidates},
            **tokens,
            **common,
        )
    if not any(c["text"] for c in candidates):
        errors = (
            candidates[0]["error"]
            if len(candidates) == 1
            else "; ".join(f"{c['source']}: {c['error']}" for c in candidates)
        )
        return dict(
            status="failed",
            error=errors,
            settings={**run_settings, "candidates": candidates},
            **tokens,
            **common,
        )
    best = _select(record, candidates, opts, settings)
    return dict(
        status="ok",
        text=best["text"],
        window_ids=best["window_ids"],
        settings={**run_settings, "selected": best["source"], "candidates": candidates},
        **tokens,
        **common,
    )


# -- simulate and score -------------------------------------------------------------------


def score_stage(
    settings: Settings,
    explanation_id: str,
    opts: LabelOptions,
    final_attempt: bool = True,
    record: UnitRecord | None = None,
) -> str:
    """Score the explanation on the held-out windows with every configured scorer (the intervention
    scorers steer the unit instead, so a unit without held-out windows is scored by them) and store one
    score per scorer: its figure (pooled correlation for simulators, balanced accuracy or AUROC
    for window-level scorers), 95% interval, per-domain split, model, held-out ids and, in
    ``details``, how it was computed. A transient endpoint error (429, 5xx, timeout) is raised for
    the caller to retry unless this is the ``final_attempt``; then it is stored as a failure.
    ``record``: the unit's record in the explanation's collection when the caller read it already
    (else it is read when needed)."""
    store = get_store(settings)
    expl = store.get_explanation(explanation_id)
    if expl is None or expl.status != "ok" or expl.text is None:
        return explanation_id
    if record is not None and (record.unit_id != expl.unit_id):
        record = None  # not this explanation's unit: read the right one
    for name in opts.scorers:
        existing = store.get_score(explanation_id, name)
        if existing and (existing.status == "ok" or not opts.retry_failed):
            continue
        if record is None:
            record = store.get_record(expl.unit_id, expl.collection_id)
            if record is None:
                from explainer.errors import UnknownUnitError

                raise UnknownUnitError([expl.unit_id])
        fields = score_fields(settings, name, explanation_id, expl.text, record, opts, final_attempt)
        store.save_score(**fields)
        measured = (fields.get("details") or {}).get("measured_output")
        if measured:  # an intervention scorer steered the unit: keep what it did
            store.save_output_sides({expl.unit_id: measured})
    return explanation_id


def score_fields(
    settings: Settings,
    name: str,
    explanation_id: str,
    text: str,
    record: UnitRecord,
    opts: LabelOptions,
    final_attempt: bool = True,
) -> dict[str, Any]:
    """Score the explanation ``text`` of ``record``'s unit with the scorer ``name`` and return the score
    to store (:func:`store.rows.score_row`'s fields), ok or failed with its reason; a transient
    endpoint error is raised for the caller to retry unless this is the ``final_attempt``."""
    windows = record.windows_for("heldout")
    common: dict[str, Any] = dict(
        explanation_id=explanation_id, scorer=name, heldout_ids=[w.window_id for w in windows]
    )
    try:
        sim = make_scorer(
            name,
            simulator_model=opts.simulator_model,
            device=settings.device,
            settings=opts.scorer_settings(settings),
        )
        if not windows and not isinstance(sim, UnitScorer):  # intervention scorers steer the unit instead
            raise ExplainerError("no held-out windows to score on")
        s = evaluate(sim, text, windows, unit_id=record.unit_id)
    except TransientLLMError as exc:
        if not final_attempt:
            raise
        return dict(
            simulator_model=None,
            status="failed",
            error=f"gave up after retries: {exc}",
            details={"method": name},
            **common,
        )
    except ExplainerError as exc:
        return dict(
            simulator_model=None,
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            details={"method": name},
            **common,
        )
    return dict(**s.ok_fields(), details=s.details, **common)
