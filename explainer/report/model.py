"""The report model: what an audit report holds per unit, and the thresholds its warnings use.

A report holds, per unit, its explanation(s) with every score (scorer, simulator, 95% interval,
per-domain split), workflow-domain calibrations, the top and random windows, the activation
histogram, the provenance of each explanation. Entries are assembled from the store by
:mod:`explainer.report.entries`; :mod:`explainer.report.warnings` says what a reader should
distrust; :mod:`explainer.report.render` turns them into HTML, Markdown, JSON or PDF.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from store.records import UnitRecord, Window

SCHEMA_VERSION = "1.0"
"""Version of ``schemas/report.schema.json`` that :func:`report_json` follows."""
FORMATS = ("html", "md", "json", "pdf")
LOW_SCORE = 0.2
"""A correlation (simulation scorers) below this explains little of the unit's behaviour."""
LOW_WINDOW_SCORE = 0.6
"""The same for window-level scorers (balanced accuracy, AUROC), where 0.5 is chance."""
WIDE_INTERVAL = 0.5
"""A 95% interval wider than this means too little held-out evidence."""
MIN_TOP_WINDOWS = 3
"""Fewer top windows shown to the explainer than this: the explanation rests on too few examples."""
MIN_ACTIVATING_WINDOWS = 5
"""Fewer windows where the unit fires (max > 0) than this: too little evidence overall."""
DOMAIN_DROP = 0.25
"""A domain (or workflow domain) whose score is this much below the best other one is flagged."""
STRONG = 0.4
"""Tokens at or above this share of the unit's max are marked as firing in text renderings."""


@dataclass(frozen=True)
class ReportScore:
    scorer: str
    """The scoring method, e.g. ``simulation-embedding``."""
    value: float | None
    """The scorer's figure: pooled Pearson correlation over the held-out tokens for simulation
    scorers, balanced accuracy or AUROC for window-level ones; ``None`` if scoring failed."""
    ci_low: float | None
    """Lower end of the bootstrap 95% interval."""
    ci_high: float | None
    """Upper end of the bootstrap 95% interval."""
    per_domain: dict[str, float] = field(default_factory=dict)
    """The same correlation restricted to held-out windows of one corpus domain."""
    status: str = "ok"
    """``ok`` or ``failed``."""
    error: str | None = None
    discrimination: dict[str, float] | None = None
    """This scorer's measured discrimination (``make bench-discrimination``): ``auroc``,
    ``pairs_correct``, ``n_concepts``; ``None`` when it was never measured."""
    simulator_model: str | None = None
    """The model that predicted activations (an LLM, or the embedding model)."""
    n_tokens: int | None = None
    """Held-out tokens scored."""
    heldout_ids: tuple[str, ...] = ()
    """Ids of the held-out windows scored."""
    created_at: str | None = None
    """ISO 8601 time the score was stored."""
    details: dict[str, Any] = field(default_factory=dict)
    """How the score was computed, as the scorer recorded it."""


@dataclass(frozen=True)
class ReportCalibration:
    """An explanation re-scored on a user's own corpus (``explainer calibrate``)."""

    domain: str
    """Workflow domain name, shown as ``workflow domain NAME``."""
    score: ReportScore
    corpus: str | None = None
    corpus_hash: str | None = None
    collection_id: str | None = None


@dataclass(frozen=True)
class ReportExplanation:
    """One explanation of a unit with its scores, calibrations and provenance."""

    explanation_id: str | None
    status: str
    """``ok`` | ``failed`` | ``pending``."""
    text: str | None
    error: str | None
    explainer_model: str | None
    prompt: str | None
    """``name@version#hash8``."""
    source: str | None = None
    """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer)."""
    scores: tuple[ReportScore, ...] = ()
    calibrations: tuple[ReportCalibration, ...] = ()
    provenance: dict[str, Any] | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class ReportEntry:
    """One unit: its record and its primary explanation (the latest ok one), plus the others."""

    record: UnitRecord
    explanation: str | None
    """``None`` when explaining failed (or has not happened yet)."""
    explanation_status: str
    """``ok`` | ``failed`` | ``pending``."""
    explanation_error: str | None
    explainer_model: str | None
    prompt: str | None
    """``name@version#hash8``."""
    scores: tuple[ReportScore, ...] = ()
    explanation_source: str | None = None
    """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer)."""
    explanation_id: str | None = None
    calibrations: tuple[ReportCalibration, ...] = ()
    provenance: dict[str, Any] | None = None
    """Where the primary explanation came from (see the JSON schema's ``provenance``)."""
    others: tuple[ReportExplanation, ...] = ()
    """The unit's other explanations in the same collection (other explainers or prompts)."""
    collection_id: str | None = None
    created_at: str | None = None

    def primary(self) -> ReportExplanation:
        return ReportExplanation(self.explanation_id, self.explanation_status, self.explanation,
                                 self.explanation_error, self.explainer_model, self.prompt, self.explanation_source,
                                 self.scores, self.calibrations, self.provenance, self.created_at)

    def explanations(self) -> list[ReportExplanation]:
        """The primary explanation first, then the others."""
        return [self.primary(), *self.others]


@dataclass(frozen=True)
class ReportMeta:
    """What a report is about: its title, how its units were chosen, and an optional note."""

    title: str = "Activation explanations"
    generated_by: str = ""
    """E.g. ``explainer report`` or ``explainer HTTP API``."""
    selection: dict[str, Any] = field(default_factory=lambda: {"kind": "all"})
    """``kind`` ``units`` | ``query`` | ``run`` | ``all`` with ``unit_ids``, ``query`` and ``filters``, ``run``."""
    note: str | None = None
    """Shown above the units, e.g. why the report is empty."""
    generated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
