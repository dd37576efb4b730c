"""The intervention scorers on the tiny LLaMA: bisection to the target KL, clean and steered texts
recorded per prompt, the score recomputable from its details, a bootstrap interval, and a target KL
no strength reaches stored as a failed score with its reason (through the real score stage)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from builders.intervene import collect_tiny, explain

from explainer.errors import InterventionError, ParseError
from explainer.intervene import resolve_unit
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import score_stage
from explainer.runtime import get_store
from explainer.score.intervention import EPS, InterventionConfig, InterventionScorer
from explainer.score.registry import make_scorer, scorer_names

CFG = InterventionConfig(target_kl=0.01, tolerance=0.002, n_prompts=3, new_tokens=4, n_boot=200)


def _scorer(tiny_model, tiny_model_dir, variant="logprob", config=CFG):
    return InterventionScorer(
        lambda uid: (tiny_model, resolve_unit(tiny_model, uid)),
        variant,
        judge_model=str(tiny_model_dir),
        config=config,
    )


def test_intervention_score_is_recorded_and_recomputable(tiny_model, tiny_model_dir):
    scorer = _scorer(tiny_model, tiny_model_dir)
    s = scorer.score_unit("loops over numbers in Python code", "tiny-llama/layers.3/4")
    d = s.details
    assert d["method"] == "intervention" and abs(d["kl"] - 0.01) <= 0.002 and d["strength"] > 0
    assert len(d["per_prompt"]) == 3 and all({"prompt", "clean", "steered", "delta"} <= set(p) for p in d["per_prompt"])
    assert s.value == pytest.approx(np.mean([p["delta"] for p in d["per_prompt"]]) / (d["kl"] + EPS))
    assert s.ci_low is not None and s.ci_low <= s.value <= s.ci_high
    assert d["generated_tokens"] == 2 * 3 * 4 and s.n_tokens == 24 and d["forward_passes"] > 24
    with pytest.raises(InterventionError, match="needs the unit"):
        scorer.score("x", [])


def test_embedding_variant_uses_the_same_texts(tiny_model, tiny_model_dir):
    scorer = _scorer(tiny_model, tiny_model_dir, "embedding")
    texts = scorer.continuations("tiny-llama/layers.3/4")
    a = scorer.judge("loops over numbers in Python code", texts)
    b = scorer.judge("warranty disclaimers in software licenses", texts)
    assert a.details["method"] == "intervention-embedding" and math.isfinite(a.value) and math.isfinite(b.value)
    assert a.details["per_prompt"][0]["steered"] == b.details["per_prompt"][0]["steered"]
    assert a.value != b.value


def test_unreachable_target_kl_is_an_error_not_a_zero(tiny_model, tiny_model_dir):
    scorer = _scorer(tiny_model, tiny_model_dir, config=InterventionConfig(target_kl=50.0, n_prompts=2, new_tokens=2))
    with pytest.raises(InterventionError, match="no strength up to"):
        scorer.score_unit("anything", "tiny-llama/layers.3/4")
    with pytest.raises(InterventionError, match="empty"):
        scorer.score_unit("  ", "tiny-llama/layers.3/4")


def test_score_stage_stores_an_unreached_target_as_a_failed_score(settings, tiny_model_dir, tmp_path):
    assert {"intervention", "intervention-embedding"} <= set(scorer_names())
    cid, units = collect_tiny(settings, tiny_model_dir, tmp_path)
    store = get_store(settings)
    eid = explain(store, cid, units[0], "sums of numbers in Python code")
    # the tiny random model's next-token distribution never moves by the default KL of 1.0
    score_stage(settings, eid, LabelOptions(scorers=("intervention",), simulator_model=str(tiny_model_dir)))
    s = store.get_score(eid, "intervention")
    assert s.status == "failed" and s.value is None and "reaches the target KL 1" in s.error
    assert make_scorer("intervention", settings=settings).method == "intervention"


def test_a_unit_without_held_out_windows_is_scored_by_steering_not_by_windows(
    settings, tiny_model, tiny_model_dir, tmp_path, monkeypatch
):
    """Intervention scorers steer the unit, so a unit whose record holds no held-out window gets an
    intervention score; a window scorer still fails on it, with the reason."""
    import dataclasses

    from builders.intervene import CFG as COLLECT

    from explainer.pipeline import stages

    only_top = dataclasses.replace(COLLECT, top_k=1, n_random=0, n_quantiles=0)  # one window, in the explain split
    cid, units = collect_tiny(settings, tiny_model_dir, tmp_path, config=only_top)
    store = get_store(settings)
    assert store.get_record(units[0], cid).windows_for("heldout") == []
    eid = explain(store, cid, units[0], "sums of numbers in Python code")
    steering = InterventionScorer(lambda uid: (tiny_model, resolve_unit(tiny_model, uid)), "embedding", config=CFG)
    real = stages.make_scorer
    monkeypatch.setattr(
        stages, "make_scorer", lambda name, **k: steering if name == "intervention-embedding" else real(name, **k)
    )
    score_stage(settings, eid, LabelOptions(scorers=("intervention-embedding", "simulation-embedding")))
    s = store.get_score(eid, "intervention-embedding")
    assert s.status == "ok" and math.isfinite(s.value) and s.details["kind"] == "intervention"
    assert len(s.details["per_prompt"]) == CFG.n_prompts
    window = store.get_score(eid, "simulation-embedding")
    assert window.status == "failed" and "no held-out windows" in window.error


def test_endpoint_variant_judges_with_echoed_prompt_logprobs(tiny_model, tiny_model_dir, fake_endpoint):
    """`intervention-endpoint` over real HTTP: log P(explanation | text) is the sum of the echoed
    logprobs of the tokens that start inside the explanation. The fake server's judge finds a word
    likely when the prompt already holds it, so the explanation whose words the steered text holds
    scores above one whose words it lacks."""
    from explainer.llm.transport import openai_client
    from explainer.score.endpoint import RemoteSimulator

    server = fake_endpoint()
    remote = RemoteSimulator(openai_client(server.base_url, None, 5.0, max_retries=0), server.base_url, "fake")
    # " cat" is in the prefix, " dog" is not: two spaces and "cat" at ln 0.9, "dog" at ln 0.1
    assert remote.continuation_logprob("the cat", " cat dog") == pytest.approx(3 * math.log(0.9) + math.log(0.1))
    assert server.requests[-1]["echo"] is True and server.requests[-1]["logprobs"] == 1
    scorer = InterventionScorer(
        lambda uid: (tiny_model, resolve_unit(tiny_model, uid)), "endpoint", config=CFG, remote=remote
    )
    texts = {
        "prompts": ["I think that", "The next thing is"],
        "clean": ["the weather is fine today", "a walk in the park"],
        "steered": ["numbers 1 2 3 and more numbers", "digits and numbers everywhere"],
        "kl": 1.0,
        "strength": 5.0,
        "bisection_steps": 3,
        "forward_passes": 20,
        "generated_tokens": 16,
    }
    right, wrong = scorer.judge("numbers and digits", texts), scorer.judge("weather today", texts)
    assert right.value > 0 > wrong.value
    assert right.details["method"] == "intervention-endpoint" and right.details["judge"].startswith("endpoint")
    assert right.model.startswith("fake")
    silent = fake_endpoint(echo_logprobs=False)
    mute = RemoteSimulator(openai_client(silent.base_url, None, 5.0, max_retries=0), silent.base_url, "fake")
    with pytest.raises(ParseError, match="no prompt logprobs"):
        mute.continuation_logprob("the cat", " cat")


def test_endpoint_variant_needs_an_endpoint(settings):
    from explainer.errors import ConfigError

    assert "intervention-endpoint" in scorer_names()
    with pytest.raises(ConfigError, match="EXPLAINER_SIMULATOR_BASE_URL"):
        make_scorer("intervention-endpoint", settings=settings)


def test_the_measured_output_side_is_stored_with_the_unit_and_shown(
    settings, tiny_model, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """What steering did to the next token (mean probabilities over the neutral prompts at the strength
    the bisection found) travels in the score's details; the score stage stores it with the unit,
    and `show`, the unit page and the reports show it."""
    from builders.report import validate_report
    from fastapi.testclient import TestClient

    from explainer.api.app import ApiConfig, create_app
    from explainer.intervene.hooks import Edit
    from explainer.pipeline import stages
    from explainer.score.intervention import measured_output
    from workers.cli import main

    cid, units = collect_tiny(settings, tiny_model_dir, tmp_path)
    store = get_store(settings)
    eid = explain(store, cid, units[0], "sums of numbers in Python code")
    scorer = InterventionScorer(lambda uid: (tiny_model, resolve_unit(tiny_model, uid)), "embedding", config=CFG)
    monkeypatch.setattr(stages, "make_scorer", lambda *a, **k: scorer)
    score_stage(settings, eid, LabelOptions(scorers=("intervention-embedding",)))
    s = store.get_score(eid, "intervention-embedding")
    assert s.status == "ok"
    effect = store.output_sides([units[0]], "steering")[units[0]]
    d = effect["details"]
    assert d == {k: s.details[k] for k in ("strength", "kl")} | {"target_kl": CFG.target_kl, "prompts": 3}
    target = resolve_unit(tiny_model, units[0])
    again = measured_output(tiny_model, scorer.prompts, [Edit(target, "add", d["strength"])])
    assert again["promoted"] == effect["promoted"] and len(effect["suppressed"]) == 10
    rose = effect["promoted"][0]
    assert (
        rose["p_steered"] > rose["p_clean"]
        and effect["suppressed"][0]["p_steered"] < effect["suppressed"][0]["p_clean"]
    )

    assert main(["show", units[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steering_effect"] == effect
    with TestClient(create_app(settings, ApiConfig(read_keys=("k",)))) as client:
        assert client.get(f"/api/v1/units/{units[0]}", headers={"X-API-Key": "k"}).json()["steering_effect"] == effect
    assert main(["report", "--units", units[0], "-o", str(tmp_path / "r.json")]) == 0
    assert main(["report", "--units", units[0], "-o", str(tmp_path / "r.md")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    validate_report(report)
    assert report["units"][0]["steering_effect"] == effect
    assert "steered (strength" in (tmp_path / "r.md").read_text()
