"""What a score means, in words a reader can act on.

A correlation of ``+0.004 [-0.24, +0.15]`` tells an auditor nothing by itself. :func:`score_meaning`
places a score against chance and bands that depend on what kind of score it is
(:func:`score_kind`, from the ``kind`` its details record):

- ``simulation``: the pooled correlation of simulated and true activations; chance 0, bands 0.2
  and 0.4: does the explanation predict *when the unit fires*;
- ``window``: the balanced accuracy or AUROC of window-level scorers; chance 0.5, bands 0.6 and 0.75;
- ``intervention``: ``mean[s(explanation | steered text) − s(explanation | clean text)] / KL``, a
  log-probability gain (``intervention``, ``intervention-endpoint``) or a cosine gain
  (``intervention-embedding``) per nat of KL: does the explanation describe *what steering the unit
  does to the output*. Chance is 0. Its size depends on the judge, the prompts and the measure, and
  ``make bench-intervention`` finds right and wrong explanations close together, so no band is
  principled: the words say only whether there is evidence (the interval above 0) and by how much,
  per nat of KL, the steered text matches the explanation better than the clean text.

:func:`discrimination_words` says how far the scorer itself can be trusted, from its measured
discrimination (``make bench-discrimination``). The CLI, the search hits, reports and ``show`` use both.
"""

from __future__ import annotations

import math
from typing import Any, Literal

ScoreKind = Literal["simulation", "window", "intervention"]

BANDS = {
    "correlation": (0.0, 0.2, 0.4),
    "window": (0.5, 0.6, 0.75),
}
"""Per kind of figure: chance, and the lower bounds of ``partial`` and ``good`` (below: ``weak``)."""

WORDS = {
    "none": "no evidence: the explanation does not predict when this unit fires (the 95% interval includes chance)",
    "weak": "weak: the explanation predicts little of when this unit fires",
    "partial": "partial: the explanation predicts part of when this unit fires",
    "good": "good: the explanation predicts well when this unit fires",
}

INTERVENTION_WORDS = {
    "none": "no evidence: steering this unit does not make its output match the explanation better "
    "(the 95% interval includes 0)",
    "against": "no evidence: the text steered by this unit matches the explanation worse than the clean text "
    "({value:+.3f} per nat of KL)",
    "positive": "positive: the text steered by this unit matches the explanation better than the clean text "
    "({value:+.3f} per nat of KL)",
}
"""Intervention scores: ``none`` (the interval reaches 0), ``none`` with an interval below 0
(``against``), or ``positive``; no bands (see the module docstring)."""


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def score_kind(details: dict[str, Any] | None) -> ScoreKind:
    """The kind of a score, from the ``kind`` its details (or its view) record (``simulation`` when absent)."""
    kind = (details or {}).get("kind")
    return kind if kind in ("window", "intervention") else "simulation"


def score_meaning(
    value: float | None, ci_low: float | None = None, ci_high: float | None = None, kind: ScoreKind = "simulation"
) -> dict[str, str]:
    """``{"level", "words"}`` of a score of ``kind``: ``none`` when its 95% interval reaches chance (or it
    has no value), else ``weak``, ``partial`` or ``good`` by :data:`BANDS`; an intervention score is
    ``none`` or ``positive`` (:data:`INTERVENTION_WORDS`)."""
    if kind == "intervention":
        return _intervention_meaning(value, ci_low, ci_high)
    chance, partial, good = BANDS["window" if kind == "window" else "correlation"]
    v, lo = _finite(value), _finite(ci_low)
    if v is None or v <= chance or (lo is not None and lo <= chance):
        level = "none"
    elif v < partial:
        level = "weak"
    elif v < good:
        level = "partial"
    else:
        level = "good"
    return {"level": level, "words": WORDS[level]}


def _intervention_meaning(value: float | None, ci_low: float | None, ci_high: float | None) -> dict[str, str]:
    v, lo, hi = _finite(value), _finite(ci_low), _finite(ci_high)
    if v is not None and v > 0 and (lo is None or lo > 0):
        return {"level": "positive", "words": INTERVENTION_WORDS["positive"].format(value=v)}
    if v is not None and v < 0 and hi is not None and hi < 0:
        return {"level": "none", "words": INTERVENTION_WORDS["against"].format(value=v)}
    return {"level": "none", "words": INTERVENTION_WORDS["none"]}


def discrimination_words(d: dict[str, Any] | None) -> str:
    """How well the scorer tells right from wrong explanations, from its measured discrimination."""
    if not d or _finite(d.get("auroc")) is None:
        return "this scorer's discrimination was never measured"
    causal = int(d.get("n_causal_units", 0) or 0)
    n = int(d.get("n_concepts", 0) or 0)
    where = f" on {causal} planted causal (steering) units" if causal else (f" on {n} planted concepts" if n else "")
    return f"this scorer tells right from wrong explanations with AUROC {d['auroc']:.2f}{where}"
