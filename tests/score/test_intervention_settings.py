"""The intervention scorers' configuration comes from the settings (``EXPLAINER_INTERVENTION_*``) and,
for one run, from the ``--intervention-*`` flags: the registry builds the scorer from the settings it
is given, the flags travel with the run's tasks to the score stage, the target reached is recorded in
the score, and a bad value is one line naming the variable or flag."""

from __future__ import annotations

import dataclasses
import json

import pytest
from builders.intervene import collect_tiny, explain, write_corpus

from explainer.errors import ConfigError
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import score_stage
from explainer.runtime import get_store
from explainer.score.registry import make_scorer
from explainer.settings import load_settings
from workers.cli import main

PROMPTS = """name: my_prompts
version: "1"
judge_prefix: "{text}\\n\\nThis is about"
prompts:
  - "Once upon a time"
  - "The report says"
  - "We went to"
  - "Nobody expected"
"""


def test_the_settings_come_from_the_environment_and_bad_values_name_the_variable(tmp_path):
    prompts = tmp_path / "p.yaml"
    prompts.write_text(PROMPTS)
    env = {
        "EXPLAINER_INTERVENTION_TARGET_KL": "0.25",
        "EXPLAINER_INTERVENTION_PROMPTS": str(prompts),
        "EXPLAINER_INTERVENTION_PROMPTS_N": "3",
        "EXPLAINER_INTERVENTION_NEW_TOKENS": "5",
    }
    s = load_settings(env, data_dir=tmp_path / "d")
    assert (s.intervention_target_kl, s.intervention_prompts) == (0.25, str(prompts.resolve()))
    assert (s.intervention_prompts_n, s.intervention_new_tokens) == (3, 5)
    default = load_settings({}, data_dir=tmp_path / "d")
    assert (default.intervention_target_kl, default.intervention_prompts) == (1.0, "neutral_prompts")
    for key, bad, says in [
        ("EXPLAINER_INTERVENTION_TARGET_KL", "nan", "finite number of nats"),
        ("EXPLAINER_INTERVENTION_TARGET_KL", "inf", "finite number of nats"),
        ("EXPLAINER_INTERVENTION_TARGET_KL", "0", "above 0"),
        ("EXPLAINER_INTERVENTION_TARGET_KL", "-1", "above 0"),
        ("EXPLAINER_INTERVENTION_TARGET_KL", "1e6", "at most 20"),
        ("EXPLAINER_INTERVENTION_TARGET_KL", "lots", "must be a number"),
        ("EXPLAINER_INTERVENTION_PROMPTS_N", "0", "between 1 and 256"),
        ("EXPLAINER_INTERVENTION_NEW_TOKENS", "2.5", "whole number"),
        ("EXPLAINER_INTERVENTION_NEW_TOKENS", "100000", "between 1 and 256"),
        ("EXPLAINER_INTERVENTION_PROMPTS", str(tmp_path / "missing.yaml"), "no such prompt file"),
        ("EXPLAINER_INTERVENTION_PROMPTS", "bad\x00.yaml", "no such prompt file"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}.*{says}") as err:
            load_settings({key: bad}, data_dir=tmp_path / "d")
        assert "\n" not in str(err.value)


def test_the_registry_builds_the_scorer_from_the_settings_it_is_given(settings, tmp_path):
    prompts = tmp_path / "p.yaml"
    prompts.write_text(PROMPTS)
    mine = dataclasses.replace(
        settings,
        intervention_target_kl=0.4,
        intervention_prompts=str(prompts),
        intervention_prompts_n=3,
        intervention_new_tokens=5,
    )
    scorer = make_scorer("intervention-embedding", settings=mine)
    cfg = scorer.config
    assert (cfg.target_kl, cfg.tolerance, cfg.n_prompts, cfg.new_tokens) == (0.4, pytest.approx(0.04), 3, 5)
    assert scorer.prompts == ["Once upon a time", "The report says", "We went to"]
    assert make_scorer("intervention", settings=settings).config.target_kl == 1.0
    # settings built in Python are checked as well, and a prompt file without what the scorer needs is refused
    with pytest.raises(ConfigError, match="EXPLAINER_INTERVENTION_TARGET_KL must be a finite number"):
        make_scorer("intervention", settings=dataclasses.replace(settings, intervention_target_kl=float("nan")))
    broken = tmp_path / "broken.yaml"
    broken.write_text('name: broken\nversion: "1"\nprompts: ["a"]\n')
    with pytest.raises(ConfigError, match="need a list 'prompts' and a 'judge_prefix'"):
        make_scorer("intervention", settings=dataclasses.replace(settings, intervention_prompts=str(broken)))
    with pytest.raises(ConfigError, match="EXPLAINER_INTERVENTION_PROMPTS.*unknown prompt template 'nothing'"):
        make_scorer("intervention", settings=dataclasses.replace(settings, intervention_prompts="nothing"))


def test_the_score_stage_steers_with_the_runs_flags_not_the_workers_settings(settings, tiny_model_dir, tmp_path):
    """The worker's settings say 1.0 nats, which the tiny random model never reaches; the run's
    options carry 0.02, and the score records that target, reached."""
    cid, units = collect_tiny(settings, tiny_model_dir, tmp_path)
    store = get_store(settings)
    eid = explain(store, cid, units[0], "sums of numbers in Python code")
    steering = (("intervention_target_kl", 0.02), ("intervention_prompts_n", 2), ("intervention_new_tokens", 3))
    opts = LabelOptions(scorers=("intervention-embedding",), intervention=steering)
    assert LabelOptions.from_payload(json.loads(json.dumps(opts.to_payload()))) == opts
    assert "intervention" not in LabelOptions().to_payload()  # runs without the flags keep their keys
    # a task's options carry only the intervention settings, each checked again
    payload = json.loads(json.dumps(opts.to_payload()))
    for bad, says in [
        ([["data_dir", "/elsewhere"]], "'data_dir', which is not an intervention setting"),
        ([["intervention_target_kl", "inf"]], "the run's intervention_target_kl must be a finite number"),
    ]:
        with pytest.raises(ConfigError, match=says):
            LabelOptions.from_payload({**payload, "intervention": bad})
    score_stage(settings, eid, opts)
    s = store.get_score(eid, "intervention-embedding")
    assert s.status == "ok", s.error
    d = s.details
    assert d["target_kl"] == 0.02 and abs(d["kl"] - 0.02) <= 0.002 and d["new_tokens"] == 3
    assert len(d["per_prompt"]) == 2 and d["generated_tokens"] == 2 * 2 * 3


def test_label_flags_reach_the_score_and_bad_ones_are_one_line(
    settings, tiny_model_dir, tmp_path, fake_endpoint, capsys
):
    corpus = write_corpus(tmp_path)
    server = fake_endpoint()
    argv = ["label", "--model", str(tiny_model_dir), "--layer", "2", "--corpus", str(corpus), "--max-tokens", "400"]
    argv += ["--window", "8", "--context", "16", "--top-k", "4", "--units", "1", "--no-output-side"]
    argv += ["--explainer-base-url", server.base_url, "--explainer-model", "fake", "--scorer", "intervention-embedding"]
    for flag, bad in [
        ("--intervention-target-kl", "nan"),
        ("--intervention-target-kl", "-0.5"),
        ("--intervention-prompts-n", "many"),
        ("--intervention-prompts", str(tmp_path / "none.yaml")),
        ("--intervention-prompts", "nothing"),  # a template name that does not exist: now, not after collecting
    ]:
        assert main([*argv, flag, bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {flag}") and "\n" not in err, err
    assert get_store(settings).count_rows().get("collections", 0) == 0  # refused before anything was collected
    flags = ["--intervention-target-kl", "0.02", "--intervention-prompts-n", "2", "--intervention-new-tokens", "3"]
    assert main([*argv, *flags, "--json"]) == 0
    unit = json.loads(capsys.readouterr().out)["units"][0]
    store = get_store(settings)
    (expl,) = store.explanations_for([unit["unit_id"]])
    s = store.get_score(expl.id, "intervention-embedding")
    assert s.status == "ok", s.error
    assert s.details["target_kl"] == 0.02 and len(s.details["per_prompt"]) == 2 and s.details["new_tokens"] == 3
