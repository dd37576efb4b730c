"""Read models: what ``show``, ``search`` and ``report`` print, assembled from the SQL store."""

from __future__ import annotations

from typing import Any

from .config import Settings
from .errors import UnknownUnitError
from .report import ReportEntry, ReportScore
from .runtime import get_store


def unit_entries(settings: Settings, unit_ids: list[str], collection_id: str | None = None) -> list[ReportEntry]:
    """One report entry per unit: its record (from ``collection_id``, else the latest
    collection), the latest explanation written from that record, and its scores."""
    store = get_store(settings)
    found = store.get_records(unit_ids, collection_id)
    missing = [u for u in unit_ids if u not in found]
    if missing:
        raise UnknownUnitError(missing)
    records = {uid: rec for uid, (_, rec) in found.items()}
    expls: dict[str, dict[str, Any]] = {}
    for e in store.explanations_for(unit_ids):
        if e["collection_id"] != found[e["unit_id"]][0]:
            continue
        best = expls.get(e["unit_id"])
        if best is None or (e["status"] == "ok", e["created_at"]) >= (best["status"] == "ok", best["created_at"]):
            expls[e["unit_id"]] = e
    scores_by_expl: dict[str, list[dict[str, Any]]] = {}
    for s in store.scores_for([e["id"] for e in expls.values()]):
        scores_by_expl.setdefault(s["explanation_id"], []).append(s)
    entries = []
    for uid in unit_ids:
        e = expls.get(uid)
        scores = tuple(ReportScore(s["scorer"], s["value"], s["ci_low"], s["ci_high"], s["per_domain"] or {},
                                   s["status"], s["error"]) for s in scores_by_expl.get(e["id"], [])) if e else ()
        entries.append(ReportEntry(
            record=records[uid],
            explanation=e["text"] if e and e["status"] == "ok" else None,
            explanation_status=e["status"] if e else "pending",
            explanation_error=e["error"] if e else None,
            explainer_model=e["explainer_model"] if e else None,
            prompt=f"{e['prompt_name']}@{e['prompt_version']}#{e['prompt_hash'][:8]}" if e else None,
            scores=scores,
        ))
    return entries


def entry_summary(entry: ReportEntry) -> dict[str, Any]:
    """A compact JSON-able view of a unit for the CLI."""
    score = next((s for s in entry.scores if s.status == "ok"), None)
    top = entry.record.windows_for("explain", "top")
    return {
        "unit_id": entry.record.unit_id,
        "status": entry.explanation_status,
        "explanation": entry.explanation,
        "error": entry.explanation_error,
        "score": None if score is None else {"scorer": score.scorer, "value": score.value,
                                             "ci95": [score.ci_low, score.ci_high], "per_domain": score.per_domain},
        "stats": {"max": entry.record.stats.max, "mean": entry.record.stats.mean,
                  "density": entry.record.stats.density},
        "top_example": highlight(top[0], entry.record.stats.max) if top else None,
    }


def highlight(window: Any, unit_max: float, threshold: float = 0.4) -> str:
    """Window text with strongly activating tokens in «guillemets» (for terminals and JSON)."""
    out = []
    for tok, a in zip(window.tokens, window.activations):
        strong = unit_max > 0 and a >= threshold * unit_max and tok.strip()
        out.append(f"{tok[: len(tok) - len(tok.lstrip())]}«{tok.strip()}»" if strong else tok)
    return " ".join("".join(out).split())
