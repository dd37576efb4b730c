"""Index: embed an explanation and upsert it, with the metadata search filters on, into the vector index."""

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
    from store.keyword import unit_domains

    store = get_store(settings)
    expl = store.get_explanation(explanation_id)
    if expl is None or expl.status != "ok" or expl.text is None:
        return explanation_id
    score = store.get_score(explanation_id, scorer)
    if expl.indexed_at is not None and (
        score is None or score.created_at is None or score.created_at <= expl.indexed_at
    ):
        return explanation_id  # already indexed with this score; nothing to embed again
    record = store.get_record(expl.unit_id, expl.collection_id)
    value = score.value if score is not None and score.status == "ok" else None
    meta = index_metadata(
        expl.unit_id,
        expl.collection_id,
        expl.explainer_model,
        value,
        unit_domains(record) if record is not None else (),
    )
    get_index(settings).upsert([explanation_id], [expl.text], [meta])
    store.mark_indexed(explanation_id)
    return explanation_id
