"""``POST /api/v1/monitor`` with a probe fitted on the tiny LLaMA: scores, and each refusal with the
status its OpenAPI entry documents."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app
from explainer.audit.probefile import write_probe

KEY = {"X-API-Key": "read-key"}


def _probe(model_source: str) -> dict:
    """A probe on two neurons of the tiny model's layer 1, calibrated on domain 'alpha'."""
    cal = {"threshold": 0.0, "calibration": {"a": 1.0, "b": 0.0}, "n": 10, "fail_rate": 0.5, "tpr": 1.0, "fpr": 0.0}
    return {
        "format": "explainer-probe",
        "version": 1,
        "model": "tiny-llama",
        "model_source": model_source,
        "hookpoint": "layers.1.mlp",
        "statistic": "contribution",
        "units_total": 128,
        "units": [
            {"id": "tiny-llama/layers.1.mlp/3", "index": 3, "weight": 1.5, "mean": 0.01, "scale": 0.01},
            {"id": "tiny-llama/layers.1.mlp/7", "index": 7, "weight": -0.5, "mean": 0.01, "scale": 0.01},
        ],
        "intercept": 0.1,
        "C": 1.0,
        "domains": {"alpha": cal},
        "pooled": cal,
        "provenance": {},
    }


@pytest.fixture
def client(settings, tiny_model_dir):
    (settings.data_dir / "probes").mkdir(parents=True, exist_ok=True)
    write_probe(settings.data_dir / "probes" / "planted.json", _probe(str(tiny_model_dir)))
    (settings.data_dir / "probes" / "broken.json").write_text(json.dumps({"format": "explainer-probe"}))
    with TestClient(create_app(settings, ApiConfig(read_keys=("read-key",))), headers=KEY) as c:
        yield c


ITEM = {"prompt": "Name an animal:", "response": " zebra", "domain": "alpha"}


def test_monitor_route_scores_pairs(client):
    r = client.post("/api/v1/monitor", json={"probe": "planted", "items": [ITEM, {**ITEM, "response": " table"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-llama" and body["hookpoint"] == "layers.1.mlp" and len(body["results"]) == 2
    for x in body["results"]:
        assert x["calibrated"] and 0 < x["p_fail"] < 1
        assert x["p_fail"] == pytest.approx(1 / (1 + np.exp(-x["logit"])), abs=1e-4)
        assert x["flagged"] == (x["logit"] >= 0.0)
    assert body["results"][0]["logit"] != body["results"][1]["logit"]
    spec = client.get("/openapi.json").json()["paths"]["/api/v1/monitor"]["post"]["responses"]
    assert {"200", "401", "403", "404", "422"} <= set(spec)


def test_monitor_route_refusals(client):
    r = client.post("/api/v1/monitor", json={"probe": "planted", "items": [ITEM]}, headers={"X-API-Key": "no"})
    assert r.status_code == 401
    assert client.post("/api/v1/monitor", json={"probe": "absent", "items": [ITEM]}).status_code == 404
    r = client.post("/api/v1/monitor", json={"probe": "planted", "items": [{**ITEM, "domain": "beta"}]})
    assert r.status_code == 422 and "not calibrated on domain 'beta'" in r.json()["error"]["message"]
    r = client.post(
        "/api/v1/monitor", json={"probe": "planted", "items": [{**ITEM, "domain": "beta"}], "allow_uncalibrated": True}
    )
    assert r.status_code == 200 and r.json()["results"][0]["calibrated"] is False
    r = client.post("/api/v1/monitor", json={"probe": "broken", "items": [ITEM]})
    assert r.status_code == 422 and "unsupported probe version" in r.json()["error"]["message"]
    for bad in (
        {"probe": "../etc/passwd", "items": [ITEM]},
        {"probe": "planted", "items": []},
        {"probe": "planted", "items": [{**ITEM, "response": "  "}]},
        {"probe": "planted", "items": [{**ITEM, "answer_span": [3, 99]}]},
        {"probe": "planted", "items": [ITEM] * 33},
    ):
        r = client.post("/api/v1/monitor", json=bad)
        assert r.status_code == 422, (bad, r.text)
