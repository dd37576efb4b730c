"""Scorer registry: every scorer the project ships, by the name stored with each score.

Every scorer implements :class:`explainer.score.base.Scorer` (``method``, ``model_name``,
``kind`` and ``score(explanation, windows) -> ScoreResult``); simulators (``kind ==
"simulation"``) also have ``simulate`` (:class:`~explainer.score.base.Simulator`).
:func:`evaluate` is what ``pipeline.score_stage`` calls. Which scorers the embedded default uses
is decided by ``make bench-discrimination`` (see DEFAULT_SCORERS and the README).

A leaf: the concrete scorers are imported inside their factories, never at module level.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

from explainer.errors import ConfigError
from explainer.score.base import Scorer, ScoreResult, Simulator, UnitScorer

if TYPE_CHECKING:
    from explainer.score.contextual import ContextualSimulator
    from explainer.score.embedding import EmbeddingScorer, EmbeddingSimulator
    from explainer.score.intervention import InterventionConfig
    from explainer.score.trained import TrainedSimulator
    from explainer.settings import Settings
    from store.records import Window

ScorerFactory = Callable[[str, str, "Settings | None"], Scorer]
"""(simulator_model, device, settings) → scorer."""

_REGISTRY: dict[str, ScorerFactory] = {}

DISCRIMINATION_FILE = Path(__file__).resolve().parent / "scorer_discrimination.json"
"""Measured discrimination per scorer, written by ``make bench-discrimination``."""

DEFAULT_SCORERS: tuple[str, ...] = ("simulation-context",)
"""Scorers of the embedded default, chosen by the discrimination benchmark: the best AUROC on the
union of the token-level and contextual planted sets (``simulation-embedding`` is behind on
contextual concepts; the local LLM simulator, SmolLM2-135M, is at chance)."""


def register(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    def deco(factory: ScorerFactory) -> ScorerFactory:
        if name in _REGISTRY:
            raise ConfigError(f"scorer {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def scorer_names() -> list[str]:
    return sorted(_REGISTRY)


def make_scorer(
    name: str, *, simulator_model: str = "smollm2-135m", device: str = "cpu", settings: Settings | None = None
) -> Scorer:
    """The scorer registered as ``name``. ``settings`` configure the endpoint scorers (the
    simulator endpoint); unknown names, and endpoint scorers without settings or an endpoint,
    are ConfigErrors."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {', '.join(scorer_names())}")
    return _REGISTRY[name](simulator_model, device, settings)


def make_simulator(
    name: str, *, simulator_model: str = "smollm2-135m", device: str = "cpu", settings: Settings | None = None
) -> Simulator:
    """The scorer registered as ``name``, which must be a simulator (``kind == "simulation"``)."""
    scorer = make_scorer(name, simulator_model=simulator_model, device=device, settings=settings)
    if scorer.kind != "simulation":
        raise ConfigError(f"scorer {name!r} is not a simulator (it scores whole windows)")
    return cast(Simulator, scorer)


def evaluate(scorer: Scorer, explanation: str, windows: list[Window], unit_id: str | None = None) -> ScoreResult:
    """Score ``explanation`` on ``windows`` with any scorer (simulator or window-level); the
    intervention scorers steer the unit ``unit_id`` instead."""
    if unit_id is not None and isinstance(scorer, UnitScorer):
        return scorer.score_unit(explanation, unit_id)
    return scorer.score(explanation, windows)


def _need(settings: Settings | None, name: str) -> Settings:
    if settings is None:
        raise ConfigError(f"the {name} scorer needs settings (the simulator endpoint)")
    return settings


@register("simulation-logits")
def _logits(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.llm.prompts import load_template
    from explainer.score.logits import LogitSimulator

    return LogitSimulator(load_template("simulate"), simulator_model, device)


_embedding_sims: dict[str, EmbeddingSimulator | EmbeddingScorer | ContextualSimulator | TrainedSimulator] = {}
EMBEDDING_CONTEXT_TOKENS = 4
EMBEDDING_CONTEXT_WEIGHT = 0.5
"""Token and context mixed half and half: the best pairs-correct and AUROC in the benchmark."""


@register("simulation-embedding")
def _embedding(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.score.embedding import EmbeddingSimulator

    # One per process, so its token-embedding cache is shared by every unit.
    if "default" not in _embedding_sims:
        _embedding_sims["default"] = EmbeddingSimulator(
            context_tokens=EMBEDDING_CONTEXT_TOKENS, context_weight=EMBEDDING_CONTEXT_WEIGHT
        )
    return _embedding_sims["default"]


@register("simulation-context")
def _context(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.score.contextual import ContextualSimulator

    # One per process, so its span-embedding cache is shared by every unit.
    if "context" not in _embedding_sims:
        _embedding_sims["context"] = ContextualSimulator()
    return _embedding_sims["context"]


@register("simulation-trained")
def _trained(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    """The head trained on generated planted concepts (explainer/score/weights/), over the same
    span embeddings as ``simulation-context``: it shares that scorer's cache."""
    from explainer.score.contextual import ContextualSimulator
    from explainer.score.trained import TrainedSimulator

    if "trained" not in _embedding_sims:
        context = _embedding_sims.get("context")
        if not isinstance(context, ContextualSimulator):
            context = _embedding_sims["context"] = ContextualSimulator()
        _embedding_sims["trained"] = TrainedSimulator(vectors=context)
    return _embedding_sims["trained"]


@register("simulation-endpoint")
def _endpoint(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.score.endpoint import endpoint_simulator

    return endpoint_simulator(_need(settings, "simulation-endpoint"))


@register("detection")
def _detection(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    """Remote when a simulator endpoint is configured, else the local model's yes/no logits."""
    from explainer.score.detection import LocalDetector, RemoteDetector

    if settings is not None and settings.simulator_base_url:
        from explainer.llm.transport import openai_client

        return RemoteDetector(
            openai_client(settings.simulator_base_url, settings.simulator_api_key, settings.llm_timeout_s),
            settings.simulator_model,
        )
    return LocalDetector(simulator_model, device)


@register("embedding")
def _window_embedding(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.score.embedding import EmbeddingScorer

    if "window" not in _embedding_sims:
        _embedding_sims["window"] = EmbeddingScorer()
    return _embedding_sims["window"]


INTERVENTION_TOLERANCE = 0.1
"""The bisection accepts a mean KL within this fraction of the target."""


def intervention_config(settings: Settings) -> InterventionConfig:
    """The intervention scorers' configuration from ``settings`` (``EXPLAINER_INTERVENTION_*``, or the
    flags that replaced them), each value checked again: a :class:`ConfigError` names the variable."""
    from explainer.score.intervention import InterventionConfig
    from explainer.settings import INTERVENTION_ENV, check_intervention

    v = {f: check_intervention(f, getattr(settings, f), env) for f, env in INTERVENTION_ENV.items()}
    target = float(v["intervention_target_kl"])
    return InterventionConfig(
        target_kl=target,
        tolerance=INTERVENTION_TOLERANCE * target,
        n_prompts=int(v["intervention_prompts_n"]),
        new_tokens=int(v["intervention_new_tokens"]),
        prompts_file=str(v["intervention_prompts"]),
    )


def _intervention(variant: str, name: str, simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    from explainer.intervene.service import load_unit
    from explainer.score.intervention import InterventionScorer

    settings = _need(settings, name)
    config = intervention_config(settings)
    embedder = None
    if variant == "embedding":
        from explainer.score.embedding import EmbeddingScorer

        if "window" not in _embedding_sims:
            _embedding_sims["window"] = EmbeddingScorer()
        embedder = getattr(_embedding_sims["window"], "embedder", None)
    remote = None
    if variant == "endpoint":
        from explainer.score.endpoint import endpoint_simulator

        remote = endpoint_simulator(settings)  # EXPLAINER_SIMULATOR_*: a clear error when unset
    return InterventionScorer(
        lambda unit_id: load_unit(settings, unit_id),
        variant,  # type: ignore[arg-type]
        judge_model=simulator_model,
        device=device,
        config=config,
        embedder=embedder,
        remote=remote,
    )


@register("intervention")
def _intervention_logprob(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    """Steer the unit to a target KL on neutral prompts; log P(explanation | steered vs clean text)."""
    return _intervention("logprob", "intervention", simulator_model, device, settings)


@register("intervention-embedding")
def _intervention_embedding(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    """As ``intervention``, with sentence-embedding similarity instead of the judge's log-probability."""
    return _intervention("embedding", "intervention-embedding", simulator_model, device, settings)


@register("intervention-endpoint")
def _intervention_endpoint(simulator_model: str, device: str, settings: Settings | None) -> Scorer:
    """As ``intervention``, with log P(explanation | text) from an OpenAI-compatible endpoint
    (``EXPLAINER_SIMULATOR_*``; ``/v1/completions`` with echoed prompt logprobs, as vLLM serves)."""
    return _intervention("endpoint", "intervention-endpoint", simulator_model, device, settings)


InterventionScorerName = Literal["intervention", "intervention-embedding", "intervention-endpoint"]
"""The intervention scorers, by name (the search filter and the HTTP API take one of them)."""
SUBJECT_MODEL_SCORERS = frozenset(get_args(InterventionScorerName))
"""Scorers that steer the subject model: their score tasks go to the ``collect`` queue, where the
subject model lives, not to the LLM workers."""


def measured_discrimination() -> dict[str, dict[str, float]]:
    """scorer name → {auroc, pairs_correct, mean_gap, n_concepts} from the last benchmark run."""
    try:
        return json.loads(DISCRIMINATION_FILE.read_text())["scorers"]
    except (OSError, ValueError, KeyError):
        return {}
