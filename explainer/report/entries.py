"""Read models: what ``show``, ``search`` and ``report`` print, assembled from the SQL store."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from explainer.errors import UnknownUnitError
from explainer.report.model import ReportEntry, ReportScore
from explainer.runtime import get_store
from explainer.settings import Settings
from store.records import Calibration, Explanation, Score, UnitRecord, highlight
from store.records import finite as _finite

if TYPE_CHECKING:
    from store.sql import SQLStore


def score_view(s: Score) -> dict[str, Any]:
    """A score as the HTTP API shows it (:class:`explainer.api.models.ScoreView`): the interval as
    ``ci95`` and non-finite floats as ``None``."""
    return {
        "scorer": s.scorer,
        "status": s.status,
        "value": _finite(s.value),
        "ci95": [_finite(s.ci_low), _finite(s.ci_high)],
        "per_domain": {k: _finite(v) for k, v in s.per_domain.items()},
        "simulator_model": s.simulator_model,
        "n_tokens": s.n_tokens,
        "error": s.error,
    }


def _report_score(s: Score, discrimination: dict[str, Any]) -> ReportScore:
    return ReportScore(
        **{f.name: getattr(s, f.name) for f in fields(Score)}, discrimination=discrimination.get(s.scorer)
    )


def _explained_records(
    store: SQLStore, unit_ids: list[str], expls: list[Explanation]
) -> dict[str, tuple[str, UnitRecord]]:
    """unit id → (collection id, record) from the latest collection in which the unit has an
    explanation (ok ones first), else its latest collection: a calibration collection, which holds
    no explanations, never hides the one a unit was labeled in."""
    found = store.get_records(unit_ids)
    for uid in unit_ids:
        own = [e for e in expls if e.unit_id == uid]
        if own and uid in found and found[uid][0] not in {e.collection_id for e in own}:
            best = max(own, key=lambda e: (e.status == "ok", e.created_at))
            found.update(store.get_records([uid], best.collection_id))
    return found


def unit_entries(
    settings: Settings, unit_ids: list[str], collection_id: str | None = None, prefer: dict[str, str] | None = None
) -> list[ReportEntry]:
    """One report entry per unit: its record (from ``collection_id``, else the latest collection
    the unit was explained in), its primary explanation (``prefer[unit_id]`` if given, else the
    latest ok one) and the others from that record, each with scores, workflow calibrations and
    provenance. Unknown units raise :class:`UnknownUnitError` listing all of them."""
    from explainer.provenance import explanation_provenance
    from explainer.report.model import PENDING, ReportCalibration, ReportExplanation
    from explainer.score.registry import measured_discrimination

    store = get_store(settings)
    all_expls = store.explanations_for(unit_ids, collection_id)
    found = (
        store.get_records(unit_ids, collection_id) if collection_id else _explained_records(store, unit_ids, all_expls)
    )
    missing = [u for u in unit_ids if u not in found]
    if missing:
        raise UnknownUnitError(missing)
    by_unit: dict[str, list[Explanation]] = {}
    for e in sorted(all_expls, key=lambda e: (e.status == "ok", e.created_at), reverse=True):
        if e.collection_id == found[e.unit_id][0]:
            by_unit.setdefault(e.unit_id, []).append(e)
    ids = [e.id for es in by_unit.values() for e in es]
    scores_by: dict[str, list[Score]] = {}
    for s in sorted(store.scores_for(ids), key=lambda s: s.scorer):
        scores_by.setdefault(s.explanation_id or "", []).append(s)
    cals_by: dict[str, list[Calibration]] = {}
    for c in store.calibrations_for(ids):
        cals_by.setdefault(c.score.explanation_id or "", []).append(c)
    collections = {cid: store.get_collection(cid) for cid in {cid for cid, _ in found.values()}}
    discrimination = measured_discrimination()

    def explanation(e: Explanation, rec: UnitRecord) -> ReportExplanation:
        scores = scores_by.get(e.id, [])
        return ReportExplanation(
            e,
            scores=tuple(_report_score(s, discrimination) for s in scores),
            calibrations=tuple(
                ReportCalibration(
                    c.domain, _report_score(c.score, discrimination), c.corpus, c.corpus_hash, c.collection_id
                )
                for c in cals_by.get(e.id, [])
            ),
            provenance=explanation_provenance(collections.get(e.collection_id), e, scores, rec.hookpoint),
        )

    outputs, effects = store.output_sides(unit_ids), store.output_sides(unit_ids, "steering")
    entries = []
    for uid in unit_ids:
        cid, rec = found[uid]
        own = by_unit.get(uid, [])
        if prefer and prefer.get(uid) in {e.id for e in own}:
            own = sorted(own, key=lambda e: e.id != prefer[uid])
        xs = [explanation(e, rec) for e in own]
        entries.append(
            ReportEntry(
                record=rec,
                main=xs[0] if xs else PENDING,
                others=tuple(xs[1:]),
                collection_id=cid,
                output_side=outputs.get(uid),
                steering_effect=effects.get(uid),
            )
        )
    return entries


def entry_summary(entry: ReportEntry) -> dict[str, Any]:
    """A compact JSON-able view of a unit for the CLI (a score with what it means in words)."""
    from explainer.score.meaning import discrimination_words, score_kind, score_meaning

    score = next((s for s in entry.scores if s.status == "ok"), None)
    top = entry.record.windows_for("explain", "top")
    return {
        "unit_id": entry.record.unit_id,
        "unit_name": entry.record.name,
        "status": entry.explanation_status,
        "source": entry.explanation_source,
        "explanation": entry.explanation,
        "error": entry.explanation_error,
        "score": None
        if score is None
        else {
            "scorer": score.scorer,
            "value": score.value,
            "ci95": [score.ci_low, score.ci_high],
            "per_domain": score.per_domain,
            "kind": (score.details or {}).get("kind", "simulation"),
            "meaning": score_meaning(score.value, score.ci_low, score.ci_high, kind=score_kind(score.details))["words"],
            "discrimination": discrimination_words(score.discrimination),
        },
        "stats": {
            "max": entry.record.stats.max,
            "mean": entry.record.stats.mean,
            "density": entry.record.stats.density,
        },
        "top_example": highlight(top[0], entry.record.stats.max) if top else None,
    }


def activation_histogram(record: UnitRecord, bins: int = 20) -> dict[str, Any]:
    """Token counts per activation bin (raw units) of the unit's top windows and, separately, of
    its random windows (an unbiased sample of the corpus)."""
    import numpy as np

    top = [a for w in record.windows if w.kind == "top" for a in w.activations if _finite(a) is not None]
    rnd = [a for w in record.windows if w.kind == "random" for a in w.activations if _finite(a) is not None]
    lo, hi = min(top + rnd + [0.0]), max(top + rnd + [record.stats.max if _finite(record.stats.max) else 0.0])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "top": np.histogram(top, edges)[0].tolist(),
        "random": np.histogram(rnd, edges)[0].tolist(),
    }


def _explanation_source(e: Explanation) -> str | None:
    """Which candidate was kept (``llm-0``…, or ``baseline``: the no-LLM explainer's frequent
    tokens), ``imported`` for an explanation made by another tool, ``None`` when not recorded."""
    return e.source or ("imported" if e.imported else None)


def unit_detail(settings: Settings, unit_id: str, collection_id: str | None = None) -> dict[str, Any]:
    """Everything about one unit (of ``collection_id``, else its latest collection) as plain JSON:
    statistics, activation histogram, the report's warnings, every explanation with its source and
    its scores (each with what it means in words), every window."""
    from explainer.report.warnings import report_warnings
    from explainer.score.meaning import score_kind, score_meaning
    from explainer.score.registry import measured_discrimination
    from store.keyword import hookpoint_fields
    from store.records import scale_0_10

    store = get_store(settings)
    found = store.get_records([unit_id], collection_id)
    if unit_id not in found:
        raise UnknownUnitError([unit_id])
    cid, rec = found[unit_id]
    expls = store.explanations_for([unit_id], cid)
    by_expl: dict[str, list[Score]] = {}
    for s in store.scores_for([e.id for e in expls]):
        by_expl.setdefault(s.explanation_id or "", []).append(s)
    layer, source = hookpoint_fields(rec.hookpoint)
    discrimination = measured_discrimination()
    st = rec.stats
    (entry,) = unit_entries(settings, [unit_id], cid)
    return {
        "unit_id": rec.unit_id,
        "name": rec.name,
        "model": rec.model,
        "hookpoint": rec.hookpoint,
        "index": rec.index,
        "layer": layer,
        "source": source,
        "collection_id": cid,
        "stats": {
            "max": _finite(st.max),
            "mean": _finite(st.mean),
            "std": _finite(st.std),
            "density": _finite(st.density),
            "n_tokens": st.n_tokens,
        },
        "histogram": activation_histogram(rec),
        "output_side": store.output_sides([rec.unit_id]).get(rec.unit_id),
        "steering_effect": store.output_sides([rec.unit_id], "steering").get(rec.unit_id),
        "warnings": [{"code": code, "message": message} for code, message in report_warnings(entry)],
        "explanations": [
            {
                "id": e.id,
                "status": e.status,
                "text": e.text,
                "source": _explanation_source(e),
                "error": e.error,
                "explainer_model": e.explainer_model,
                "prompt": e.prompt,
                "created_at": e.created_at,
                "indexed_at": e.indexed_at,
                "scores": [
                    {
                        **score_view(s),
                        "discrimination": discrimination.get(s.scorer),
                        "meaning": score_meaning(s.value, s.ci_low, s.ci_high, kind=score_kind(s.details))
                        if s.status == "ok"
                        else None,
                    }
                    for s in sorted(by_expl.get(e.id, []), key=lambda s: s.scorer)
                ],
            }
            for e in sorted(sorted(expls, key=lambda e: e.created_at, reverse=True), key=lambda e: e.status != "ok")
        ],  # ok first, newest first
        "windows": [
            {
                "id": w.window_id,
                "kind": w.kind,
                "split": w.split,
                "domain": w.domain,
                "doc_id": w.doc_id,
                "max": _finite(w.max_activation),
                "tokens": list(w.tokens),
                "activations": [_finite(a) for a in w.activations],
                "levels": scale_0_10(w.activations, st.max),
            }
            for w in rec.windows
        ],
    }
