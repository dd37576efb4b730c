"""Scorer registry: every simulator the project ships, by the name stored with each score.

A simulator has ``method`` (the stored scorer name), ``model_name`` and
``simulate(explanation, windows) -> per-token predictions``. Which ones the embedded default
uses is decided by ``make bench-discrimination`` (see DEFAULT_SCORERS and the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

_REGISTRY: dict[str, Callable[..., Any]] = {}

DISCRIMINATION_FILE = Path(__file__).resolve().parent / "scorer_discrimination.json"
"""Measured discrimination per scorer, written by ``make bench-discrimination``."""

DEFAULT_SCORERS: tuple[str, ...] = ("simulation-embedding",)
"""Scorers of the embedded default, chosen by the discrimination benchmark: the local LLM
simulator (SmolLM2-135M) ranks right and wrong explanations no better than chance there."""


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ConfigError(f"scorer {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory
    return deco


def scorer_names() -> list[str]:
    return sorted(_REGISTRY)


def make_scorer(name: str, *, simulator_model: str = "smollm2-135m", device: str = "cpu") -> Any:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {', '.join(scorer_names())}")
    return _REGISTRY[name](simulator_model=simulator_model, device=device)


@register("simulation-logits")
def _logits(simulator_model: str, device: str) -> Any:
    from .prompts import load_template
    from .simulate import LogitSimulator

    return LogitSimulator(load_template("simulate"), simulator_model, device)


_embedding_sims: dict[str, Any] = {}
EMBEDDING_CONTEXT_TOKENS = 4
EMBEDDING_CONTEXT_WEIGHT = 0.5
"""Token and context mixed half and half: the best pairs-correct and AUROC in the benchmark."""


@register("simulation-embedding")
def _embedding(simulator_model: str, device: str) -> Any:
    from .embed_sim import EmbeddingSimulator

    # One per process, so its token-embedding cache is shared by every unit.
    if "default" not in _embedding_sims:
        _embedding_sims["default"] = EmbeddingSimulator(context_tokens=EMBEDDING_CONTEXT_TOKENS,
                                                         context_weight=EMBEDDING_CONTEXT_WEIGHT)
    return _embedding_sims["default"]


def measured_discrimination() -> dict[str, dict[str, float]]:
    """scorer name → {auroc, pairs_correct, mean_gap, n_concepts} from the last benchmark run."""
    try:
        return json.loads(DISCRIMINATION_FILE.read_text())["scorers"]
    except (OSError, ValueError, KeyError):
        return {}
