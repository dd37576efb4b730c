"""Searchable test data without any LLM: units, explanations and scores written through the SQL
store and indexed with ``pipeline.index_stage`` (real MiniLM embeddings, real Chroma directory).

Imported by the search, API, web and report tests; the ``searchable`` fixture (conftest) writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from explainer.pipeline.stages import index_stage
from explainer.runtime import get_store
from store.keyword import SEARCH_SCORER
from store.records import UnitRecord, UnitStats, Window
from store.sql import key_id

SCORER = SEARCH_SCORER


@dataclass(frozen=True)
class Unit:
    model: str
    hookpoint: str
    index: int
    explanation: str | None
    """``None``: the explanation failed."""
    score: float | None
    top: tuple[tuple[str, float], ...]
    """Tokens and raw activations of the top window shown to the explainer."""
    domain: str
    name: str | None = None
    """A direction's name (``--directions`` with names)."""

    @property
    def unit_id(self) -> str:
        return f"{self.model}/{self.hookpoint}/{self.index}"


def _toks(text: str, hot: set[str]) -> tuple[tuple[str, float], ...]:
    words = text.split(" ")
    toks = [words[0]] + [" " + w for w in words[1:]]
    return tuple((t, 4.0 if t.strip() in hot else 0.1 * (i % 3)) for i, t in enumerate(toks))


UNITS = (
    Unit(
        "tiny",
        "layers.1.mlp",
        0,
        "fabricated academic citations and fake references to journal papers",
        0.62,
        _toks("as shown by Smith et al. ( 2019 ) in Nature", {"et", "al."}),
        "docs",
    ),
    Unit(
        "tiny",
        "layers.1.mlp",
        1,
        "Python function definitions right after the def keyword",
        0.55,
        _toks("def parse_args ( argv ) :", {"parse_args"}),
        "code",
    ),
    Unit(
        "tiny",
        "layers.1.mlp",
        2,
        "warranty disclaimers and limitation of liability in software licenses",
        0.48,
        _toks("PROVIDED AS IS WITHOUT WARRANTY OF ANY KIND", {"WARRANTY"}),
        "legal",
    ),
    Unit(
        "tiny",
        "layers.2.mlp",
        3,
        "closing parentheses and brackets at the end of function calls",
        0.31,
        _toks("print ( len ( x ) )", {")"}),
        "code",
    ),
    Unit(
        "tiny",
        "layers.2.mlp",
        4,
        "years and dates in copyright notices",
        0.40,
        _toks("Copyright ( c ) 2001 - 2024 Python Software Foundation", {"2001", "2024"}),
        "legal",
    ),
    Unit(
        "tiny",
        "layers.2.mlp",
        5,
        "rain, snow and other weather words",
        0.12,
        _toks("heavy rain and snow expected tomorrow", {"rain", "snow"}),
        "docs",
    ),
    Unit(
        "tiny",
        "layers.2",
        6,
        "French words and accented letters like é and à",
        0.22,
        _toks("le café est à côté", {"café", "côté"}),
        "docs",
    ),
    Unit(
        "tiny",
        "layers.2",
        7,
        "URLs and email addresses",
        0.35,
        _toks("see https://example.org or mail admin@example.org", {"https://example.org"}),
        "docs",
    ),
    Unit(
        "other",
        "layers.1.mlp",
        8,
        "the import statement at the start of Python lines",
        0.50,
        _toks("import os", {"import"}),
        "code",
    ),
    Unit(
        "tiny",
        "layers.1.mlp",
        9,
        "negation words such as not, never and no",
        None,
        _toks("this is not what we never said", {"not", "never"}),
        "docs",
    ),
    Unit("tiny", "layers.1.mlp", 10, None, None, _toks("x y z", {"y"}), "code"),
    Unit(
        "tiny",
        "layers.3.mlp",
        11,
        "the rare word xylophone in music lessons",
        0.20,
        _toks("she played the xylophone", {"xylophone"}),
        "docs",
    ),
)


def record_of(u: Unit) -> UnitRecord:
    toks, acts = zip(*u.top)
    windows = (
        Window("top-0", "top", "explain", f"{u.domain}:a", u.domain, toks, acts),
        Window("top-1", "top", "heldout", f"{u.domain}:b", u.domain, toks, tuple(a * 0.9 for a in acts)),
        Window("random-0", "random", "heldout", "code:r", "code", ("a", " b", " c"), (0.0, 0.05, -0.1)),
        Window("random-1", "random", "heldout", "legal:r", "legal", ("d", " e"), (0.2, 0.0)),
    )
    return UnitRecord(
        u.unit_id,
        u.model,
        u.hookpoint,
        u.index,
        UnitStats(max=4.0, mean=0.2, std=0.6, density=0.3, n_tokens=1000),
        windows,
        name=u.name,
    )


def collection_id(u: Unit) -> str:
    return key_id("test", u.model, u.hookpoint)


def write_units(settings, units=UNITS, index: bool = True) -> dict[str, str]:
    """Write ``units`` (records, explanations, scores) to the SQL store and index the ok ones;
    returns unit id → explanation id."""
    store = get_store(settings)
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(collection_id(u), []).append(u)
    for cid, us in groups.items():
        store.start_collection(cid, us[0].model, us[0].hookpoint, "test", "0" * 64, {"window": 8})
        store.finish_collection(cid, [record_of(u) for u in us], 1000)
    out = {}
    for u in units:
        common = dict(
            unit_id=u.unit_id,
            collection_id=collection_id(u),
            explainer_model="fake-llm",
            prompt_name="explain",
            prompt_version="1",
            prompt_hash="a" * 64,
        )
        if u.explanation is None:
            eid = store.save_explanation(status="failed", error="ParseError: garbled", **common)
        else:
            eid = store.save_explanation(status="ok", text=u.explanation, window_ids=["top-0"], **common)
            if u.score is not None:
                store.save_score(
                    explanation_id=eid,
                    scorer=SCORER,
                    simulator_model="fake",
                    status="ok",
                    value=u.score,
                    ci_low=u.score - 0.1,
                    ci_high=u.score + 0.1,
                    per_domain={u.domain: u.score + 0.05},
                    n_tokens=40,
                )
        if index:
            index_stage(settings, eid)
        out[u.unit_id] = eid
    return out


def unit(index: int) -> Unit:
    return next(u for u in UNITS if u.index == index)
