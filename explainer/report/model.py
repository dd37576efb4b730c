"""The report model: what an audit report holds per unit, and the thresholds its warnings use.

A report holds, per unit, its explanation(s) with every score (scorer, simulator, 95% interval,
per-domain split), workflow-domain calibrations, the top and random windows, the activation
histogram, the provenance of each explanation. Entries are assembled from the store by
:mod:`explainer.report.entries`; :mod:`explainer.report.warnings` says what a reader should
distrust; :mod:`explainer.report.render` turns them into HTML, Markdown, JSON or PDF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store.records import Calibration, Explanation, ImportedFrom, Score, UnitRecord

SCHEMA_VERSION = "1.1"
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
WEAK_CONTEXT_AUROC = 0.85
"""A scorer below this AUROC on the contextual planted concepts is flagged on every score it gave:
it ranks a wrong explanation above the right one too often on units whose firing depends on context."""
DOMAIN_DROP = 0.25
"""A domain (or workflow domain) whose score is this much below the best other one is flagged."""
STRONG = 0.4
"""Tokens at or above this share of the unit's max are marked as firing in text renderings."""


@dataclass(frozen=True)
class ReportScore(Score):
    """A stored :class:`~store.records.Score` with what the report adds to it."""

    discrimination: dict[str, float] | None = None
    """This scorer's measured discrimination (``make bench-discrimination``): ``auroc``,
    ``pairs_correct``, ``n_concepts``; ``None`` when it was never measured."""


@dataclass(frozen=True)
class ReportCalibration(Calibration):
    """An explanation re-scored on a user's own corpus (``explainer calibrate``); its score is
    shown as ``workflow domain NAME``."""

    score: ReportScore


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


@dataclass(frozen=True)
class ReportExplanation:
    """One stored explanation of a unit (``None`` while pending) grouped with its scores,
    calibrations and provenance."""

    explanation: Explanation | None
    scores: tuple[ReportScore, ...] = ()
    calibrations: tuple[ReportCalibration, ...] = ()
    provenance: dict[str, Any] | None = None

    @property
    def explanation_id(self) -> str | None:
        return self.explanation.id if self.explanation else None

    @property
    def status(self) -> str:
        """``ok`` | ``failed`` | ``pending``."""
        return self.explanation.status if self.explanation else "pending"

    @property
    def text(self) -> str | None:
        return self.explanation.text if self.explanation and self.explanation.status == "ok" else None

    @property
    def error(self) -> str | None:
        return self.explanation.error if self.explanation else None

    @property
    def explainer_model(self) -> str | None:
        return self.explanation.explainer_model if self.explanation else None

    @property
    def prompt(self) -> str | None:
        """``name@version#hash8``."""
        return self.explanation.prompt if self.explanation else None

    @property
    def source(self) -> str | None:
        """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer), ``imported``
        for an explanation made by another tool (:attr:`imported` says which)."""
        if self.explanation is None:
            return None
        return self.explanation.source or ("imported" if self.explanation.imported else None)

    @property
    def imported(self) -> ImportedFrom | None:
        """Where an imported explanation came from (tool, explainer model, original score); ``None`` for ours."""
        return self.explanation.imported if self.explanation else None

    @property
    def created_at(self) -> str | None:
        """ISO 8601 time the explanation was stored."""
        return _iso(self.explanation.created_at) if self.explanation else None


PENDING = ReportExplanation(None)


@dataclass(frozen=True)
class ReportEntry:
    """One unit: its record and its primary explanation (the latest ok one), plus the others."""

    record: UnitRecord
    main: ReportExplanation = PENDING
    """The primary explanation (``PENDING`` when the unit has none yet)."""
    others: tuple[ReportExplanation, ...] = ()
    """The unit's other explanations in the same collection (other explainers or prompts)."""
    collection_id: str | None = None
    output_side: dict[str, Any] | None = None
    """The tokens the unit promotes and suppresses (``{"method", "promoted", "suppressed"}``), when computed."""
    steering_effect: dict[str, Any] | None = None
    """The next tokens that rose and fell when an intervention scorer steered the unit, when one ran."""

    def primary(self) -> ReportExplanation:
        return self.main

    def explanations(self) -> list[ReportExplanation]:
        """The primary explanation first, then the others."""
        return [self.main, *self.others]

    # the primary explanation's parts, as the renderers read them
    @property
    def explanation(self) -> str | None:
        """``None`` when explaining failed (or has not happened yet)."""
        return self.main.text

    @property
    def explanation_status(self) -> str:
        return self.main.status

    @property
    def explanation_error(self) -> str | None:
        return self.main.error

    @property
    def explainer_model(self) -> str | None:
        return self.main.explainer_model

    @property
    def prompt(self) -> str | None:
        return self.main.prompt

    @property
    def scores(self) -> tuple[ReportScore, ...]:
        return self.main.scores

    @property
    def explanation_source(self) -> str | None:
        return self.main.source

    @property
    def explanation_id(self) -> str | None:
        return self.main.explanation_id

    @property
    def calibrations(self) -> tuple[ReportCalibration, ...]:
        return self.main.calibrations

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self.main.provenance

    @property
    def created_at(self) -> str | None:
        return self.main.created_at


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
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
