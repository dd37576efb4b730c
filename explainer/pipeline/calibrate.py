"""Workflow calibration: how an explanation holds on the text a model actually sees in deployment.

``explainer calibrate --units ID... --corpus FILE [--domain NAME]`` collects the same units (same
subject model, hookpoint, SAE or directions file and collection settings, as the units'
collection recorded them) over the user's corpus with :func:`explainer.pipeline.collection.collect_stage`,
then re-scores each unit's primary ok explanation on the held-out windows of that new collection
with the configured scorers, and stores one calibration per (explanation, scorer, collection).
Reports show each as ``workflow domain NAME: score …`` beside the original per-domain scores,
and warn when it drops well below them. Failures (a unit that never fires on the corpus, a
simulator error) are stored with ``status='failed'`` and the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from explainer.collect.collector import CollectConfig
from explainer.errors import ExplainerError, InputError
from explainer.runtime import get_store
from explainer.settings import Settings

__all__ = ["CalibrationOptions", "calibrate", "collection_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationOptions:
    """How a calibration runs."""

    corpus: str
    """The user's corpus: a ``.txt``/``.jsonl`` file or a directory of them."""
    domain: str | None = None
    """Name shown as ``workflow domain NAME``; default: the corpus file or folder name."""
    scorers: tuple[str, ...] = ()
    """Scorers to use; default: those that scored each explanation (else the default scorer)."""
    max_tokens: int | None = None
    """Corpus tokens to read; default: what the original collection read."""
    simulator_model: str = "smollm2-135m"
    """Local model of the ``simulation-logits`` scorer."""


def collection_inputs(collection: dict[str, Any]) -> dict[str, Any]:
    """What collected a collection: model, hookpoint, SAE or directions path and its
    :class:`CollectConfig`, read from its stored config. Raises :class:`InputError` when the SAE or
    directions file that produced its units was not recorded (collections made before it was)."""
    config = json.loads(collection["config"]) if isinstance(collection["config"], str) else collection["config"]
    prov = config.get("provenance") or {}
    if config.get("units") and not (prov.get("sae") or prov.get("directions")):
        raise InputError(
            f"collection {collection['id']} does not record the path of the SAE or directions file of "
            "its units; collect them again (explainer collect --sae/--directions) and retry"
        )
    names = {f.name for f in fields(CollectConfig)}
    return {
        "model": (prov.get("model") or {}).get("given") or collection["model"],
        "hookpoint": prov.get("hookpoint") or collection["hookpoint"],
        "sae": prov.get("sae"),
        "directions": prov.get("directions"),
        "cfg": CollectConfig(**{k: v for k, v in config.items() if k in names}),
    }


def _domain_name(opts: CalibrationOptions) -> str:
    if opts.domain and opts.domain.strip():
        return opts.domain.strip()
    return Path(opts.corpus).expanduser().stem or "workflow"


def _score_one(
    store: Any, settings: Settings, entry: Any, record: Any, new_cid: str, domain: str, opts: CalibrationOptions
) -> list[dict[str, Any]]:
    """Re-score ``entry``'s primary explanation on ``record`` (the unit over the user's corpus)."""
    from explainer.score.registry import DEFAULT_SCORERS, evaluate, make_scorer

    names = opts.scorers or tuple(s.scorer for s in entry.scores if s.status == "ok") or DEFAULT_SCORERS
    windows = record.windows_for("heldout") if record is not None else []
    common = dict(
        explanation_id=entry.explanation_id,
        collection_id=new_cid,
        domain=domain,
        heldout_ids=[w.window_id for w in windows],
    )
    out = []
    for name in dict.fromkeys(names):
        try:
            if record is None:
                raise InputError("the unit is missing from the calibration collection")
            if not any(w.max_activation > 0 for w in windows):
                raise InputError(
                    f"the unit never fires on the held-out windows of this corpus "
                    f"({record.skip_reason or 'no activating held-out window'}): nothing to score"
                )
            scorer = make_scorer(name, simulator_model=opts.simulator_model, device=settings.device, settings=settings)
            s = evaluate(scorer, entry.explanation, windows)
        except (ExplainerError, ValueError) as exc:
            store.save_calibration(scorer=name, simulator_model=None, status="failed", error=str(exc), **common)
            out.append({"unit_id": entry.record.unit_id, "scorer": name, "status": "failed", "error": str(exc)})
            continue
        store.save_calibration(scorer=name, **s.ok_fields(), **common)
        out.append(
            {
                "unit_id": entry.record.unit_id,
                "scorer": name,
                "status": "ok",
                "value": s.value,
                "ci95": [s.ci_low, s.ci_high],
                "kind": (s.details or {}).get("kind", "simulation"),
                "per_domain": s.per_domain,
            }
        )
    return out


def calibrate(
    settings: Settings, unit_ids: list[str], opts: CalibrationOptions, progress: bool = True
) -> dict[str, Any]:
    """Collect ``unit_ids`` over ``opts.corpus`` and re-score their explanations there.
    Unknown units raise :class:`UnknownUnitError` (all listed) before anything is collected."""
    from explainer.pipeline.collection import collect_stage
    from explainer.report.entries import unit_entries

    if not unit_ids:
        raise InputError("give at least one unit id to calibrate")
    if opts.max_tokens is not None and opts.max_tokens <= 0:
        raise InputError("--max-tokens must be > 0")
    store = get_store(settings)
    entries = unit_entries(settings, list(dict.fromkeys(unit_ids)))
    domain = _domain_name(opts)
    skipped = [
        {"unit_id": e.record.unit_id, "reason": f"no ok explanation (status {e.explanation_status})"}
        for e in entries
        if e.explanation_status != "ok" or e.explanation_id is None
    ]
    todo = [
        e
        for e in entries
        if e.explanation_status == "ok" and e.explanation_id is not None and e.collection_id is not None
    ]
    by_collection: dict[str, list[Any]] = {}
    for e in todo:
        by_collection.setdefault(str(e.collection_id), []).append(e)
    results: list[dict[str, Any]] = []
    collections: dict[str, str] = {}
    for cid, group in by_collection.items():
        collection = store.get_collection(cid)
        assert collection is not None, cid  # the entry's record came from it
        inputs = collection_inputs(collection)
        cfg = inputs["cfg"] if opts.max_tokens is None else replace(inputs["cfg"], max_tokens=opts.max_tokens)
        new_cid = collect_stage(
            settings,
            inputs["model"],
            inputs["hookpoint"],
            opts.corpus,
            cfg,
            progress=progress,
            sae=inputs["sae"],
            directions=inputs["directions"],
        )
        collections[cid] = new_cid
        if new_cid == cid:
            log.warning("the calibration corpus is the units' own corpus: the scores repeat the original ones")
        records = {uid: rec for uid, (_, rec) in store.get_records([e.record.unit_id for e in group], new_cid).items()}
        for e in group:
            results += _score_one(store, settings, e, records.get(e.record.unit_id), new_cid, domain, opts)
    return {"domain": domain, "corpus": opts.corpus, "collections": collections, "results": results, "skipped": skipped}
