"""A NUL byte in a unit id, a path or an id parameter is bad input (422), never a database error
(PostgreSQL refuses NUL in text and answered 500); in a search query it is read as a space."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app

KEYS = ApiConfig(read_keys=("read-key-1",), write_keys=("write-key-1",))
R = {"X-API-Key": "read-key-1"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/units/tiny%00/layers.1.mlp/0",
        "/api/v1/units/tiny/layers.1.mlp/0?collection_id=%00",
        "/api/v1/reports?unit_id=tiny/layers.1.mlp/0%00",
        "/api/v1/runs/ab%00",
    ],
)
def test_nul_bytes_are_422(settings, path):
    with TestClient(create_app(settings, KEYS)) as client:
        resp = client.get(path, headers=R)
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert body["code"] == "validation_error"


def test_a_nul_in_a_search_query_is_a_space(settings):
    with TestClient(create_app(settings, KEYS)) as client:
        resp = client.get("/api/v1/search?q=fake%00citations", headers=R)
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"] in ("fake citations", "fake\x00citations")


STEER = {"unit_id": "tiny/layers.1.mlp/0\x00", "prompt": "hello", "mode": "ablate"}


def test_a_nul_in_a_body_unit_id_is_422(settings):
    with TestClient(create_app(settings, KEYS)) as client:
        resp = client.post("/api/v1/steer", json=STEER, headers=R)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "validation_error"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/units/tiny%00/layers.1.mlp/0"),
        ("GET", "/api/v1/units/tiny/layers.1.mlp/0?collection_id=%00"),
        ("GET", "/api/v1/reports?unit_id=tiny/layers.1.mlp/0%00"),
        ("GET", "/api/v1/runs/ab%00"),
        ("POST", "/api/v1/steer"),
    ],
)
def test_nul_bytes_are_422_on_postgres(settings, postgres_url, monkeypatch, method, path):
    from explainer.settings import load_settings

    monkeypatch.setenv("EXPLAINER_DATABASE_URL", postgres_url)
    with TestClient(create_app(load_settings(), KEYS)) as client:
        resp = client.request(method, path, headers=R, json=STEER if method == "POST" else None)
    assert resp.status_code == 422, resp.text
