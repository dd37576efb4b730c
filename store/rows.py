"""Rows of the ``explanations`` and ``scores`` tables, built from what a stage computed: one place that
knows their keys and encodings, for single writes and for the batched writes of a group of units."""

from __future__ import annotations

import json
from typing import Any

from store.db import now
from store.records import make_explanation_id, make_score_id, make_unit_row_id


def explanation_row(
    *,
    unit_id: str,
    collection_id: str,
    explainer_model: str,
    prompt_name: str,
    prompt_version: str,
    prompt_hash: str,
    status: str,
    text: str | None = None,
    error: str | None = None,
    window_ids: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> dict[str, Any]:
    """The ``explanations`` row of an explanation, keyed on (unit, collection, explainer model, prompt hash)."""
    if status == "ok" and not (text and text.strip()):
        raise ValueError("an ok explanation needs a text")
    return dict(
        id=make_explanation_id(unit_id, collection_id, explainer_model, prompt_hash),
        unit_id=unit_id,
        collection_id=collection_id,
        unit_row=make_unit_row_id(collection_id, unit_id),
        explainer_model=explainer_model,
        prompt_name=prompt_name,
        prompt_version=prompt_version,
        prompt_hash=prompt_hash,
        status=status,
        text=text if status == "ok" else None,
        error=error,
        window_ids=json.dumps(window_ids or []),
        settings=json.dumps(settings or {}, sort_keys=True),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        created_at=now(),
        indexed_at=None,
    )


def score_row(
    *,
    explanation_id: str,
    scorer: str,
    simulator_model: str | None,
    status: str,
    value: float | None = None,
    ci_low: float | None = None,
    ci_high: float | None = None,
    per_domain: dict[str, float] | None = None,
    heldout_ids: list[str] | None = None,
    n_tokens: int | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``scores`` row of one scorer's score of an explanation, keyed on (explanation, scorer)."""
    return dict(
        id=make_score_id(explanation_id, scorer),
        explanation_id=explanation_id,
        scorer=scorer,
        simulator_model=simulator_model,
        status=status,
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        per_domain=json.dumps(per_domain or {}),
        heldout_ids=json.dumps(heldout_ids or []),
        n_tokens=n_tokens,
        error=error,
        details=json.dumps(details or {}, sort_keys=True),
        created_at=now(),
    )
