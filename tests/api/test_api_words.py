"""The API and the web page say what a score means, mark the no-LLM baseline, name directions,
carry the report's warnings and say when a search has no good match — as the CLI does."""

from __future__ import annotations

import dataclasses
import json

import pytest
from builders.search import Unit, _toks, unit, write_units
from fastapi.testclient import TestClient
from sqlalchemy import text

from explainer.api.app import ApiConfig, create_app
from explainer.runtime import get_store
from explainer.score.meaning import WORDS, discrimination_words
from explainer.score.registry import measured_discrimination

KEY = "words-read-key"
H = {"X-API-Key": KEY}


@pytest.fixture
def client(searchable):
    with TestClient(create_app(searchable, ApiConfig(read_keys=(KEY,)))) as c:
        yield c


def _mark_baseline(settings, unit_id):
    store = get_store(settings)
    e = store.explanations_for([unit_id])[0]
    with store.engine.begin() as conn:
        conn.execute(
            text("update explanations set settings = :s where id = :i"),
            {"s": json.dumps({"selected": "baseline"}), "i": e.id},
        )


def test_hits_say_what_the_score_means_and_where_the_explanation_came_from(client):
    hit = client.get("/api/v1/search", params={"q": "fake journal references", "limit": 1}, headers=H).json()["hits"][0]
    assert hit["unit_id"] == unit(0).unit_id and hit["match"] == "good"
    assert hit["score"]["meaning"] == WORDS["good"]  # 0.62, interval [0.52, 0.72]
    scorer = hit["score"]["scorer"]
    assert hit["score"]["scorer_discrimination"] == discrimination_words(measured_discrimination().get(scorer))
    assert hit["explanation_source"] == "llm" and hit["unit_name"] is None and hit["intervention_score"] is None
    weak = client.get("/api/v1/search", params={"q": "zqxv wobbly pterodactyl", "limit": 3}, headers=H).json()
    assert weak["hits"] and {h["match"] for h in weak["hits"]} == {"weak"}


def test_baseline_explanations_and_direction_names_reach_the_api(settings):
    happy = Unit(
        "tiny", "directions", 0, "joy, delight and cheerful words", 0.5, _toks("a happy day", {"happy"}), "docs"
    )
    write_units(settings, [dataclasses.replace(happy, name="happy")])
    _mark_baseline(settings, happy.unit_id)
    with TestClient(create_app(settings, ApiConfig(read_keys=(KEY,)))) as client:
        hit = client.get("/api/v1/search", params={"q": "cheerful words", "limit": 1}, headers=H).json()["hits"][0]
        assert hit["explanation_source"] == "baseline" and hit["unit_name"] == "happy"
        u = client.get(f"/api/v1/units/{happy.unit_id}", headers=H).json()
    assert u["name"] == "happy" and u["explanations"][0]["source"] == "baseline"


def test_the_unit_page_carries_warnings_and_meanings(client):
    u = client.get(f"/api/v1/units/{unit(0).unit_id}", headers=H).json()
    [score] = u["explanations"][0]["scores"]
    assert score["meaning"] == {"level": "good", "words": WORDS["good"]}
    codes = {w["code"] for w in u["warnings"]}
    assert "few_activating_windows" in codes  # the builders' units hold two activating windows
    assert all(w["message"] for w in u["warnings"])
    low = client.get(f"/api/v1/units/{unit(5).unit_id}", headers=H).json()  # 0.12 [0.02, 0.22]
    assert low["explanations"][0]["scores"][0]["meaning"]["level"] == "weak"
    assert "low_score" in {w["code"] for w in low["warnings"]}
    failed = client.get(f"/api/v1/units/{unit(10).unit_id}", headers=H).json()
    assert failed["explanations"][0]["source"] is None
