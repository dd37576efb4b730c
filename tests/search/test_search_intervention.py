"""The intervention-score filter of search: explanations without an ok intervention score never
pass it; hits show the input-side (simulation) and output-side (intervention) scores side by side,
in the library and through the HTTP API."""

from __future__ import annotations

import math

import pytest
from builders.search import UNITS, write_units
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app
from explainer.errors import InputError
from explainer.runtime import get_store
from explainer.search.hybrid import SearchFilters, search

KEY = {"X-API-Key": "k"}


def test_min_intervention_filters_and_hits_show_both_sides(settings):
    eids = write_units(settings)
    scored = [u for u in UNITS if u.explanation and u.score is not None][:3]
    store = get_store(settings)
    for u, value in zip(scored, (1.5, 0.0, -0.7)):
        store.save_score(
            explanation_id=eids[u.unit_id],
            scorer="intervention",
            simulator_model="judge",
            status="ok",
            value=value,
            details={"kind": "intervention"},
        )
    query = "Python function definitions"
    everything = search(settings, query, SearchFilters(), limit=50)
    shown = {h["unit_id"]: h["intervention_score"] for h in everything}
    assert shown[scored[0].unit_id] == 1.5 and shown[scored[1].unit_id] == 0.0
    assert all(v is None for uid, v in shown.items() if uid not in {u.unit_id for u in scored})
    passed = {h["unit_id"] for h in search(settings, query, SearchFilters(min_intervention=0.0), limit=50)}
    assert passed == {scored[0].unit_id, scored[1].unit_id} & set(shown)
    assert {h["unit_id"] for h in search(settings, query, SearchFilters(min_intervention=1.0), limit=50)} == {
        scored[0].unit_id
    } & set(shown)
    with pytest.raises(InputError, match="min-intervention"):
        search(settings, query, SearchFilters(min_intervention=math.nan))

    with TestClient(create_app(settings, ApiConfig(read_keys=("k",)))) as client:
        resp = client.get("/api/v1/search", params={"q": query, "min_intervention": 1.0, "limit": 50}, headers=KEY)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert {h["unit_id"] for h in page["hits"]} == {scored[0].unit_id} & set(shown)
        assert page["filters"]["min_intervention"] == 1.0
        assert all(h["intervention_score"] >= 1.0 for h in page["hits"])
        for bad in ("nan", "inf", "-inf"):
            params = {"q": query, "min_intervention": bad}
            assert client.get("/api/v1/search", params=params, headers=KEY).status_code == 422
