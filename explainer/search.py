"""Search explanations by description: semantic ranking in the vector index, filters inside
the query, details joined from the SQL store (the source of truth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Settings
from .runtime import get_index
from .views import entry_summary, unit_entries


@dataclass(frozen=True)
class SearchFilters:
    model: str | None = None
    layer: int | None = None
    source: str | None = None
    min_score: float | None = None

    def where(self) -> dict[str, Any] | None:
        conds: list[dict[str, Any]] = []
        if self.model:
            conds.append({"model": self.model})
        if self.layer is not None:
            conds.append({"layer": self.layer})
        if self.source:
            conds.append({"source": self.source})
        if self.min_score is not None:
            conds.append({"score": {"$gte": self.min_score}})
        if not conds:
            return None
        return conds[0] if len(conds) == 1 else {"$and": conds}


def search(settings: Settings, query: str, filters: SearchFilters = SearchFilters(), limit: int = 10) -> list[dict[str, Any]]:
    """Hits ranked by similarity of the query to each explanation, best first."""
    if not query.strip():
        from .errors import InputError

        raise InputError("the search query is empty")
    index = get_index(settings)
    hits = index.query(query, n=limit, where=filters.where())
    if not hits:
        return []
    metas = index.collection.get(ids=[h[0] for h in hits], include=["metadatas"])
    unit_of = dict(zip(metas["ids"], (m["unit_id"] for m in metas["metadatas"])))
    unit_ids = [unit_of[eid] for eid, _ in hits if eid in unit_of]
    entries = {e.record.unit_id: e for e in unit_entries(settings, list(dict.fromkeys(unit_ids)))}
    out = []
    for eid, dist in hits:
        if eid not in unit_of:
            continue
        summary = entry_summary(entries[unit_of[eid]])
        out.append({"similarity": round(1.0 - dist, 4), "explanation_id": eid, **summary})
    return out
