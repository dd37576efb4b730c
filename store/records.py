"""Domain records that flow through every stage: collect → explain → simulate → score → index.

All records are frozen dataclasses. Activations are stored *raw* (the unit's own scale);
the 0–10 scale shown to LLMs is derived with :func:`scale_0_10` from the unit's maximum.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

WindowKind = Literal["top", "quantile", "random"]
WindowSplit = Literal["explain", "heldout"]


def make_unit_id(model: str, hookpoint: str, index: int) -> str:
    """Stable, human-readable unit id: ``{model}/{hookpoint}/{index}``."""
    return f"{model}/{hookpoint}/{index}"


def parse_unit_id(unit_id: str) -> tuple[str, str, int]:
    """Inverse of :func:`make_unit_id`; raises ``ValueError`` on a malformed id."""
    model, hookpoint, index = unit_id.rsplit("/", 2)
    return model, hookpoint, int(index)


def key_id(*parts: Any) -> str:
    """Deterministic row id from the parts of a natural key."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def make_explanation_id(unit_id: str, collection_id: str, explainer_model: str, prompt_hash: str) -> str:
    """The one place an explanation id is made: its natural key is (unit, collection, explainer
    model, prompt hash), so explaining the same unit the same way twice upserts one row."""
    return key_id(unit_id, collection_id, explainer_model, prompt_hash)


def make_score_id(explanation_id: str, scorer: str) -> str:
    """Id of a score: one per (explanation, scorer)."""
    return key_id(explanation_id, scorer)


def make_unit_row_id(collection_id: str, unit_id: str) -> str:
    """Id of a unit's row in one collection (the same unit collected twice has two rows)."""
    return key_id(collection_id, unit_id)


@dataclass(frozen=True)
class Document:
    """One corpus document."""

    doc_id: str
    """Stable id, e.g. ``code:json/decoder.py``."""
    domain: str
    """Domain tag (``code``, ``docs``, ``legal`` or the user's own)."""
    text: str


@dataclass(frozen=True)
class Window:
    """A run of consecutive tokens from one document, with the unit's activation on each."""

    window_id: str
    """Unique within a unit, e.g. ``top-3`` or ``random-1``; explanations cite these."""
    kind: WindowKind
    """``top``: among the unit's most activating windows; ``quantile``: an activating window drawn
    from one stratum of the unit's activating windows sorted by max; ``random``: drawn uniformly."""
    split: WindowSplit
    """``explain``: shown to the explainer; ``heldout``: kept for scoring only."""
    doc_id: str
    domain: str
    tokens: tuple[str, ...]
    """Decoded token strings (leading spaces kept)."""
    activations: tuple[float, ...]
    """Raw activation per token, same length as ``tokens``."""
    quantile: int | None = None
    """For ``quantile`` windows: the stratum, 0 (weakest) … n-1 (strongest); ``None`` otherwise."""

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0


@dataclass(frozen=True)
class UnitStats:
    """Summary statistics of one unit over the whole collected corpus (raw units)."""

    max: float
    mean: float
    std: float
    density: float
    """Share of tokens where the activation is > 0."""
    n_tokens: int
    quantiles: tuple[float, ...] = ()
    """Boundaries (raw units) between equal-count strata of the activating sequences' max
    activations, lowest first, as quantile windows are drawn; read from the histogram (within a bin)."""
    histogram: tuple[int, ...] = ()
    """Number of activating sequences (max > 0) per bin of their max activation, for bins
    ``histogram_edges[i]…[i+1]``."""
    histogram_edges: tuple[float, ...] = ()
    """Bin edges (raw units): each octave 2**e…2**(e+1) split into four equal-width bins; one more
    edge than ``histogram`` bins."""


@dataclass(frozen=True)
class UnitRecord:
    """Everything collection keeps about one unit."""

    unit_id: str
    model: str
    hookpoint: str
    index: int
    stats: UnitStats
    windows: tuple[Window, ...] = field(default_factory=tuple)
    name: str | None = None
    """A human name when the unit has one (a direction's name); ``None`` for neurons and features."""
    skip_reason: str | None = None
    """Why labeling skips this unit (dead or ultra-rare), or ``None`` for a live unit."""

    @property
    def live(self) -> bool:
        """Has evidence and is not skipped: labeling considers only live units."""
        return bool(self.windows) and self.skip_reason is None

    def windows_for(self, split: WindowSplit, kind: WindowKind | None = None) -> list[Window]:
        return [w for w in self.windows if w.split == split and (kind is None or w.kind == kind)]

    def to_blob(self) -> bytes:
        """Compact binary form for the SQL store (zlib-compressed JSON)."""
        return zlib.compress(json.dumps(asdict(self), separators=(",", ":")).encode(), 6)

    @classmethod
    def from_blob(cls, blob: bytes) -> UnitRecord:
        d = json.loads(zlib.decompress(blob))
        windows = tuple(
            Window(**{**w, "tokens": tuple(w["tokens"]), "activations": tuple(w["activations"])})
            for w in d.pop("windows")
        )
        stats: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["stats"].items()}
        return cls(**{**d, "stats": UnitStats(**stats), "windows": windows})


ExplanationStatus = Literal["ok", "failed"]


@dataclass(frozen=True)
class Explanation:
    """One explanation of a unit as stored: a text, or a failure with its reason."""

    id: str
    """:func:`make_explanation_id` of the natural key below."""
    unit_id: str
    collection_id: str
    """The collection whose windows the explainer was shown."""
    explainer_model: str
    prompt_name: str
    prompt_version: str
    prompt_hash: str
    """sha256 of the prompt template."""
    status: str
    """``ok`` or ``failed``."""
    text: str | None
    """The explanation; ``None`` unless ``status`` is ``ok``."""
    error: str | None
    """Why explaining failed; ``None`` when it did not."""
    created_at: datetime
    """UTC time the row was (last) written."""
    window_ids: tuple[str, ...] = ()
    """Ids of the windows shown to the explainer."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The explainer's settings as recorded (sampling, candidates, the ``selected`` one)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    indexed_at: datetime | None = None
    """UTC time it was last written to the vector index; ``None`` if it never was."""

    @property
    def prompt(self) -> str:
        """``name@version#hash8``."""
        return f"{self.prompt_name}@{self.prompt_version}#{self.prompt_hash[:8]}"

    @property
    def source(self) -> str | None:
        """Which candidate was kept: ``llm-0``… or ``baseline``; ``None`` when not recorded."""
        selected = self.settings.get("selected")
        return selected if isinstance(selected, str) else None

    @property
    def imported(self) -> ImportedFrom | None:
        """Where an imported explanation came from (``explainer import``); ``None`` for our own."""
        d = self.settings.get("imported")
        return ImportedFrom.from_dict(d) if isinstance(d, dict) else None


@dataclass(frozen=True)
class ImportedFrom:
    """Provenance of an explanation made by another tool and imported (kept in the explanation's
    ``settings["imported"]``)."""

    tool: str
    """``neuron-explainer``, ``neuronpedia`` or ``delphi``."""
    explainer_model: str | None = None
    """The model that wrote the explanation, as the file names it (``None``: the format does not say)."""
    score: float | None = None
    """The score the file gave it (``None``: none, or not finite)."""
    score_type: str | None = None
    """What that score is, as the file names it (e.g. ``ev_correlation_score``, a Neuronpedia score
    type name, a delphi scorer); it is also stored as a score row named ``{tool}:{score_type}``."""
    score_model: str | None = None
    """The model behind the original score, when the file says."""
    explanation_type: str | None = None
    """Neuronpedia's ``typeName`` (how the explanation was made); ``None`` elsewhere."""
    file: str | None = None
    """The file it was read from."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImportedFrom:
        fields = ("explainer_model", "score", "score_type", "score_model", "explanation_type", "file")
        return cls(tool=str(d.get("tool")), **{k: d.get(k) for k in fields})


@dataclass(frozen=True)
class Score:
    """One score of an explanation by one scorer (or a failure with its reason)."""

    scorer: str
    """The scoring method, e.g. ``simulation-embedding``."""
    value: float | None
    """The scorer's figure: pooled Pearson correlation over the held-out tokens (raw activations)
    for simulation scorers, balanced accuracy or AUROC for window-level ones; ``None`` if it failed."""
    ci_low: float | None
    """Lower end of the bootstrap 95% interval."""
    ci_high: float | None
    """Upper end of the bootstrap 95% interval."""
    per_domain: dict[str, float] = field(default_factory=dict)
    """The same figure restricted to held-out windows of one corpus domain."""
    status: str = "ok"
    """``ok`` or ``failed``."""
    error: str | None = None
    simulator_model: str | None = None
    """The model that predicted activations (an LLM, or the embedding model)."""
    n_tokens: int | None = None
    """Held-out tokens scored."""
    heldout_ids: tuple[str, ...] = ()
    """Ids of the held-out windows scored."""
    created_at: datetime | None = None
    """UTC time the score was stored."""
    details: dict[str, Any] = field(default_factory=dict)
    """How the score was computed, as the scorer recorded it."""
    explanation_id: str | None = None
    """The explanation scored (``None`` only for scores not yet stored)."""


@dataclass(frozen=True)
class Calibration:
    """An explanation re-scored on a user's own corpus (``explainer calibrate``)."""

    domain: str
    """Workflow domain name."""
    score: Score
    corpus: str | None = None
    corpus_hash: str | None = None
    collection_id: str | None = None
    """The calibration collection (the user's corpus)."""


def scale_0_10(activations: list[float] | tuple[float, ...], max_activation: float) -> list[int]:
    """Map raw activations to integers 0–10 relative to ``max_activation`` (negatives → 0)."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [max(0, min(10, int(round(10 * a / max_activation)))) for a in activations]


def finite(x: float | None) -> float | None:
    """``x`` as a float, or ``None`` when it is missing, not a number or not finite (JSON has no NaN)."""
    return float(x) if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None


def highlight(window: Window, unit_max: float, threshold: float = 0.4) -> str:
    """Window text with strongly activating tokens in «guillemets» (for terminals and JSON)."""
    out = []
    for tok, a in zip(window.tokens, window.activations):
        strong = unit_max > 0 and a >= threshold * unit_max and tok.strip()
        out.append(f"{tok[: len(tok) - len(tok.lstrip())]}«{tok.strip()}»" if strong else tok)
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class ExplanationDetail:
    """An explanation with its unit's record and its scores: what a page of search hits shows."""

    explanation: Explanation
    record: UnitRecord | None
    """``None`` when the unit's row is gone (the index lags behind SQL)."""
    scores: tuple[Score, ...] = ()
