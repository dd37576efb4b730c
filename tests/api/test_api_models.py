"""The API's unit, window, statistics, search hit, score and explanation views take their stored
fields from the record dataclasses."""

import dataclasses
import typing

import pytest

from explainer.api import derive
from explainer.api import models as m
from explainer.api.derive import From, derived, finite_type
from store.records import Explanation, Score, UnitRecord, UnitStats, Window

VIEW_ONLY = {
    "Score": {"value", "ci95", "per_domain", "meaning", "scorer_discrimination"},
    "ScoreView": {"ci95", "per_domain", "discrimination", "meaning"},
    "ExplanationView": {"prompt", "scores", "source"},
    "Stats": set(),
    "FullStats": set(),
    "WindowView": {"max", "levels"},
    "UnitDetail": {
        "layer",
        "source",
        "collection_id",
        "stats",
        "histogram",
        "output_side",
        "steering_effect",
        "warnings",
        "explanations",
        "windows",
    },
    "Hit": {
        "rank",
        "explanation",
        "explanation_source",
        "match",
        "model",
        "hookpoint",
        "layer",
        "source",
        "score",
        "intervention_score",
        "intervention_scorer",
        "similarity",
        "semantic_rank",
        "keyword_rank",
        "rrf",
        "stats",
        "top_example",
        "top_example_tokens",
    },
}
"""What each view computes instead of copying: ``ci95`` from ``ci_low``/``ci_high``, finite-only
``per_domain``, the ``prompt`` label, the nested scores, the scorer's measured discrimination, what
a score means in words, which candidate an explanation is (and a search hit's ``value`` is never null);
a window's max and 0–10 levels; a unit's layer and source (parsed from its hookpoint), its collection,
the views of its stats and windows, its histogram, output side, steering effect, warnings and
explanations; a search hit's ranking, its score, its ok text, and the unit's model and hookpoint
(parsed from its id: the unit's row may be gone)."""

RECORD = {
    "Score": Score,
    "ScoreView": Score,
    "ExplanationView": Explanation,
    "Stats": UnitStats,
    "FullStats": UnitStats,
    "WindowView": Window,
    "UnitDetail": UnitRecord,
    "Hit": Explanation,
}
"""The one record of each view's concept."""

FINITE = {
    float: float | None,
    tuple[float, ...]: tuple[float | None, ...],
}
"""A finite-only field's type for its record type (the view writes null for NaN and infinities)."""


def test_every_derived_view_is_checked():
    assert set(m.DERIVED) == set(VIEW_ONLY)


@pytest.mark.parametrize("name", sorted(VIEW_ONLY))
def test_views_share_their_fields_with_the_records(name):
    model = getattr(m, name)
    derivation = m.DERIVED[name]
    assert derivation.record is RECORD[name]
    assert set(model.model_fields) == set(derivation.taken) | VIEW_ONLY[name]
    assert not set(derivation.taken) & VIEW_ONLY[name]
    for api, src in derivation.taken.items():
        assert src.field in {f.name for f in dataclasses.fields(src.record)}, api
        hint = typing.get_type_hints(src.record)[src.field]
        assert model.model_fields[api].annotation == (FINITE[hint] if src.finite else hint), api


def test_views_derive_from_the_one_record_of_their_concept():
    assert m.DERIVED["Hit"].taken["unit_name"].record is UnitRecord
    assert m.DERIVED["Hit"].taken["explanation_id"].field == "id"
    assert m.DERIVED["WindowView"].taken["id"].field == "window_id"
    assert {"max", "mean", "density"} <= set(m.DERIVED["Stats"].taken)
    assert {"max", "mean", "std", "density", "n_tokens"} <= set(m.DERIVED["FullStats"].taken)


def test_a_view_of_a_missing_field_is_refused():
    with pytest.raises(TypeError, match="has no fields"):
        derived("Bad", Score, ("nope",))
    with pytest.raises(TypeError, match="UnitRecord has no fields"):
        derived("Bad", Explanation, (From("nope", record=UnitRecord),))


def test_a_field_retyped_in_the_record_retypes_the_view(monkeypatch):
    monkeypatch.setattr(derive, "DERIVED", {})

    @dataclasses.dataclass(frozen=True)
    class Before:
        n: int
        x: float

    @dataclasses.dataclass(frozen=True)
    class After:
        n: str
        x: tuple[float, ...]

    before = derived("RetypeBefore", Before, ("n", From("x", finite=True)))
    after = derived("RetypeAfter", After, ("n", From("x", finite=True)))
    assert before.model_json_schema()["properties"]["n"]["type"] == "integer"
    assert after.model_json_schema()["properties"]["n"]["type"] == "string"
    assert after.model_validate({"n": "a", "x": [1.0, None]}).x == (1.0, None)


def test_finite_type_makes_each_float_nullable():
    assert finite_type(float) == float | None
    assert finite_type(float | None) == float | None
    assert finite_type(tuple[float, ...]) == tuple[float | None, ...]
    assert finite_type(int) is int
