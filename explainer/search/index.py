"""Index: embed explanations and upsert them, with the metadata search filters on, into the vector index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from explainer.runtime import get_index, get_store
from explainer.score.registry import DEFAULT_SCORERS
from explainer.settings import Settings

if TYPE_CHECKING:
    from store.keyword import IndexDoc


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


def expected_metadata(doc: IndexDoc) -> dict[str, Any]:
    """The vector-index metadata of an index document, from its score."""
    s = doc.score
    return index_metadata(
        doc.unit_id,
        doc.collection_id,
        doc.explainer_model,
        s.value if s is not None and s.status == "ok" else None,
        doc.domains,
    )


def index_many(settings: Settings, explanation_ids: Sequence[str], scorer: str = DEFAULT_SCORERS[0]) -> int:
    """Embed and upsert the explanations among ``explanation_ids`` that need it, all in one batch: one
    SQL read, one embedding call, one upsert, one SQL write. An explanation is skipped when it is not
    ok or is indexed already with its current ``scorer`` score. Returns how many were (re)indexed."""
    from store.keyword import iter_docs

    store = get_store(settings)
    todo = [
        d
        for d in iter_docs(store, list(dict.fromkeys(explanation_ids)), scorer=scorer)
        if d.indexed_at is None
        or (d.score is not None and d.score.created_at is not None and d.score.created_at > d.indexed_at)
    ]
    if not todo:
        return 0
    ids = [d.explanation_id for d in todo]
    get_index(settings).upsert(ids, [d.text for d in todo], [expected_metadata(d) for d in todo])
    store.mark_indexed_many(ids)
    return len(ids)
