"""Domains: whatever a corpus may name a domain ("legal docs", "médical") the search filter, the CLI
and the API accept; a comma or a control character is refused in both places."""

from __future__ import annotations

import json

import pytest
from builders.search import UNITS, write_units
from fastapi.testclient import TestClient

from explainer.api.app import ApiConfig, create_app
from explainer.collect.corpus import load_corpus
from explainer.errors import CorpusError, InputError
from explainer.search.hybrid import SearchFilters, search
from workers.cli import main


def test_corpus_and_filter_accept_the_same_domains(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "a contract", "domain": "legal docs"}, {"text": "une ordonnance", "domain": "médical"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert [d.domain for d in load_corpus(path)] == ["legal docs", "médical"]
    for d in ("legal docs", "médical", "a.b-c_d"):
        SearchFilters(domain=d).validate()
    for bad in ("a,b", "tab\there", ""):
        with pytest.raises(InputError, match="invalid domain filter"):
            SearchFilters(domain=bad).validate()
        path.write_text(json.dumps({"text": "x", "domain": bad}) + "\n", encoding="utf-8")
        with pytest.raises(CorpusError, match="without a comma"):
            load_corpus(path)


def test_a_txt_file_name_is_a_domain_by_the_same_rule(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "legal docs.txt").write_text("a contract between parties", encoding="utf-8")
    assert {d.domain for d in load_corpus(folder)} == {"legal docs"}
    SearchFilters(domain="legal docs").validate()
    (folder / "legal,docs.txt").write_text("a second contract", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"legal,docs\.txt.*without a comma") as exc:
        load_corpus(folder)
    assert "\n" not in str(exc.value)
    with pytest.raises(CorpusError, match="without a comma"):
        load_corpus(folder / "legal docs.txt", default_domain="a,b")


def test_search_filters_on_a_domain_with_spaces_and_accents(settings, capsys):
    from dataclasses import replace

    write_units(settings, [replace(UNITS[0], domain="legal docs"), replace(UNITS[1], domain="médical")])
    hits = search(settings, "citations", SearchFilters(domain="legal docs"))
    assert [h["unit_id"] for h in hits] == [UNITS[0].unit_id]
    assert main(["search", "python", "--domain", "médical", "--json"]) == 0
    assert [h["unit_id"] for h in json.loads(capsys.readouterr().out)] == [UNITS[1].unit_id]
    keys = ApiConfig(read_keys=("k",), write_keys=())
    with TestClient(create_app(settings, keys)) as client:
        resp = client.get(
            "/api/v1/search", params={"q": "citations", "domain": "legal docs"}, headers={"X-API-Key": "k"}
        )
        assert resp.status_code == 200, resp.text
        assert [h["unit_id"] for h in resp.json()["hits"]] == [UNITS[0].unit_id]
        bad = client.get("/api/v1/search", params={"q": "x", "domain": "a,b"}, headers={"X-API-Key": "k"})
        assert bad.status_code == 422
