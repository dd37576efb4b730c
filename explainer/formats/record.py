"""The portable record: one explanation of one unit with its scores, as every format can carry it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FORMATS = ("neuron-explainer", "neuronpedia", "delphi")
"""The formats ``explainer export`` writes and ``explainer import`` reads."""


@dataclass(frozen=True)
class PortableScore:
    """One score of an explanation as a file carries it."""

    name: str
    """What the score is: our scorer's name on export; the file's own type name on import
    (``ev_correlation_score``, a Neuronpedia ``explanationScoreTypeName``, a delphi scorer folder)."""
    value: float
    model: str | None = None
    """The model behind the score, when known."""
    examples: tuple[dict[str, Any], ...] = ()
    """Per held-out window results in delphi's score-file form (``str_tokens``, ``activations``,
    ``distance``, ``activating``, ``prediction``, ``probability``, ``correct``), when known."""


@dataclass(frozen=True)
class Sequence:
    """One held-out sequence with its true and simulated activations (neuron-explainer keeps them)."""

    tokens: tuple[str, ...]
    true: tuple[float, ...]
    """Raw activations."""
    predicted: tuple[float, ...]
    """Simulated activations (0–10 scale), one per token."""


@dataclass(frozen=True)
class PortableExplanation:
    """An explanation of one unit, independent of any store or format."""

    index: int
    """The unit's index in its layer (neuron, feature or latent index)."""
    text: str
    layer: int | None
    """The block number, when the format or the hookpoint gives one."""
    model: str | None = None
    """The subject model, when the format names it (neuron-explainer does not)."""
    hookpoint: str | None = None
    """Our hookpoint name (``layers.1.mlp``…), when the record came from this project."""
    module: str | None = None
    """The format's own name for the layer (a Neuronpedia source like ``6-res-jb``, a delphi module)."""
    explainer_model: str | None = None
    explanation_type: str | None = None
    """Neuronpedia's ``typeName``."""
    scores: tuple[PortableScore, ...] = ()
    sequences: tuple[Sequence, ...] = ()
    source_file: str | None = None


def layer_of(name: str | None) -> int | None:
    """The block number in a hookpoint, module or Neuronpedia source name (``layers.6.mlp``,
    ``model.layers.6``, ``6-res-jb``), or ``None``."""
    if not name:
        return None
    m = re.search(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)", name) or re.match(r"(\d+)(?:-|$)", name)
    return int(m.group(1)) if m else None


SITES = {"res": "residual stream", "mlp": "MLP", "att": "attention"}


def site_of(name: str | None) -> str | None:
    """Which part of a block a hookpoint, module or Neuronpedia source is in: ``res`` (the residual
    stream: ``layers.6``, ``6-res-jb``, ``blocks.6.hook_resid_post``), ``mlp`` (``layers.6.mlp``,
    ``6-mlp-out``) or ``att`` (``layers.6.self_attn``, ``6-att-kk``); ``None`` when the name does not
    say (an SAE's own hookpoint name, another module)."""
    if not name:
        return None
    m = re.match(r"\d+-([a-z]+)", name)
    if m:
        part = m.group(1)
    else:
        m = re.search(r"(?:^|\.)(?:layers|h|blocks)\.\d+(?:\.([A-Za-z_]+))?(?:[.-]|$)", name)
        if not m:
            return None
        part = m.group(1) or "resid"
    if part.startswith("res") or "resid" in part:
        return "res"
    if "mlp" in part:
        return "mlp"
    if part.startswith("att") or "attn" in part:
        return "att"
    return None


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model: equal up to case and a leading path or hub owner."""

    def norm(x: str) -> str:
        return x.strip().rstrip("/").rsplit("/", 1)[-1].lower()

    return norm(a) == norm(b)
