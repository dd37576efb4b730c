"""The pipeline's stages as plain functions over ids and the stores.

The CLI, the tests and the Celery tasks all call these. Each stage is idempotent: it
returns early when its row already exists, and writes with upserts keyed on what makes
the row unique. Expected failures (unparseable answers, permanent LLM errors, prompts
that do not fit) are recorded as rows with ``status='failed'``; transient LLM errors are
raised so that the caller can retry, and recorded only on the final attempt.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from .collect import CollectConfig, collect
from .config import Settings
from .corpus import corpus_fingerprint, resolve_corpus
from .errors import ExplainerError, TransientLLMError
from .explain import describe_settings, explain_unit
from .hooks import resolve_hookpoint
from .llm import LLMConfig, make_chat_model
from .models import load_model, resolve_model
from .prompts import load_template
from .runtime import get_index, get_store
from .scoring import score_simulation
from .simulate import LogitSimulator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelOptions:
    """How units are explained and scored; travels in task payloads (no secrets)."""

    explainer: LLMConfig = field(default_factory=LLMConfig)
    explain_prompt: str = "explain"
    simulate_prompt: str = "simulate"
    simulator_model: str = "smollm2-135m"
    """Local model whose logits simulate activations."""
    retry_failed: bool = False

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "LabelOptions":
        return cls(**{**payload, "explainer": LLMConfig(**payload["explainer"])})


# -- collect ------------------------------------------------------------------------------

def normalize_hookpoint(layer: int | None, hookpoint: str | None) -> str:
    if hookpoint:
        return hookpoint
    return f"layers.{15 if layer is None else layer}.mlp"


def collect_stage(settings: Settings, model: str, hookpoint: str, corpus: str | None, cfg: CollectConfig,
                  progress: bool = True) -> str:
    """Collect (or reuse) the unit records of ``model`` at ``hookpoint``; returns the collection id."""
    from store.sql import key_id

    source = resolve_model(model)
    corpus_name, docs = resolve_corpus(corpus)
    store = get_store(settings)
    cid = key_id(source.name, hookpoint, corpus_fingerprint(docs), sorted(cfg.to_dict().items()))
    existing = store.get_collection(cid)
    if existing and existing["status"] == "done":
        log.info("reusing collection %s (%s units)", cid, existing["n_units"])
        return cid
    lm = load_model(model, settings.device)
    hp = resolve_hookpoint(lm.model, hookpoint)
    store.start_collection(cid, lm.name, hp.name, corpus_name, corpus_fingerprint(docs), cfg.to_dict())
    try:
        records = collect(lm, hp, docs, cfg, progress=progress)
        store.finish_collection(cid, records, records[0].stats.n_tokens if records else 0)
    except BaseException as exc:
        store.fail_collection(cid, f"{type(exc).__name__}: {exc}")
        raise
    return cid


def select_units(settings: Settings, collection_id: str, n: int) -> list[str]:
    """The ``n`` live units whose activations are most peaked (max / std), a proxy for selectivity."""
    rows = get_store(settings).unit_rows(collection_id, live_only=True)
    rows.sort(key=lambda r: (-(r["max_act"] / (r["std_act"] + 1e-6)), r["idx"]))
    return [r["unit_id"] for r in rows[:n]]


# -- explain ------------------------------------------------------------------------------

def explanation_key(collection_id: str, unit_id: str, opts: LabelOptions) -> tuple[str, Any]:
    from store.sql import key_id

    template = load_template(opts.explain_prompt)
    return key_id(unit_id, collection_id, opts.explainer.model, template.sha256), template


def explain_stage(settings: Settings, collection_id: str, unit_id: str, opts: LabelOptions,
                  final_attempt: bool = True) -> str:
    """Explain one unit from its record in ``collection_id``; returns the explanation id
    (the row may hold a failure)."""
    store = get_store(settings)
    eid, template = explanation_key(collection_id, unit_id, opts)
    existing = store.get_explanation(eid)
    if existing and (existing["status"] == "ok" or not opts.retry_failed):
        return eid
    record = store.get_record(unit_id, collection_id)
    if record is None:
        from .errors import UnknownUnitError

        raise UnknownUnitError([unit_id])
    chat = make_chat_model(opts.explainer, settings.llm_api_key)
    common = dict(unit_id=unit_id, collection_id=collection_id, explainer_model=opts.explainer.model, prompt_name=template.name,
                  prompt_version=template.version, prompt_hash=template.sha256,
                  settings={**opts.explainer.public(), **describe_settings(chat)})
    try:
        result = explain_unit(record, chat, template)
    except TransientLLMError as exc:
        if not final_attempt:
            raise
        return store.save_explanation(status="failed", error=f"gave up after retries: {exc}", **common)
    except ExplainerError as exc:
        return store.save_explanation(status="failed", error=f"{type(exc).__name__}: {exc}", **common)
    return store.save_explanation(status="ok", text=result.text, window_ids=list(result.window_ids),
                                  prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                  **common)


# -- simulate and score -------------------------------------------------------------------

def score_stage(settings: Settings, explanation_id: str, opts: LabelOptions) -> str:
    """Simulate the held-out windows from the explanation and store the correlation score."""
    store = get_store(settings)
    expl = store.get_explanation(explanation_id)
    if expl is None or expl["status"] != "ok":
        return explanation_id
    sim = LogitSimulator(load_template(opts.simulate_prompt), opts.simulator_model, settings.device)
    existing = store.get_score(explanation_id, sim.method)
    if existing and (existing["status"] == "ok" or not opts.retry_failed):
        return explanation_id
    record = store.get_record(expl["unit_id"], expl["collection_id"])
    windows = record.windows_for("heldout")
    common = dict(explanation_id=explanation_id, scorer=sim.method, heldout_ids=[w.window_id for w in windows])
    try:
        if not windows:
            raise ExplainerError("no held-out windows to score on")
        pred = sim.simulate(expl["text"], windows)
        s = score_simulation([list(w.activations) for w in windows], pred, [w.domain for w in windows])
    except ExplainerError as exc:
        store.save_score(simulator_model=opts.simulator_model, status="failed", error=str(exc), **common)
        return explanation_id
    store.save_score(simulator_model=sim.model_name, status="ok", value=s.value, ci_low=s.ci_low, ci_high=s.ci_high,
                     per_domain=s.per_domain, n_tokens=s.n_tokens, **common)
    return explanation_id


# -- index --------------------------------------------------------------------------------

def index_metadata(expl: dict[str, Any], score: dict[str, Any] | None) -> dict[str, Any]:
    from .records import parse_unit_id

    model, hookpoint, index = parse_unit_id(expl["unit_id"])
    parts = hookpoint.split(".")
    return {
        "unit_id": expl["unit_id"], "model": model, "hookpoint": hookpoint, "index": index,
        "layer": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1,
        "source": parts[-1] if parts[-1] == "mlp" else "resid",
        "explainer_model": expl["explainer_model"],
        "score": float(score["value"]) if score and score["status"] == "ok" else -2.0,
    }


def index_stage(settings: Settings, explanation_id: str, scorer: str = LogitSimulator.method) -> str:
    """Embed the explanation and upsert it into the vector index (idempotent)."""
    store = get_store(settings)
    expl = store.get_explanation(explanation_id)
    if expl is None or expl["status"] != "ok":
        return explanation_id
    score = store.get_score(explanation_id, scorer)
    get_index(settings).upsert([explanation_id], [expl["text"]], [index_metadata(expl, score)])
    store.mark_indexed(explanation_id)
    return explanation_id
