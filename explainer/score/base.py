"""What every scorer returns: one result type for one scorer's verdict on one explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScoreResult:
    """One scorer's verdict on one explanation over the held-out windows."""

    value: float
    """The scorer's figure: pooled correlation (simulators, −1…1), balanced accuracy (detection,
    0…1) or AUROC (embedding, 0…1)."""
    ci_low: float | None
    ci_high: float | None
    """95% bootstrap interval over held-out windows; ``None`` where none was computed."""
    per_domain: dict[str, float]
    n_tokens: int
    """Held-out tokens scored (window-level scorers: tokens of the windows they judged)."""
    model: str
    """The model that produced the predictions, with how it was read (e.g. ``gpt-x [completions-echo]``)."""
    details: dict[str, Any] = field(default_factory=dict)
    """How the figure was computed: method, fidelity, extra figures (stored in the score's ``details``)."""
