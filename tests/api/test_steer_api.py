"""``POST /api/v1/steer`` on a stored unit of the tiny LLaMA: the result, and each refusal with the
status its OpenAPI entry documents."""

from __future__ import annotations

import pytest
from builders.intervene import collect_tiny
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app

KEY = {"X-API-Key": "read-key"}


@pytest.fixture
def steer(settings, tiny_model_dir, tmp_path):
    unit = collect_tiny(settings, tiny_model_dir, tmp_path)[1][0]
    with TestClient(create_app(settings, ApiConfig(read_keys=("read-key",))), headers=KEY) as client:
        yield client, unit


def test_steer_route(steer):
    client, unit = steer
    r = client.post(
        "/api/v1/steer",
        json={"unit_id": unit, "prompt": "def total(xs):", "mode": "add", "strength": 30, "new_tokens": 3},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit_id"] == unit and body["strength"] == 30 and body["kl"] > 0 and len(body["risen"]) == 10
    ablated = client.post(
        "/api/v1/steer", json={"unit_id": unit, "prompt": "x = 1", "mode": "ablate", "ablate_to": "mean"}
    ).json()
    assert ablated["strength"] is None and ablated["ablate_to"] == "mean"
    spec = client.get("/openapi.json").json()["paths"]["/api/v1/steer"]["post"]["responses"]
    assert {"200", "401", "404", "422"} <= set(spec)


def test_steer_route_refusals(steer):
    client, unit = steer
    nokey = client.post(
        "/api/v1/steer", json={"unit_id": unit, "prompt": "hi", "mode": "add"}, headers={"X-API-Key": "nope"}
    )
    assert nokey.status_code == 401
    r = client.post(
        "/api/v1/steer", json={"unit_id": "tiny-llama/layers.2.mlp/99999", "prompt": "hi", "mode": "add", "strength": 1}
    )
    assert r.status_code == 404 and "unknown unit" in r.json()["error"]["message"]
    for bad in (
        {"prompt": "   ", "mode": "add", "strength": 1},
        {"prompt": "hi", "mode": "add", "strength": 1e9},
        {"prompt": "hi", "mode": "clamp"},
        {"prompt": "hi", "mode": "ablate", "strength": 1},
        {"prompt": "hi", "mode": "explode", "strength": 1},
    ):
        r = client.post("/api/v1/steer", json={"unit_id": unit, **bad})
        assert r.status_code == 422, (bad, r.text)
    r = client.post(
        "/api/v1/steer",
        content=b'{"unit_id": "%s", "prompt": "hi", "mode": "add", "strength": NaN}' % unit.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
