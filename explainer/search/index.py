"""Index: embed explanations and upsert them, with the metadata search filters on, into the vector index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from explainer.runtime import get_index, get_store
from explainer.score.registry import DEFAULT_SCORERS
from explainer.settings import Settings


def index_metadata(
    unit_id: str, collection_id: str, explainer_model: str, score: float | None, domains: Sequence[str] = ()
) -> dict[str, Any]:
    """Vector-index metadata of an explanation: what search filters on (model, layer, source,
    ``score`` — the ok search score's value, ``None`` if there is none —, the corpus ``domains`` of
    the unit's top windows) and what a hit shows."""
    from store.keyword import UNSCORED, hookpoint_fields
    from store.records import parse_unit_id

    model, hookpoint, index = parse_unit_id(unit_id)
    layer, source = hookpoint_fields(hookpoint)
    meta: dict[str, Any] = {
        "unit_id": unit_id,
        "collection_id": collection_id,
        "model": model,
        "hookpoint": hookpoint,
        "index": index,
        "layer": layer,
        "source": source,
        "explainer_model": explainer_model,
        "score": float(score) if score is not None else UNSCORED,
    }
    if domains:
        meta["domains"] = sorted(domains)  # Chroma rejects empty lists
    return meta


def index_stage(settings: Settings, explanation_id: str, scorer: str = DEFAULT_SCORERS[0]) -> str:
    """Embed the explanation and upsert it into the vector index (idempotent)."""
    index_many(settings, [explanation_id], scorer)
    return explanation_id


def index_many(settings: Settings, explanation_ids: Sequence[str], scorer: str = DEFAULT_SCORERS[0]) -> int:
    """Embed and upsert the explanations among ``explanation_ids`` that need it, all in one batch: one
    SQL read, one embedding call, one upsert, one SQL write. An explanation is skipped when it is not
    ok or is indexed already with its current ``scorer`` score. Returns how many were (re)indexed."""
    from store.keyword import unit_domains

    store = get_store(settings)
    todo = [
        r
        for r in store.index_rows(list(dict.fromkeys(explanation_ids)), scorer)
        if r["text"] is not None
        and (r["indexed_at"] is None or (r["score_at"] is not None and r["score_at"] > r["indexed_at"]))
    ]
    if not todo:
        return 0
    metas = []
    for r in todo:
        if r["domains"] is not None:  # the keyword row holds them (",code,docs,")
            domains: Sequence[str] = [d for d in r["domains"].split(",") if d]
        else:  # no keyword row yet (a store written before it had one): read the record
            record = store.get_record(r["unit_id"], r["collection_id"])
            domains = unit_domains(record) if record is not None else ()
        value = r["score_value"] if r["score_status"] == "ok" else None
        metas.append(index_metadata(r["unit_id"], r["collection_id"], r["explainer_model"], value, domains))
    ids = [r["id"] for r in todo]
    get_index(settings).upsert(ids, [r["text"] for r in todo], metas)
    store.mark_indexed_many(ids)
    return len(ids)
