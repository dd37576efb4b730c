"""What a score means, in words a reader can act on.

A correlation of ``+0.004 [-0.24, +0.15]`` tells an auditor nothing by itself. :func:`score_meaning`
places a score against chance (0 for the pooled correlation of simulation scorers, 0.5 for the
balanced accuracy or AUROC of window-level scorers) and against fixed bands, and
:func:`discrimination_words` says how far the scorer itself can be trusted, from its measured
discrimination (``make bench-discrimination``). The CLI, the search hits and ``show`` use both.
"""

from __future__ import annotations

import math
from typing import Any

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


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def score_meaning(
    value: float | None, ci_low: float | None = None, ci_high: float | None = None, window_level: bool = False
) -> dict[str, str]:
    """``{"level", "words"}`` of a score: ``none`` when its 95% interval reaches chance (or it has no
    value), else ``weak``, ``partial`` or ``good`` by :data:`BANDS`."""
    chance, partial, good = BANDS["window" if window_level else "correlation"]
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


def discrimination_words(d: dict[str, Any] | None) -> str:
    """How well the scorer tells right from wrong explanations, from its measured discrimination."""
    if not d or _finite(d.get("auroc")) is None:
        return "this scorer's discrimination was never measured"
    n = int(d.get("n_concepts", 0) or 0)
    return f"this scorer tells right from wrong explanations with AUROC {d['auroc']:.2f}" + (
        f" on {n} planted concepts" if n else ""
    )
