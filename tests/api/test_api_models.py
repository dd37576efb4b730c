"""The API's score and explanation views take their stored fields from the record dataclasses."""

import dataclasses
import typing

import pytest

from explainer.api import models as m
from store.records import Explanation, Score

VIEW_ONLY = {
    "Score": {"value", "ci95", "per_domain", "meaning", "scorer_discrimination"},
    "ScoreView": {"ci95", "per_domain", "discrimination", "meaning"},
    "ExplanationView": {"prompt", "scores", "source"},
}
"""What each view computes instead of copying: ``ci95`` from ``ci_low``/``ci_high``, finite-only
``per_domain``, the ``prompt`` label, the nested scores, the scorer's measured discrimination, what
a score means in words, which candidate an explanation is (and a search hit's ``value`` is never null)."""


@pytest.mark.parametrize("name", sorted(VIEW_ONLY))
def test_views_share_their_fields_with_the_records(name):
    model = getattr(m, name)
    record, shared = m.DERIVED[name]
    hints = typing.get_type_hints(record)
    assert set(model.model_fields) == set(shared) | VIEW_ONLY[name]
    for f in shared:
        assert model.model_fields[f].annotation == hints[f], f


def test_views_derive_from_the_one_record_of_their_concept():
    assert m.DERIVED["Score"][0] is Score and m.DERIVED["ScoreView"][0] is Score
    assert m.DERIVED["ExplanationView"][0] is Explanation
    names = {f.name for f in dataclasses.fields(Explanation)}
    assert set(m.DERIVED["ExplanationView"][1]) <= names


def test_a_view_of_a_missing_field_is_refused():
    with pytest.raises(TypeError, match="has no fields"):
        m.derived("Bad", Score, ("nope",))
