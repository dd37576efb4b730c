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


def _score_three(settings, scorer: str, judge: str, values: tuple[float, ...]):
    """The searchable units written, and the first three scored ones given an ok ``scorer`` score
    each of ``values``; (those units, explanation id by unit id)."""
    eids = write_units(settings)
    scored = [u for u in UNITS if u.explanation and u.score is not None][: len(values)]
    store = get_store(settings)
    for u, value in zip(scored, values):
        store.save_score(
            explanation_id=eids[u.unit_id],
            scorer=scorer,
            simulator_model=judge,
            status="ok",
            value=value,
            details={"kind": "intervention"},
        )
    return scored, eids


def test_min_intervention_filters_and_hits_show_both_sides(settings):
    scored, _ = _score_three(settings, "intervention", "judge", (1.5, 0.0, -0.7))
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


def test_the_filter_reads_the_intervention_scorer_it_is_told(settings, capsys):
    """An index scored only by `intervention-embedding` (cosine scale) gets nothing from the default
    filter, which reads `intervention`; named, that scorer is the one filtered on and shown, and hits
    say which scorer their intervention score came from. Unknown or non-intervention scorers are one
    line (422 over HTTP)."""
    from explainer.score.registry import SUBJECT_MODEL_SCORERS
    from workers.cli import main

    scored, eids = _score_three(settings, "intervention-embedding", "all-MiniLM-L6-v2", (0.4, 0.05, -0.2))
    store = get_store(settings)
    # the first also has a log-probability score, far off the cosine scale: never mixed in
    store.save_score(
        explanation_id=eids[scored[0].unit_id],
        scorer="intervention",
        simulator_model="judge",
        status="ok",
        value=-3.0,
        details={"kind": "intervention"},
    )
    query = "Python function definitions"
    everything = search(settings, query, SearchFilters(), limit=50)
    assert {u.unit_id for u in scored} <= {h["unit_id"] for h in everything}
    shown = {h["unit_id"]: (h["intervention_score"], h["intervention_scorer"]) for h in everything}
    assert shown[scored[0].unit_id] == (-3.0, "intervention")  # `intervention` first when none is named
    assert shown[scored[1].unit_id] == (0.05, "intervention-embedding")
    assert all(v == (None, None) for uid, v in shown.items() if uid not in {u.unit_id for u in scored})

    assert {h["unit_id"] for h in search(settings, query, SearchFilters(min_intervention=0.0), limit=50)} == set()
    embedding = SearchFilters(min_intervention=0.0, intervention_scorer="intervention-embedding")
    hits = search(settings, query, embedding, limit=50)
    assert {h["unit_id"] for h in hits} == {scored[0].unit_id, scored[1].unit_id}
    assert {(h["intervention_score"], h["intervention_scorer"]) for h in hits} <= {
        (0.4, "intervention-embedding"),
        (0.05, "intervention-embedding"),
    }
    for bad in ("simulation-context", "intervention-nope", ""):
        with pytest.raises(InputError, match="intervention-scorer must be one of"):
            search(settings, query, SearchFilters(min_intervention=0.0, intervention_scorer=bad))

    argv = ["search", query, "--limit", "50", "--min-intervention", "0.1"]
    assert main([*argv, "--intervention-scorer", "intervention-embedding"]) == 0
    out = capsys.readouterr().out
    assert "intervention-embedding=+0.400" in out
    assert scored[1].unit_id not in out and scored[2].unit_id not in out
    assert main([*argv, "--intervention-scorer", "detection"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: intervention-scorer must be one of") and "\n" not in err

    with TestClient(create_app(settings, ApiConfig(read_keys=("k",)))) as client:
        params = {"q": query, "min_intervention": 0.0, "intervention_scorer": "intervention-embedding", "limit": 50}
        resp = client.get("/api/v1/search", params=params, headers=KEY)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert page["filters"]["intervention_scorer"] == "intervention-embedding"
        assert {h["unit_id"] for h in page["hits"]} == {scored[0].unit_id, scored[1].unit_id}
        assert all(h["intervention_scorer"] == "intervention-embedding" for h in page["hits"])
        for bad in ("simulation-context", "max"):
            assert (
                client.get("/api/v1/search", params={**params, "intervention_scorer": bad}, headers=KEY).status_code
                == 422
            )
        spec = client.get("/openapi.json").json()
        (param,) = [
            p for p in spec["paths"]["/api/v1/search"]["get"]["parameters"] if p["name"] == "intervention_scorer"
        ]
        assert set(param["schema"]["anyOf"][0]["enum"]) == SUBJECT_MODEL_SCORERS
