"""Interventions on the subject model: steer, scale, clamp or ablate any unit (MLP neuron, SAE or
transcoder feature, direction), one or several at once, through the hookpoints collection reads,
and measure what that does to the output (next-token KL, token changes, continuations)."""

from explainer.intervene.effects import (
    Calibrated,
    SteerResult,
    TokenChange,
    bisect_strength,
    generate,
    mean_kl,
    next_token_logprobs,
    steer,
)
from explainer.intervene.hooks import MAX_STRENGTH, MODES, Edit, apply_edits, check_strength, intervene
from explainer.intervene.units import UnitSource, UnitTarget, parse_unit, resolve_unit, unit_source

__all__ = [
    "Calibrated",
    "Edit",
    "MAX_STRENGTH",
    "MODES",
    "SteerResult",
    "TokenChange",
    "UnitSource",
    "UnitTarget",
    "apply_edits",
    "bisect_strength",
    "check_strength",
    "generate",
    "intervene",
    "mean_kl",
    "next_token_logprobs",
    "parse_unit",
    "resolve_unit",
    "steer",
    "unit_source",
]
