"""Pydantic models of the HTTP API's responses (they make its OpenAPI spec).

Pydantic stays at this edge: the library returns plain dicts and dataclasses, and these models
only describe and validate what the routes send back. The views of a score and an explanation
take their stored fields — names and types — from :class:`store.records.Score` and
:class:`store.records.Explanation` (:func:`derived`), and add only what the view computes
(``ci95``, ``prompt``, finite-only ``per_domain``), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from store.records import Explanation
from store.records import Score as ScoreRecord

__all__ = [
    "DERIVED",
    "NO_NUL_RE",
    "CheckResult",
    "CollectionsPage",
    "ErrorBody",
    "Health",
    "ReindexResult",
    "RunDetail",
    "RunsPage",
    "SearchPage",
    "UnitDetail",
    "derived",
]

NO_NUL_RE = r"^[^\x00]+$"
"""Text that reaches SQL holds no NUL byte (PostgreSQL refuses NUL in text): a 422, not a 500."""


class ErrorDetail(BaseModel):
    status: int = Field(description="HTTP status code, repeated")
    code: str = Field(description="machine-readable error code, e.g. `unauthorized`, `validation_error`")
    message: str
    details: list[dict[str, Any]] | None = Field(None, description="per-field problems of a 422")


class ErrorBody(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorDetail


DERIVED: dict[str, tuple[type, tuple[str, ...]]] = {}
"""Response model name → (the record it derives from, the fields it takes from it)."""


def derived(
    name: str, record: type, fields: tuple[str, ...], doc: str | None = None, **view_fields: Any
) -> type[BaseModel]:
    """A response model named ``name`` with ``fields`` of the dataclass ``record`` (their names
    and types as the record declares them) followed by ``view_fields`` (``(type, Field(...))``)
    that the view computes."""
    hints = typing.get_type_hints(record)
    known = {f.name for f in dataclasses.fields(record)}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise TypeError(f"{record.__name__} has no fields {unknown}")
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        name,
        __doc__=doc or f"A view of :class:`{record.__name__}`.",
        __module__=__name__,
        **{f: (hints[f], ...) for f in fields},
        **view_fields,
    )
    DERIVED[name] = (record, fields)
    return model


_CI95 = (list[float | None], Field(description="95% bootstrap interval [low, high]"))
_PER_DOMAIN = (dict[str, float | None], Field(description="the score restricted to each corpus domain"))

Score = derived(
    "Score",
    ScoreRecord,
    ("scorer",),
    "The ok score a search hit is ranked and filtered by.",
    value=(float, Field(description="Pearson correlation of simulated and true activations, −1…1")),
    ci95=_CI95,
    per_domain=_PER_DOMAIN,
    meaning=(str, Field(description="what the score says in words (none, weak, partial or good), from its interval")),
    scorer_discrimination=(
        str,
        Field(description="how well this scorer tells right from wrong explanations (make bench-discrimination)"),
    ),
)


class Meaning(BaseModel):
    level: Literal["none", "weak", "partial", "good"] = Field(
        description="none: the 95% interval reaches chance; else weak, partial or good"
    )
    words: str = Field(description="the level in a sentence")


class UnitWarning(BaseModel):
    code: str = Field(description="a stable name, e.g. low_score, wide_interval, few_activating_windows")
    message: str


class Token(BaseModel):
    text: str
    level: int = Field(ge=0, le=10, description="activation on the 0–10 scale of the unit's maximum")


class Stats(BaseModel):
    max: float | None = Field(description="largest activation over the corpus (raw units)")
    mean: float | None
    density: float | None = Field(description="share of tokens with activation > 0")


class Hit(BaseModel):
    rank: int = Field(description="1-based position in the fused ranking")
    unit_id: str
    unit_name: str | None = Field(description="the direction's name (--directions with names); null otherwise")
    explanation_id: str
    explanation: str
    explanation_source: Literal["llm", "baseline"] = Field(
        description="baseline: the no-LLM explainer's list of frequent tokens, not a description"
    )
    match: Literal["good", "weak"] = Field(
        description="weak: the explanation shares no word with the query and is not close to it: the closest there "
        "is, not an answer"
    )
    explainer_model: str
    collection_id: str
    model: str
    hookpoint: str
    layer: int
    source: str
    score: Score | None = Field(description="null when the explanation has no ok score")  # type: ignore[valid-type]
    intervention_score: float | None = Field(
        description="the output-side (intervention) score when one is stored: does steering the unit move the output "
        "toward the explanation"
    )
    similarity: float | None = Field(description="cosine similarity of query and explanation (MiniLM)")
    semantic_rank: int | None
    keyword_rank: int | None
    rrf: float = Field(description="reciprocal-rank-fusion score")
    stats: Stats | None
    top_example: str | None = Field(description="the top window, firing tokens in «guillemets»")
    top_example_tokens: list[Token] | None


class SearchPage(BaseModel):
    query: str
    filters: dict[str, Any]
    hits: list[Hit]
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last one")


class FullStats(BaseModel):
    max: float | None
    mean: float | None
    std: float | None
    density: float | None
    n_tokens: int


class Histogram(BaseModel):
    edges: list[float] = Field(description="bin edges (raw activation), one more than counts")
    top: list[int] = Field(description="token counts of the top windows per bin")
    random: list[int] = Field(description="token counts of the random windows per bin")


ScoreView = derived(
    "ScoreView",
    ScoreRecord,
    ("scorer", "status", "value", "simulator_model", "n_tokens", "error"),
    "One stored score of an explanation.",
    ci95=_CI95,
    per_domain=_PER_DOMAIN,
    discrimination=(
        dict[str, float | None] | None,
        Field(
            None,
            description="how well this scorer tells right from wrong explanations on planted units "
            "(`make bench-discrimination`): `auroc` on all concepts, `auroc_token` on token-level and "
            "`auroc_context` on contextual ones, `pairs_correct`, `n_concepts`; null when never measured",
        ),
    ),
    meaning=(Meaning | None, Field(None, description="what an ok score says in words; null for a failed one")),
)

ExplanationView = derived(
    "ExplanationView",
    Explanation,
    ("id", "status", "text", "error", "explainer_model", "created_at", "indexed_at"),
    "One stored explanation of a unit with its scores.",
    prompt=(str, Field(description="the prompt template as name@version#hash8")),
    source=(
        str | None,
        Field(
            description="the candidate kept: llm-0… (an explainer model's description) or baseline (the no-LLM "
            "explainer's frequent tokens); imported for another tool's explanation; null when not recorded"
        ),
    ),
    scores=(list[ScoreView], ...),  # type: ignore[valid-type]  # a model made at import time
)


class WindowView(BaseModel):
    id: str
    kind: str
    split: str
    domain: str
    doc_id: str
    max: float | None
    tokens: list[str]
    activations: list[float | None]
    levels: list[int]


class OutputToken(BaseModel):
    token: str
    logit: float = Field(description="the token's logit for the unit-length write direction")


class OutputSide(BaseModel):
    method: str = Field(description="vocab-projection: the write direction through the final norm and unembedding")
    promoted: list[OutputToken] = Field(description="the tokens the unit makes most likely, highest first")
    suppressed: list[OutputToken] = Field(description="the tokens it makes least likely, lowest first")


class SteeredToken(BaseModel):
    token: str
    p_clean: float = Field(description="mean next-token probability over the neutral prompts, unsteered")
    p_steered: float = Field(description="the same, steered")


class SteeringEffect(BaseModel):
    method: Literal["steering"]
    promoted: list[SteeredToken] = Field(description="the next tokens whose probability rose most")
    suppressed: list[SteeredToken] = Field(description="the next tokens whose probability fell most")
    details: dict[str, Any] = Field(description="strength, KL reached, target KL, number of prompts")


class UnitDetail(BaseModel):
    unit_id: str
    name: str | None = Field(description="the direction's name (--directions with names); null otherwise")
    model: str
    hookpoint: str
    index: int
    layer: int
    source: str
    collection_id: str
    stats: FullStats
    histogram: Histogram
    output_side: OutputSide | None = Field(
        description="the tokens the unit promotes and suppresses (computed when it is labeled); null when not computed"
    )
    steering_effect: SteeringEffect | None = Field(
        description="what steering the unit did to the next token (an intervention scorer's measurement); null when "
        "none ran"
    )
    warnings: list[UnitWarning] = Field(
        description="the report's reasons to distrust the primary explanation or the unit"
    )
    explanations: list[ExplanationView]  # type: ignore[valid-type]
    windows: list[WindowView]


class CollectionSummary(BaseModel):
    id: str
    model: str
    hookpoint: str
    corpus: str
    corpus_hash: str
    status: str
    n_tokens: int | None
    n_units: int | None
    live_units: int
    explained: int
    failed: int
    scored: int
    indexed: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class CollectionsPage(BaseModel):
    collections: list[CollectionSummary]
    offset: int
    limit: int
    total: int
    next_offset: int | None


class Run(BaseModel):
    """A labeling run: one (collection, label options, explain prompt); counts are live."""

    id: str
    collection_id: str
    status: str = Field(description="running, done (no unit pending) or incomplete (stopped with units pending)")
    explainer_model: str
    simulator: list[str] = Field(description="the scorers stored for each explanation; the first ranks search")
    options: dict[str, Any]
    units: int
    done: int = Field(description="explained, scored by every scorer and indexed")
    failed: int = Field(description="explanation or a score recorded as failed, with its reason")
    pending: int
    tokens: int = Field(description="prompt + completion tokens spent by the run's explanations")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunFailure(BaseModel):
    unit_id: str
    explanation_id: str
    stage: str = Field(description="explain or score")
    reason: str


class RunDetail(Run):
    failures: list[RunFailure] = Field(description="the first failed units, by unit id")


class RunsPage(BaseModel):
    runs: list[Run]
    offset: int
    limit: int
    total: int
    next_offset: int | None


class ReindexResult(BaseModel):
    indexed: int
    deleted: int
    keyword_docs: int
    keyword_seconds: float
    seconds: float


class Diff(BaseModel):
    count: int
    ids: list[str] = Field(description="the first ids (count is complete)")


class CheckResult(BaseModel):
    in_sync: bool
    sql_explanations: int
    vector_entries: int
    keyword_docs: int
    vector: dict[str, Diff]
    keyword: dict[str, Diff]


class Health(BaseModel):
    status: str
