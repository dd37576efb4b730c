"""Reports through the real store, CLI and HTTP API: every format, every way of choosing units,
provenance, calibrations, bad input, and no secrets in any output."""

from __future__ import annotations

import json

import pytest
from builders.report import pdf_pages, validate_report
from builders.search import SCORER, collection_id, unit, write_units
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app
from explainer.runtime import get_store
from explainer.settings import load_settings
from workers.cli import main

MARKER = "sk-test-SECRET-marker-0123456789"
READ = "reader-SECRET-marker-key"
U0, U2 = unit(0).unit_id, unit(2).unit_id
CONFIG = {
    "window": 8,
    "units": None,
    "provenance": {
        "model": {
            "name": "tiny",
            "given": "/models/tiny",
            "revision": None,
            "files": [{"name": "model.safetensors", "sha256": "f" * 64, "bytes": 123}],
        },
        "hookpoint": "layers.1.mlp",
        "sae": None,
        "directions": None,
        "software_version": "0.1.0",
    },
}


@pytest.fixture
def reported(settings, monkeypatch):
    """The searchable units, their collection's config with provenance, an explanation whose
    settings and error carry secrets (as a careless writer might store them), and a calibration."""
    monkeypatch.setenv("EXPLAINER_LLM_API_KEY", MARKER)
    monkeypatch.setenv("EXPLAINER_API_READ_KEYS", f"{READ},other-reader-key")
    monkeypatch.setenv("EXPLAINER_API_WRITE_KEYS", "writer-SECRET-marker")
    eids = write_units(settings)
    store = get_store(settings)
    u = unit(0)
    cid = collection_id(u)
    from sqlalchemy import update

    from store.schema import collections

    with store.engine.begin() as conn:
        conn.execute(update(collections).where(collections.c.id == cid).values(config=json.dumps(CONFIG)))
    store.save_explanation(
        unit_id=U0,
        collection_id=cid,
        explainer_model="remote-llm",
        prompt_name="explain",
        prompt_version="2",
        prompt_hash="b" * 64,
        status="failed",
        error=f"HTTP 401: bad key {MARKER} at https://bob:{MARKER}@llm.example/v1",
        settings={
            "model": "remote-llm",
            "api_key": MARKER,
            "base_url": f"https://bob:{MARKER}@llm.example/v1?key={MARKER}",
            "candidates": [{"source": "llm-0", "error": f"401 {MARKER}", "raw": MARKER}],
        },
    )
    store.start_collection("cal1", "tiny", "layers.1.mlp", "tickets.txt", "c" * 16, {"window": 8})
    store.finish_collection("cal1", [], 500)
    store.save_calibration(
        explanation_id=eids[U0],
        scorer=SCORER,  # the scorer the builders store (the search scorer)
        collection_id="cal1",
        domain="support-tickets",
        simulator_model="all-MiniLM-L6-v2",
        status="ok",
        value=0.05,
        ci_low=-0.1,
        ci_high=0.2,
        per_domain={"tickets": 0.05},
        n_tokens=64,
    )
    return load_settings()  # what an entry point reads now: with the secret values set above


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


@pytest.mark.parametrize("fmt", ["html", "md", "json", "pdf"])
def test_cli_report_every_format_without_secrets(reported, tmp_path, capsys, fmt):
    path = tmp_path / f"r.{fmt}"
    code, out, err = _run(capsys, "report", "--units", U0, U2, "-o", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == fmt and json.loads(out)["units"] == 2
    data = path.read_bytes()
    text = "\n".join(pdf_pages(data)[1]) if fmt == "pdf" else data.decode("utf-8")
    for secret in (MARKER, READ, "other-reader-key", "writer-SECRET-marker", "bob:"):
        assert secret not in text and secret.encode() not in data
    assert U0 in text and U2 in text and "fabricated academic citations" in text
    assert "support-tickets" in text
    if fmt == "json":
        report = json.loads(data)
        validate_report(report)
        u0 = report["units"][0]
        assert [x["status"] for x in u0["explanations"]] == ["ok", "failed"]
        prov = u0["explanations"][0]["provenance"]
        assert prov["subject_model"]["files"][0]["sha256"] == "f" * 64
        assert prov["corpus"] == {"id": "test", "hash": "0" * 64, "n_tokens": 1000}
        assert prov["prompt"] == {"name": "explain", "version": "1", "sha256": "a" * 64}
        assert prov["windows"]["shown"] == ["top-0"] and prov["simulators"][0]["model"] == "fake"
        failed = u0["explanations"][1]
        assert failed["provenance"]["explainer"]["settings"]["base_url"] == "https://llm.example/v1"
        assert "api_key" not in failed["provenance"]["explainer"]["settings"]
        assert "[redacted]" in failed["error"]
        [wd] = u0["explanations"][0]["workflow_domains"]
        assert (wd["domain"], wd["corpus"], wd["value"]) == ("support-tickets", "tickets.txt", 0.05)
        assert any(w["code"] == "domain_drop" and "support-tickets" in w["message"] for w in u0["warnings"])


def test_report_by_query_with_filters_and_an_empty_one(reported, tmp_path, capsys):
    path = tmp_path / "q.json"
    code, out, err = _run(capsys, "report", "--query", "fake journal references", "--layer", "1", "-o", str(path))
    assert code == 0, err
    report = json.loads(path.read_text())
    validate_report(report)
    assert report["selection"]["kind"] == "query" and report["selection"]["filters"] == {"layer": 1}
    assert report["units"][0]["unit_id"] == U0
    assert all("/layers.1.mlp/" in u["unit_id"] for u in report["units"])
    code, out, err = _run(
        capsys,
        "report",
        "--query",
        "citations",
        "--model",
        "nomodel",
        "--format",
        "md",
        "-o",
        str(tmp_path / "empty.md"),
        "--json",
    )
    assert code == 0 and json.loads(out)["units"] == 0
    assert "No units: the query 'citations' matched no explanation with these filters: model=nomodel" in (
        tmp_path / "empty.md"
    ).read_text().replace("\\", "")
    code, _, err = _run(capsys, "report", "--layer", "1", "-o", str(tmp_path / "x.html"))
    assert code == 2 and "filter a --query" in err


def test_report_by_run(reported, tmp_path, capsys):
    cid = collection_id(unit(0))
    path = tmp_path / "run.json"
    code, _, err = _run(capsys, "report", "--run", cid, "-o", str(path))
    assert code == 0, err
    report = json.loads(path.read_text())
    validate_report(report)
    assert report["selection"] == {"kind": "run", "run": cid, "run_kind": "collection", "collection_id": cid}
    ids = {u["unit_id"] for u in report["units"]}
    assert U0 in ids and all(u.startswith("tiny/layers.1.mlp/") for u in ids)
    code, _, err = _run(capsys, "report", "--run", "nosuchrun", "-o", str(path))
    assert code == 2 and "unknown run or collection id 'nosuchrun'" in err


def test_unknown_units_are_all_listed(reported, tmp_path, capsys):
    code, _, err = _run(capsys, "report", "--units", U0, "tiny/layers.9.mlp/1", "x/y/2", "-o", str(tmp_path / "r.md"))
    assert code == 2 and "unknown unit id(s): tiny/layers.9.mlp/1, x/y/2" in err
    assert not (tmp_path / "r.md").exists()


def test_http_reports_in_every_format(reported):
    keys = ApiConfig(read_keys=(READ,))
    with TestClient(create_app(reported, keys)) as client:
        h = {"X-API-Key": READ}
        types = {"html": "text/html", "md": "text/markdown", "json": "application/json", "pdf": "application/pdf"}
        for fmt, ctype in types.items():
            resp = client.get("/api/v1/reports", params={"unit_id": U0, "format": fmt}, headers=h)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith(ctype)
            assert MARKER.encode() not in resp.content and READ.encode() not in resp.content
        report = client.get("/api/v1/reports", params={"unit_id": U0, "format": "json"}, headers=h).json()
        validate_report(report)
        assert report["generator"]["via"] == "explainer HTTP API"
        pages, texts = pdf_pages(
            client.get("/api/v1/reports", params={"unit_id": U0, "format": "pdf"}, headers=h).content
        )
        assert U0 in "\n".join(texts)
        empty = client.get(
            "/api/v1/reports/search", params={"q": "citations", "model": "nomodel", "format": "json"}, headers=h
        ).json()
        validate_report(empty)
        assert empty["units"] == [] and "matched no explanation" in empty["note"]
        hits = client.get(
            "/api/v1/reports/search", params={"q": "fake journal references", "format": "json"}, headers=h
        ).json()
        assert hits["units"][0]["unit_id"] == U0
        run = client.get(f"/api/v1/reports/runs/{collection_id(unit(0))}", params={"format": "md"}, headers=h)
        assert run.status_code == 200 and U0 in run.text
        missing = client.get("/api/v1/reports/runs/nosuchrun", headers=h)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        unknown = client.get("/api/v1/reports", params={"unit_id": "x/y/1", "format": "pdf"}, headers=h)
        assert unknown.status_code == 404 and "x/y/1" in unknown.json()["error"]["message"]
        assert client.get("/api/v1/reports", params={"unit_id": U0, "format": "pdf"}).status_code == 401


def test_report_of_a_labeling_run_uses_the_runs_explanations(reported, tmp_path, capsys):
    from store.sql import now, run_units, runs

    store = get_store(reported)
    cid = collection_id(unit(0))
    primary = {e.unit_id: e.id for e in store.explanations_for([U0], cid) if e.status == "failed"}
    with store.engine.begin() as conn:
        conn.execute(
            runs.insert().values(
                id="run-1",
                collection_id=cid,
                options="{}",
                explainer_model="remote-llm",
                simulator='["simulation-embedding"]',
                n_units=1,
                status="done",
                created_at=now(),
            )
        )
        conn.execute(run_units.insert().values(run_id="run-1", unit_id=U0, explanation_id=primary[U0]))
    path = tmp_path / "run.json"
    code, _, err = _run(capsys, "report", "--run", "run-1", "-o", str(path))
    assert code == 0, err
    report = json.loads(path.read_text())
    validate_report(report)
    assert report["selection"]["run_kind"] == "run" and [u["unit_id"] for u in report["units"]] == [U0]
    # the run's own (failed) explanation is the primary one; the other is still listed
    assert [x["status"] for x in report["units"][0]["explanations"]] == ["failed", "ok"]
