"""Scorer registry: every scorer the project ships, by the name stored with each score.

Two kinds of scorer, one registry:

- a **simulator** has ``simulate(explanation, windows) -> per-token predictions``; its score is
  the pooled correlation with the real activations (:func:`explainer.score.correlation.score_simulation`);
- a **window-level scorer** has ``score(explanation, windows) -> ScoreResult`` and computes its
  own figure (detection's balanced accuracy, the embedding scorer's AUROC).

Both have ``method`` (the stored scorer name) and ``model_name``. :func:`evaluate` scores an
explanation with either kind and is what ``pipeline.score_stage`` calls. Which scorers the
embedded default uses is decided by ``make bench-discrimination`` (see DEFAULT_SCORERS and the
README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from explainer.errors import ConfigError
from explainer.score.base import ScoreResult

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


def make_scorer(name: str, *, simulator_model: str = "smollm2-135m", device: str = "cpu",
                settings: Any = None) -> Any:
    """The scorer registered as ``name``. ``settings`` (default: read from the environment)
    configures the endpoint scorers; unknown names and unconfigured endpoints are ConfigErrors."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {', '.join(scorer_names())}")
    return _REGISTRY[name](simulator_model=simulator_model, device=device, settings=settings)


def evaluate(scorer: Any, explanation: str, windows: list[Any], n_boot: int = 1000) -> ScoreResult:
    """Score ``explanation`` on ``windows`` with a simulator or a window-level scorer."""
    if hasattr(scorer, "score"):
        return scorer.score(explanation, windows)
    from explainer.score.correlation import score_simulation

    pred = scorer.simulate(explanation, windows)
    s = score_simulation([list(w.activations) for w in windows], pred, [w.domain for w in windows], n_boot=n_boot)
    details = {"method": scorer.method, "kind": "simulation", **dict(getattr(scorer, "settings", {}) or {})}
    return ScoreResult(s.value, s.ci_low, s.ci_high, s.per_domain, s.n_tokens, scorer.model_name, details)


def _settings(settings: Any) -> Any:
    if settings is not None:
        return settings
    from explainer.settings import load_settings

    return load_settings()


@register("simulation-logits")
def _logits(simulator_model: str, device: str, settings: Any) -> Any:
    from explainer.llm.prompts import load_template
    from explainer.score.logits import LogitSimulator

    return LogitSimulator(load_template("simulate"), simulator_model, device)


_embedding_sims: dict[str, Any] = {}
EMBEDDING_CONTEXT_TOKENS = 4
EMBEDDING_CONTEXT_WEIGHT = 0.5
"""Token and context mixed half and half: the best pairs-correct and AUROC in the benchmark."""


@register("simulation-embedding")
def _embedding(simulator_model: str, device: str, settings: Any) -> Any:
    from explainer.score.embedding import EmbeddingSimulator

    # One per process, so its token-embedding cache is shared by every unit.
    if "default" not in _embedding_sims:
        _embedding_sims["default"] = EmbeddingSimulator(context_tokens=EMBEDDING_CONTEXT_TOKENS,
                                                         context_weight=EMBEDDING_CONTEXT_WEIGHT)
    return _embedding_sims["default"]


@register("simulation-endpoint")
def _endpoint(simulator_model: str, device: str, settings: Any) -> Any:
    from explainer.score.endpoint import endpoint_simulator

    return endpoint_simulator(_settings(settings))


@register("detection")
def _detection(simulator_model: str, device: str, settings: Any) -> Any:
    """Remote when a simulator endpoint is configured, else the local model's yes/no logits."""
    from explainer.score.detection import LocalDetector, RemoteDetector

    s = _settings(settings)
    if s.simulator_base_url:
        from explainer.score.endpoint import client_for

        return RemoteDetector(client_for(s.simulator_base_url, s.simulator_api_key, s.llm_timeout_s),
                              s.simulator_model)
    return LocalDetector(simulator_model, device)


@register("embedding")
def _window_embedding(simulator_model: str, device: str, settings: Any) -> Any:
    from explainer.score.embedding import EmbeddingScorer

    if "window" not in _embedding_sims:
        _embedding_sims["window"] = EmbeddingScorer()
    return _embedding_sims["window"]


def measured_discrimination() -> dict[str, dict[str, float]]:
    """scorer name → {auroc, pairs_correct, mean_gap, n_concepts} from the last benchmark run."""
    try:
        return json.loads(DISCRIMINATION_FILE.read_text())["scorers"]
    except (OSError, ValueError, KeyError):
        return {}
