"""What every scorer is and returns: the :class:`Scorer` protocol and its :class:`ScoreResult`.

Two kinds of scorer, one protocol: a **simulator** (``kind == "simulation"``) predicts each token's
activation from the explanation (:class:`Simulator` adds ``simulate``) and scores the pooled
correlation of its predictions (:func:`simulation_result`); a **window-level** scorer
(``kind == "window"``) computes its own figure (detection's balanced accuracy, the embedding
scorer's AUROC). A scorer that acts on the unit itself (steering it) is also a :class:`UnitScorer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from store.records import Window

ScorerKind = Literal["simulation", "window"]


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

    def ok_fields(self) -> dict[str, Any]:
        """The fields an ok score (or calibration) row stores from this result, ``details`` aside."""
        return dict(
            simulator_model=self.model,
            status="ok",
            value=self.value,
            ci_low=self.ci_low,
            ci_high=self.ci_high,
            per_domain=self.per_domain,
            n_tokens=self.n_tokens,
        )


@runtime_checkable
class Scorer(Protocol):
    """What every registered scorer implements."""

    method: str
    """The scorer's name as stored with each score (its registry name)."""
    kind: ScorerKind

    @property
    def model_name(self) -> str:
        """The model behind the figure, as stored with the score."""

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        """This scorer's verdict on ``explanation`` over the held-out ``windows``."""


@runtime_checkable
class UnitScorer(Protocol):
    """A scorer that can judge an explanation on the unit itself rather than on its windows (the
    intervention scorers steer the unit): :func:`explainer.score.registry.evaluate` calls
    ``score_unit`` when it knows the unit. Methods only, so ``isinstance`` reads no property."""

    def score_unit(self, explanation: str, unit_id: str) -> ScoreResult:
        """This scorer's verdict on ``explanation`` for the unit ``unit_id``."""


@runtime_checkable
class Simulator(Scorer, Protocol):
    """A scorer that predicts per-token activations (``kind == "simulation"``)."""

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        """Predicted activation (0–10 scale) of every token of every window."""


def simulation_result(
    sim: Simulator,
    predictions: list[list[float]],
    windows: list[Window],
    details: dict[str, Any] | None = None,
    model: str | None = None,
    n_boot: int = 1000,
) -> ScoreResult:
    """A simulator's ``predictions`` scored against the windows' real activations: the pooled
    correlation with its bootstrap interval and per-domain figures; ``details`` (default: the
    method) are stored with it."""
    from explainer.score.correlation import score_simulation

    s = score_simulation(
        [list(w.activations) for w in windows], predictions, [w.domain for w in windows], n_boot=n_boot
    )
    if details is None:
        details = {"method": sim.method}
    # the per-window predictions, so exports (neuron-explainer's sequences) can show them
    details = {**details, "predictions": [[round(float(p), 4) for p in w] for w in predictions]}
    return ScoreResult(
        s.value,
        s.ci_low,
        s.ci_high,
        s.per_domain,
        s.n_tokens,
        sim.model_name if model is None else model,
        {"kind": "simulation", **details},
    )
