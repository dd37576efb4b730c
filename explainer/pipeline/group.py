"""Explain and score a group of units of one collection in one call: their LLM calls run side by side,
their state is read in three queries and their rows written in one transaction.

A Celery task per unit costs more CPU than the unit's own work once the LLM calls are cheap to make
(a message, a pickup, an acknowledgement, a result, the next step's message); a task per group of
units pays it once for all of them. Each unit stays on its own: the stages' idempotence holds
(a unit already explained is not asked again, a stored ok score is not redone), a unit whose
answer fails is stored failed with its reason while the others finish, and a transient error of
one unit (on an attempt that is not the last) is raised only after the others are written, so the
retry of the group redoes that unit alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from explainer.errors import TransientLLMError, UnknownUnitError
from explainer.llm.prompts import load_template
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import explanation_fields, score_fields
from explainer.runtime import get_store
from explainer.settings import Settings

if TYPE_CHECKING:
    from store.records import Explanation, Score, UnitRecord


@dataclass(frozen=True)
class GroupResult:
    """What one group did."""

    explanation_ids: list[str]
    """The explanation id of every unit of the group that has its record, in the group's order."""
    errors: dict[str, str] = field(default_factory=dict)
    """Unit id → why the unit could not be labeled at all (no record, a bug): not a stored failure."""


@dataclass
class _Unit:
    unit_id: str
    explanation_id: str
    explanation: dict[str, Any] | None = None
    scores: list[dict[str, Any]] = field(default_factory=list)
    transient: TransientLLMError | None = None
    error: str | None = None


def label_group(
    settings: Settings,
    collection_id: str,
    unit_ids: list[str],
    opts: LabelOptions,
    score_opts: LabelOptions | None = None,
    final_attempt: bool = True,
) -> GroupResult:
    """Explain (``opts``) and score (``score_opts``' scorers; ``None``: explain only) the units, each in
    a thread of its own, and store what they produced in one transaction (see the module docstring).
    Raises :class:`TransientLLMError` after writing when a unit met one and this is not the
    ``final_attempt``."""
    from store.records import make_explanation_id
    from store.rows import explanation_row, score_row

    store = get_store(settings)
    template = load_template(opts.explain_prompt)
    units = [
        _Unit(uid, make_explanation_id(uid, collection_id, opts.explainer.model, template.sha256)) for uid in unit_ids
    ]
    existing = store.get_explanations([u.explanation_id for u in units])
    scorers = list(score_opts.scorers) if score_opts is not None else []
    stored_scores = (
        {(str(s.explanation_id), s.scorer): s for s in store.scores_for(list(existing))} if scorers and existing else {}
    )
    records = {uid: rec for uid, (_cid, rec) in store.get_records(unit_ids, collection_id).items()}

    def run(unit: _Unit) -> None:
        try:
            _label_one(
                unit,
                collection_id,
                records.get(unit.unit_id),
                existing,
                stored_scores,
                settings,
                opts,
                score_opts,
                final_attempt,
            )
        except TransientLLMError as exc:
            unit.transient = exc
        except Exception as exc:  # noqa: BLE001 - this unit's own failure; the others go on
            unit.error = f"{type(exc).__name__}: {exc}"

    if len(units) == 1:
        run(units[0])
    else:
        with ThreadPoolExecutor(len(units), thread_name_prefix="unit") as pool:
            list(pool.map(run, units))
    rows = [explanation_row(**u.explanation) for u in units if u.explanation is not None]
    scores = [score_row(**s) for u in units for s in u.scores]
    if rows or scores:
        store.save_labels(rows, scores)
    measured = {u.unit_id: m for u in units for s in u.scores if (m := (s.get("details") or {}).get("measured_output"))}
    if measured:  # an intervention scorer steered a unit: keep what it did
        store.save_output_sides(measured)
    retry = [u for u in units if u.transient is not None]
    if retry:
        raise TransientLLMError(
            f"{len(retry)} of {len(units)} units met a transient error (first, {retry[0].unit_id}): {retry[0].transient}"
        )
    return GroupResult(
        [u.explanation_id for u in units if u.error is None],
        {u.unit_id: u.error for u in units if u.error is not None},
    )


def _label_one(
    unit: _Unit,
    collection_id: str,
    record: UnitRecord | None,
    existing: dict[str, Explanation],
    stored_scores: dict[tuple[str, str], Score],
    settings: Settings,
    opts: LabelOptions,
    score_opts: LabelOptions | None,
    final_attempt: bool,
) -> None:
    """What :func:`~explainer.pipeline.stages.explain_stage` then
    :func:`~explainer.pipeline.stages.score_stage` would store for one unit, kept on ``unit``."""
    before = existing.get(unit.explanation_id)
    text = before.text if before is not None and before.status == "ok" else None
    if before is None or (before.status != "ok" and opts.retry_failed):
        if record is None:
            raise UnknownUnitError([unit.unit_id])
        template = load_template(opts.explain_prompt)
        unit.explanation = explanation_fields(record, collection_id, opts, template, settings, final_attempt)
        text = unit.explanation.get("text") if unit.explanation["status"] == "ok" else None
    if text is None or score_opts is None:
        return
    for name in score_opts.scorers:
        stored = stored_scores.get((unit.explanation_id, name))
        if stored is not None and (stored.status == "ok" or not score_opts.retry_failed):
            continue
        if record is None:
            raise UnknownUnitError([unit.unit_id])
        unit.scores.append(score_fields(settings, name, unit.explanation_id, text, record, score_opts, final_attempt))
