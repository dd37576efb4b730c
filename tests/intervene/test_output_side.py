"""Output-side descriptions (vocabulary projection) on the tiny LLaMA: the promoted tokens are those
whose unembedding rows, after the final norm's gain, align best with the unit's write direction; an
MLP neuron writes its down_proj column; `explainer show --output-side` prints them; labeling stores
them with the unit for show, the unit page, reports and the output-aware explainer prompt."""

from __future__ import annotations

import json

import torch
from builders.intervene import collect_tiny, explain

from explainer.collect.hooks import decoder_layers
from explainer.intervene import resolve_unit
from explainer.intervene.output import vocab_projection
from explainer.intervene.units import write_direction
from workers.cli import main


def test_vocab_projection_of_a_neuron_is_its_down_proj_column_through_norm_and_head(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.2.mlp/9")
    col = decoder_layers(tiny_model.model)[2].mlp.down_proj.weight[:, 9]
    torch.testing.assert_close(write_direction(tiny_model, target), col)
    out = vocab_projection(tiny_model, target, k=5)
    logits = tiny_model.model.lm_head.weight @ (col / col.norm() * tiny_model.model.model.norm.weight)
    want = [tiny_model.tokenizer.decode([i]) for i in logits.topk(5).indices.tolist()]
    assert [t["token"] for t in out["promoted"]] == want
    assert [t["token"] for t in out["suppressed"]] == [
        tiny_model.tokenizer.decode([i]) for i in (-logits).topk(5).indices.tolist()
    ]
    assert out["promoted"][0]["logit"] > 0 > out["suppressed"][0]["logit"]


def test_residual_unit_writes_its_basis_vector(tiny_model):
    target = resolve_unit(tiny_model, "tiny-llama/layers.1/3")
    assert write_direction(tiny_model, target).nonzero().flatten().tolist() == [3]


def test_show_prints_the_output_side(settings, tiny_model_dir, tmp_path, capsys):
    unit = collect_tiny(settings, tiny_model_dir, tmp_path)[1][0]
    from explainer.runtime import get_store

    cid = get_store(settings).get_records([unit])[unit][0]
    explain(get_store(settings), cid, unit, "sums")
    assert main(["show", unit, "--output-side", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["output_side"]["promoted"]) == 10 and out["output_side"]["method"] == "vocab-projection"
    assert main(["show", unit, "--output-side"]) == 0
    assert "promoted:" in capsys.readouterr().out


def test_labeling_stores_output_sides_everywhere_and_the_output_prompt_shows_them(
    settings, tiny_model_dir, tmp_path, fake_endpoint, capsys
):
    """`label` computes each labeled unit's output side once and stores it with the unit: `show`
    prints it without loading the model, the unit page and every report format carry it, and the
    output-aware prompt hands the promoted tokens to the explainer."""
    from builders.intervene import write_corpus
    from builders.report import pdf_pages, validate_report
    from fastapi.testclient import TestClient

    from explainer.api.app import ApiConfig, create_app
    from explainer.runtime import get_store

    corpus = write_corpus(tmp_path)
    server = fake_endpoint()
    argv = ["label", "--model", str(tiny_model_dir), "--layer", "2", "--corpus", str(corpus), "--max-tokens", "400"]
    argv += ["--window", "8", "--context", "16", "--top-k", "4", "--units", "2", "--scorer", "simulation-embedding"]
    argv += ["--explainer-base-url", server.base_url, "--explainer-model", "fake", "--explain-prompt", "explain_output"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "output sides: the tokens 2 unit(s) promote and suppress" in err
    labeled = _labeled(settings)
    units = sorted(get_store(settings).output_sides(labeled))
    assert len(labeled) == len(units) == 2
    side = get_store(settings).output_sides(units)[units[0]]
    assert side["method"] == "vocab-projection" and len(side["promoted"]) == len(side["suppressed"]) == 10
    first = json.dumps(side["promoted"][0]["token"], ensure_ascii=False)
    shown = [m["content"] for r in server.requests for m in r.get("messages", []) if m["role"] == "user"]
    assert any("the next token is more likely to be: " + first in c for c in shown)

    # show: stored, so no --output-side (and no model) needed
    assert main(["show", units[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output_side"] == side
    with TestClient(create_app(settings, ApiConfig(read_keys=("k",)))) as client:
        page = client.get(f"/api/v1/units/{units[0]}", headers={"X-API-Key": "k"}).json()
    assert page["output_side"] == side
    for fmt in ("md", "html", "json", "pdf"):
        assert main(["report", "--units", *units, "-o", str(tmp_path / f"r.{fmt}")]) == 0
    capsys.readouterr()
    assert f"promotes: {first}" in (tmp_path / "r.md").read_text()
    assert "Output side" in (tmp_path / "r.html").read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    validate_report(report)
    assert {u["unit_id"]: u["output_side"] for u in report["units"]}[units[0]] == side
    assert "promotes:" in " ".join(pdf_pages((tmp_path / "r.pdf").read_bytes())[1])


def _labeled(settings):
    from sqlalchemy import text

    from explainer.runtime import get_store

    with get_store(settings).engine.connect() as conn:
        return [r[0] for r in conn.execute(text("select distinct unit_id from explanations"))]
