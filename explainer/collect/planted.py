"""Planted units: activations defined by a rule over the corpus text, with a known description.

They are ground truth for benchmarks: a scorer that cannot rank a planted unit's true
description above the other concepts' descriptions cannot be trusted on real units either.
Concepts are read from a YAML list of ``{name, description, match: {regex: ...}}`` or
``match: {words: [...]}``; a token is active (1.0) where it overlaps a match, else 0.0.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from explainer.errors import ConfigError
from store.records import Document, UnitRecord, UnitStats, Window

DEFAULT_CONCEPTS = Path(__file__).resolve().parents[2] / "bench" / "concepts.yaml"
CONTEXT_CONCEPTS = DEFAULT_CONCEPTS.with_name("concepts_context.yaml")
"""Planted concepts whose firing depends on the context around a token (regex lookarounds)."""


@dataclass(frozen=True)
class Concept:
    name: str
    description: str
    """The ground-truth explanation."""
    pattern: re.Pattern[str]


def load_concepts(path: str | Path | None = None) -> list[Concept]:
    """Read and validate a concepts file; errors name the entry at fault."""
    path = Path(path or DEFAULT_CONCEPTS)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read concepts file {path}: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a non-empty YAML list of concepts")
    concepts, seen = [], set()
    for i, item in enumerate(raw):
        where = f"{path} entry {i + 1}"
        if not isinstance(item, dict) or not {"name", "description", "match"} <= set(item):
            raise ConfigError(f"{where}: needs name, description and match")
        name, match = str(item["name"]), item["match"]
        if name in seen:
            raise ConfigError(f"{where}: duplicate concept name {name!r}")
        seen.add(name)
        if isinstance(match, dict) and "regex" in match:
            source = str(match["regex"])
        elif isinstance(match, dict) and isinstance(match.get("words"), list) and match["words"]:
            source = r"(?i)(?<!\w)(?:" + "|".join(re.escape(str(w)) for w in match["words"]) + r")(?!\w)"
        else:
            raise ConfigError(f"{where}: match needs a 'regex' string or a non-empty 'words' list")
        try:
            pattern = re.compile(source, re.MULTILINE)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regex {source!r}: {exc}") from exc
        concepts.append(Concept(name, str(item["description"]), pattern))
    return concepts


@dataclass(frozen=True)
class TokenizedWindow:
    doc_id: str
    domain: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    """Character span of each token in ``text``."""
    text: str


def tokenize_windows(
    docs: list[Document], tokenizer: Any, window: int = 32, max_windows: int = 2000
) -> list[TokenizedWindow]:
    """Cut documents into windows of ``window`` tokens, keeping each token's character span."""
    out: list[TokenizedWindow] = []
    for doc in docs:
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        for start in range(0, len(ids) - window + 1, window):
            lo, hi = offsets[start][0], offsets[start + window - 1][1]
            text = doc.text[lo:hi]
            spans = tuple((a - lo, b - lo) for a, b in offsets[start : start + window])
            tokens = tuple(text[a:b] if i == 0 else text[spans[i - 1][1] : b] for i, (a, b) in enumerate(spans))
            out.append(TokenizedWindow(doc.doc_id, doc.domain, tokens, spans, text))
            if len(out) >= max_windows:
                return out
    return out


def concept_activations(concept: Concept, win: TokenizedWindow) -> tuple[float, ...]:
    hits = [m.span() for m in concept.pattern.finditer(win.text) if m.end() > m.start()]
    return tuple(1.0 if any(a < me and ms < b for ms, me in hits) else 0.0 for a, b in win.spans)


def planted_record(
    concept: Concept,
    windows: list[TokenizedWindow],
    top_k: int = 12,
    n_random: int = 6,
    seed: int = 0,
    model: str = "planted",
) -> UnitRecord:
    """A unit record for ``concept`` built exactly like a collected one (top windows alternate
    explain/held-out by rank; random windows are held out)."""
    acts = [concept_activations(concept, w) for w in windows]
    order = sorted(range(len(windows)), key=lambda i: (-sum(acts[i]), i))
    top = [i for i in order if sum(acts[i]) > 0][:top_k]
    rng = random.Random(f"{seed}:{concept.name}")
    rand = rng.sample(range(len(windows)), min(n_random, len(windows)))
    out = [
        Window(
            f"top-{r}",
            "top",
            "explain" if r % 2 == 0 else "heldout",
            windows[i].doc_id,
            windows[i].domain,
            windows[i].tokens,
            acts[i],
        )
        for r, i in enumerate(top)
    ]
    out += [
        Window(f"random-{r}", "random", "heldout", windows[i].doc_id, windows[i].domain, windows[i].tokens, acts[i])
        for r, i in enumerate(rand)
    ]
    flat = [a for a_w in acts for a in a_w]
    mean = sum(flat) / len(flat) if flat else 0.0
    stats = UnitStats(
        max=1.0 if top else 0.0, mean=mean, std=(mean - mean * mean) ** 0.5, density=mean, n_tokens=len(flat)
    )
    return UnitRecord(f"{model}/planted/{concept.name}", model, "planted", 0, stats, tuple(out))
