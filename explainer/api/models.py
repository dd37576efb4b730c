"""Pydantic models of the HTTP API's responses (they make its OpenAPI spec).

Pydantic stays at this edge: the library returns plain dicts and dataclasses, and these models
only describe and validate what the routes send back. The views of a unit, its statistics and
windows, a search hit, an explanation and a score take their stored fields — names and types — from
the records of :mod:`store.records` (:func:`~explainer.api.derive.derived`), and add only what the
view computes (``ci95``, ``prompt``, a window's ``levels``, finite-only numbers, a unit's ``layer``),
so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from explainer.api.derive import DERIVED, From, derived
from store.records import Explanation, UnitRecord, UnitStats, Window
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
    meaning=(
        str,
        Field(
            description="what the score says in words (none, weak, partial or good; an intervention score: none or "
            "positive), from its interval"
        ),
    ),
    scorer_discrimination=(
        str,
        Field(description="how well this scorer tells right from wrong explanations (make bench-discrimination)"),
    ),
)


class Meaning(BaseModel):
    level: Literal["none", "weak", "partial", "good", "positive"] = Field(
        description="none: the 95% interval reaches chance; else weak, partial or good (simulation and window "
        "scores), or positive (intervention scores, which have no bands)"
    )
    words: str = Field(description="the level in a sentence")


class UnitWarning(BaseModel):
    code: str = Field(description="a stable name, e.g. low_score, wide_interval, few_activating_windows")
    message: str


class Token(BaseModel):
    text: str
    level: int = Field(ge=0, le=10, description="activation on the 0–10 scale of the unit's maximum")


Stats = derived(
    "Stats",
    UnitStats,
    (
        From("max", finite=True, description="largest activation over the corpus (raw units)"),
        From("mean", finite=True),
        From("density", finite=True, description="share of tokens with activation > 0"),
    ),
    "A unit's statistics over the corpus (null where not finite).",
)


_UNIT_NAME = "the direction's name (--directions with names); null otherwise"

Hit = derived(
    "Hit",
    Explanation,
    (
        "rank",
        "unit_id",
        From("name", name="unit_name", record=UnitRecord, description=_UNIT_NAME),
        From("id", name="explanation_id"),
        "explanation",
        "explanation_source",
        "match",
        "explainer_model",
        "collection_id",
    ),
    "One ok explanation found by a search, with its unit and its ranking.",
    rank=(int, Field(description="1-based position in the fused ranking")),
    explanation=(str, ...),  # an ok explanation's text: never null
    explanation_source=(
        Literal["llm", "baseline"],
        Field(description="baseline: the no-LLM explainer's list of frequent tokens, not a description"),
    ),
    match=(
        Literal["good", "weak"],
        Field(
            description="weak: the explanation shares no word with the query and is not close to it: the closest "
            "there is, not an answer"
        ),
    ),
    model=(str, ...),  # parsed from the unit id (the unit's row may be gone)
    hookpoint=(str, ...),
    layer=(int, ...),
    source=(str, ...),
    score=(Score | None, Field(description="null when the explanation has no ok score")),
    intervention_score=(
        float | None,
        Field(
            description="the output-side (intervention) score when one is stored: does steering the unit move the "
            "output toward the explanation (of intervention_scorer)"
        ),
    ),
    intervention_scorer=(
        str | None,
        Field(
            description="the intervention scorer intervention_score comes from (the one asked for, else the first "
            "of intervention, intervention-embedding, intervention-endpoint the explanation has); null with no score"
        ),
    ),
    similarity=(float | None, Field(description="cosine similarity of query and explanation (MiniLM)")),
    semantic_rank=(int | None, ...),
    keyword_rank=(int | None, ...),
    rrf=(float, Field(description="reciprocal-rank-fusion score")),
    stats=(Stats | None, ...),
    top_example=(str | None, Field(description="the top window, firing tokens in «guillemets»")),
    top_example_tokens=(list[Token] | None, ...),
)


class SearchPage(BaseModel):
    query: str
    filters: dict[str, Any]
    hits: list[Hit]  # type: ignore[valid-type]
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last one")


FullStats = derived(
    "FullStats",
    UnitStats,
    (
        From("max", finite=True),
        From("mean", finite=True),
        From("std", finite=True),
        From("density", finite=True),
        "n_tokens",
    ),
    "A unit's statistics over the corpus (null where not finite).",
)


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


WindowView = derived(
    "WindowView",
    Window,
    (
        From("window_id", name="id"),
        "kind",
        "split",
        "domain",
        "doc_id",
        "max",
        "tokens",
        From("activations", finite=True),
    ),
    "One window of a unit with its raw activations (null where not finite) and their 0–10 levels.",
    max=(float | None, ...),  # the window's max activation, null where not finite
    levels=(list[int], ...),  # the 0–10 scale of the unit's maximum
)


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


UnitDetail = derived(
    "UnitDetail",
    UnitRecord,
    (
        "unit_id",
        From("name", description=_UNIT_NAME),
        "model",
        "hookpoint",
        "index",
    ),
    "Everything about one unit of one collection.",
    layer=(int, ...),
    source=(str, ...),
    collection_id=(str, ...),
    stats=(FullStats, ...),  # a view of the record's stats
    histogram=(Histogram, ...),
    output_side=(
        OutputSide | None,
        Field(
            description="the tokens the unit promotes and suppresses (computed when it is labeled); null when not "
            "computed"
        ),
    ),
    steering_effect=(
        SteeringEffect | None,
        Field(
            description="what steering the unit did to the next token (an intervention scorer's measurement); null "
            "when none ran"
        ),
    ),
    warnings=(
        list[UnitWarning],
        Field(description="the report's reasons to distrust the primary explanation or the unit"),
    ),
    explanations=(list[ExplanationView], ...),  # type: ignore[valid-type]
    windows=(list[WindowView], ...),  # type: ignore[valid-type]  # views of the record's windows
)


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
