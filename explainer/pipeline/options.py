"""How units are explained and scored: the options of a labeling run, carried in task payloads."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from explainer.errors import ConfigError
from explainer.llm.chat import LLMConfig
from explainer.score.registry import DEFAULT_SCORERS
from explainer.settings import INTERVENTION_ENV, Settings, check_intervention


@dataclass(frozen=True)
class LabelOptions:
    """How units are explained and scored; travels in task payloads (no secrets)."""

    explainer: LLMConfig = field(default_factory=LLMConfig)
    explain_prompt: str = "explain"
    simulate_prompt: str = "simulate"
    simulator_model: str = "smollm2-135m"
    """Local model for the ``simulation-logits`` scorer."""
    scorers: tuple[str, ...] = DEFAULT_SCORERS
    """Scorers stored for each explanation; the first one ranks search results."""
    best_of: int = 1
    """LLM answers per unit (the first greedy, the others sampled); the best is kept."""
    baseline_candidate: bool = False
    """Also consider the no-LLM baseline explanation as a candidate."""
    selection_scorer: str = DEFAULT_SCORERS[0]
    """Cheap scorer that ranks candidates on the windows the explainer saw: the shipped default scorer,
    which ``make bench-discrimination`` chose for telling right from wrong explanations best."""
    cascade_scorer: str | None = None
    """Expensive scorer spent only on the ``cascade_top`` best-ranked candidates."""
    cascade_top: int = 2
    retry_failed: bool = False
    intervention: tuple[tuple[str, Any], ...] = ()
    """``(settings field, value)`` pairs that replace the intervention scorers' settings for this run
    (the ``--intervention-*`` flags of the command that started it); they travel with the tasks, so
    workers steer with the run's target KL and prompts, whatever their own environment says."""

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        if not self.intervention:  # absent when unused: a run's key without these flags is unchanged
            payload.pop("intervention")
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> LabelOptions:
        return cls(
            **{
                **payload,
                "explainer": LLMConfig(**payload["explainer"]),
                "scorers": tuple(payload["scorers"]),
                "intervention": tuple(_intervention_setting(str(k), v) for k, v in payload.get("intervention", ())),
            }
        )

    def scorer_settings(self, settings: Settings) -> Settings:
        """``settings`` with this run's intervention settings in place (the scorers are built from them)."""
        return dataclasses.replace(settings, **dict(self.intervention)) if self.intervention else settings


def _intervention_setting(field_name: str, value: Any) -> tuple[str, Any]:
    """One ``(settings field, value)`` pair of a task's options, checked: only the intervention
    scorers' settings may travel with a run, never another setting (a data folder, secrets)."""
    if field_name not in INTERVENTION_ENV:
        raise ConfigError(f"a run's options name {field_name!r}, which is not an intervention setting")
    return field_name, check_intervention(field_name, value, f"the run's {field_name}")
