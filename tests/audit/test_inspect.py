"""`explainer inspect`: a text read through the explained units of the tiny LLaMA. Each token lists
the explained units most active there on the 0-10 scale of their collection maximum, with their
explanations and scores; the levels equal a direct forward pass."""

from __future__ import annotations

import json

import numpy as np
import torch
from builders.intervene import collect_tiny, explain

from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.runtime import get_store
from workers.cli import main

TEXT = "def total(xs):\n    return sum(x * 2 for x in xs if x > 0)"


def test_inspect_lists_the_explained_units_per_token(settings, tiny_model, tiny_model_dir, tmp_path, capsys):
    cid, units = collect_tiny(settings, tiny_model_dir, tmp_path)
    store = get_store(settings)
    named = {units[0]: "sums in Python code", units[1]: "comparison operators"}
    eid = explain(store, cid, units[0], named[units[0]])
    explain(store, cid, units[1], named[units[1]])
    store.save_score(
        explanation_id=eid, scorer="simulation-context", simulator_model="x", status="ok", value=0.5, ci_low=0.4,
        ci_high=0.6, per_domain={}, n_tokens=10,
    )  # fmt: skip
    argv = ["inspect", TEXT, "--model", str(tiny_model_dir), "--layer", "2", "--min-level", "0", "--top", "2"]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    enc = tiny_model.tokenizer(TEXT, add_special_tokens=False)
    assert r["explained_units"] == 2 and len(r["tokens"]) == len(enc["input_ids"])
    assert "".join(t["token"] for t in r["tokens"]) == TEXT
    ids = torch.tensor([enc["input_ids"]])
    acts = capture(tiny_model.model, resolve_hookpoint(tiny_model.model, "layers.2.mlp"), ids, torch.ones_like(ids))[0]
    records = store.get_records(list(named))
    for t, tok in enumerate(r["tokens"]):
        assert {u["unit_id"] for u in tok["units"]} == set(named)  # --min-level 0 --top 2: both, every token
        for u in tok["units"]:
            idx = int(u["unit_id"].rsplit("/", 1)[1])
            level = int(np.clip(np.round(10 * float(acts[t, idx]) / records[u["unit_id"]][1].stats.max), 0, 10))
            assert u["level"] == level and u["explanation"] == named[u["unit_id"]]
        assert [u["level"] for u in tok["units"]] == sorted((u["level"] for u in tok["units"]), reverse=True)
    scored = [u for tok in r["tokens"] for u in tok["units"] if u["unit_id"] == units[0]]
    assert scored[0]["score"] == {"scorer": "simulation-context", "value": 0.5, "meaning": "good"}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 explained unit(s)" in out and "sums in Python code [simulation-context +0.50, good]" in out


def test_inspect_refuses_what_it_cannot_read(settings, tiny_model_dir, tmp_path, capsys):
    collect_tiny(settings, tiny_model_dir, tmp_path)
    assert main(["inspect", "x = 1", "--model", str(tiny_model_dir), "--layer", "2"]) == 2
    assert "has an explanation in the store: label some first" in capsys.readouterr().err
    assert main(["inspect", "   ", "--model", str(tiny_model_dir), "--layer", "2"]) == 2
    assert "empty" in capsys.readouterr().err
