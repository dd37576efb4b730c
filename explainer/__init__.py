"""activation-explainer: say in plain words what units inside a language model do, and how far to trust it.

The public API, one name per concept, in data-flow order (collect → explain → score → index → search →
report). Every name below is importable from ``explainer`` directly; the modules that define them are
loaded on first use, so ``import explainer`` stays cheap (no torch, no model) and importing one stage
never drags in the others. (Names equal to a stage folder — ``search``, ``report`` — are left out:
the folder would shadow them.)

::

    from explainer import load_settings, CollectConfig, collect_stage, LabelOptions, explain_stage

``tests/test_public_api.py`` checks that every name resolves and that this list and ``__all__`` agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # configuration and errors
    "Settings": "explainer.settings",
    "load_settings": "explainer.settings",
    "ExplainerError": "explainer.errors",
    "InputError": "explainer.errors",
    "ConfigError": "explainer.errors",
    "LLMError": "explainer.errors",
    # records that flow through every stage
    "Document": "store.records",
    "Window": "store.records",
    "UnitStats": "store.records",
    "UnitRecord": "store.records",
    "Explanation": "store.records",
    "Score": "store.records",
    "Calibration": "store.records",
    "make_unit_id": "store.records",
    "parse_unit_id": "store.records",
    # collect
    "CollectConfig": "explainer.collect.collector",
    "load_model": "explainer.collect.models",
    # score
    "Scorer": "explainer.score.base",
    "Simulator": "explainer.score.base",
    "UnitScorer": "explainer.score.base",
    "ScoreResult": "explainer.score.base",
    "make_scorer": "explainer.score.registry",
    "scorer_names": "explainer.score.registry",
    # the pipeline stages (what the CLI and the Celery tasks call)
    "LabelOptions": "explainer.pipeline.options",
    "collect_stage": "explainer.pipeline.collection",
    "explain_stage": "explainer.pipeline.stages",
    "score_stage": "explainer.pipeline.stages",
    "index_stage": "explainer.search.index",
    # search and reports
    "SearchFilters": "explainer.search.hybrid",
    "search_page": "explainer.search.hybrid",
    "write_report": "explainer.report.render",
}

__all__ = [
    "Calibration",
    "CollectConfig",
    "ConfigError",
    "Document",
    "ExplainerError",
    "Explanation",
    "InputError",
    "LLMError",
    "LabelOptions",
    "Score",
    "ScoreResult",
    "Scorer",
    "SearchFilters",
    "Settings",
    "Simulator",
    "UnitRecord",
    "UnitScorer",
    "UnitStats",
    "Window",
    "collect_stage",
    "explain_stage",
    "index_stage",
    "load_model",
    "load_settings",
    "make_scorer",
    "make_unit_id",
    "parse_unit_id",
    "score_stage",
    "scorer_names",
    "search_page",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'explainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - names for type checkers and IDEs
    from explainer.collect.collector import CollectConfig
    from explainer.collect.models import load_model
    from explainer.errors import ConfigError, ExplainerError, InputError, LLMError
    from explainer.pipeline.collection import collect_stage
    from explainer.pipeline.options import LabelOptions
    from explainer.pipeline.stages import explain_stage, score_stage
    from explainer.report.render import write_report
    from explainer.score.base import Scorer, ScoreResult, Simulator, UnitScorer
    from explainer.score.registry import make_scorer, scorer_names
    from explainer.search.hybrid import SearchFilters, search_page
    from explainer.search.index import index_stage
    from explainer.settings import Settings, load_settings
    from store.records import (
        Calibration,
        Document,
        Explanation,
        Score,
        UnitRecord,
        UnitStats,
        Window,
        make_unit_id,
        parse_unit_id,
    )
