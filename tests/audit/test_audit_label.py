"""`explainer audit --label`: the selected units are labelled through the normal run machinery (an
explainer over the shared fake OpenAI-compatible server, the real scorers, the embedded worker) and
the audit shows each with its explanation, score and strongest evidence; a second audit labels
nothing again."""

from __future__ import annotations

import json

from builders.audit import planted_cases

from explainer.audit.cases import write_cases
from workers.cli import main


def test_audit_label_attaches_explanations(settings, tiny_model_dir, tmp_path, fake_endpoint, monkeypatch, capsys):
    server = fake_endpoint()
    monkeypatch.setenv("EXPLAINER_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("EXPLAINER_LLM_MODEL", "fake")
    write_cases(tmp_path / "cases.jsonl", planted_cases(per_class=12))
    out = tmp_path / "out"
    argv = ["audit", "--cases", str(tmp_path / "cases.jsonl"), "--model", str(tiny_model_dir), "--layer", "1"]
    argv += ["--out", str(out), "--no-causal", "--label", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    selected, explained = r["selected_units"]["ids"], r["selected_units"]["explained"]
    assert selected and set(explained) == set(selected)
    ok = [e for e in explained.values() if e.get("explanation")]
    assert ok and all(e["status"] == "ok" and e["unit_id"] in selected for e in ok)
    assert r["labeling"]["labeled"] == len(ok) + sum(1 for e in explained.values() if e.get("status") == "failed")
    first_calls = sum(1 for p in server.paths if p.endswith("/chat/completions"))
    assert first_calls >= len(ok)
    md = (out / "audit.md").read_text()
    assert "with their explanations" in md and ok[0]["explanation"] in md
    assert json.loads((out / "audit.json").read_text())["selected_units"]["explained"] == explained
    # the most confident held-out failures, read token by token through the explained units
    fails = r["confident_failures"]
    assert 1 <= len(fails) <= 3 and [f["logit"] for f in fails] == sorted((f["logit"] for f in fails), reverse=True)
    assert [c["id"] for c in r["inspected"]] == [f["id"] for f in fails]
    for case in r["inspected"]:
        assert "".join(t["token"] for t in case["tokens"]).strip().endswith(case["response"].strip())
        assert all(u["explanation"] and u["level"] >= 3 for t in case["tokens"] for u in t["units"])
    assert "The most confident failures, read through the explained units" in md
    # the same audit again: the collection and the explanations are reused, nothing is asked again
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["labeling"]["run_id"] == r["labeling"]["run_id"]
    assert again["labeling"]["collection_id"] == r["labeling"]["collection_id"]
    assert sum(1 for p in server.paths if p.endswith("/chat/completions")) == first_calls


def test_label_top_labels_only_the_strongest_units(
    settings, tiny_model_dir, tmp_path, fake_endpoint, monkeypatch, capsys
):
    server = fake_endpoint()
    monkeypatch.setenv("EXPLAINER_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("EXPLAINER_LLM_MODEL", "fake")
    write_cases(tmp_path / "cases.jsonl", planted_cases(per_class=12))
    argv = ["audit", "--cases", str(tmp_path / "cases.jsonl"), "--model", str(tiny_model_dir), "--layer", "1"]
    argv += ["--out", str(tmp_path / "out"), "--no-causal"]
    for bad, message in (("0", "at least 1, not 0"), ("-3", "at least 1, not -3")):
        assert main([*argv, "--label", "--label-top", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert main([*argv, "--label-top", "2"]) == 2
    assert "give --label too" in capsys.readouterr().err
    assert main([*argv, "--label", "--label-top", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    ids, weights, explained = (r["selected_units"][k] for k in ("ids", "weights", "explained"))
    assert len(ids) > 2, "the planted failure selects more than two units"
    strongest = sorted(ids, key=lambda u: -weights[ids.index(u)])[:2]
    tried = {u for u, e in explained.items() if not e["status"].startswith("not labelled")}
    assert tried == set(strongest) and r["labeling"]["labeled"] <= 2 and r["labeling"]["label_top"] == 2
    assert all(explained[u]["status"] == "not labelled (outside --label-top 2)" for u in set(ids) - tried)
    assert any(explained[u].get("explanation") for u in strongest)
    assert "not labelled (outside --label-top 2)" in (tmp_path / "out" / "audit.md").read_text()
