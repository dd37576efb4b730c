"""Explain over real HTTP: the stricter retry, failed attempts stored with their raw text, and
prompts shrunk to the configured context; plus the quality benchmark on a few concepts."""

import dataclasses
import json

import pytest
from builders.llm import RECORD, UNIT

from explainer.llm.chat import LLMConfig
from explainer.llm.prompts import load_template
from explainer.pipeline import stages as pipeline
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from store.records import UnitRecord, Window


@pytest.fixture
def server(fake_openai):
    return fake_openai


def _store(settings, record=RECORD):
    store = get_store(settings)
    store.start_collection("c1", "tiny", "layers.1.mlp", "test", "0" * 64, {"window": 16})
    store.finish_collection("c1", [record], 100)
    return store


def _opts(server, **kw):
    return LabelOptions(explainer=LLMConfig(model="fake", base_url=server.base_url, max_retries=0, timeout_s=5), **kw)


def test_a_refusal_is_retried_with_the_stricter_instruction_over_http(settings, server):
    store = _store(settings)
    server.script = [("answer", "I'm sorry, but I can't help with that."), ("answer", "the identifier foo")]
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, _opts(server)))
    assert row.status == "ok" and row.text == "the identifier foo"
    cand = row.settings["candidates"][0]
    assert cand["attempts"] == 2 and cand["rejected_raw"] == "I'm sorry, but I can't help with that."
    assert (cand["windows_shown"], cand["windows_available"]) == (2, 2)
    first, second = (r["messages"] for r in server.requests)
    assert second[:-1] == first[:-1]
    assert second[-1]["content"] == first[-1]["content"] + "\n\n" + load_template("explain")["retry_instruction"]
    assert (row.prompt_tokens, row.completion_tokens) == (2 * 321, 2 * 7)  # both attempts counted
    assert row.prompt_version == "2"


@pytest.mark.parametrize(
    "answers",
    [["", ""], ["Sorry, I cannot do that.", "word " * 80], ["As an AI, I do not know.", "Excerpt 1: def [[foo]]"]],
)
def test_two_unusable_answers_are_stored_as_a_failed_attempt_with_the_raw_text(settings, server, answers):
    store = _store(settings)
    server.script = [("answer", a) for a in answers]
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, _opts(server)))
    assert row.status == "failed" and row.text is None
    assert row.error.startswith("RejectedAnswer:") and "after a stricter retry" in row.error
    assert row.settings["candidates"][0]["raw"] == answers
    assert len(server.requests) == 2


def test_the_prompt_is_shrunk_to_the_configured_context(settings, server):
    windows = tuple(
        Window(
            f"top-{2 * i}",
            "top",
            "explain",
            f"code:{i}",
            "code",
            tuple(f" tok{i}_{j}" for j in range(150)),
            (4.0,) + (0.0,) * 149,
        )
        for i in range(6)
    )
    record = UnitRecord(UNIT, "tiny", "layers.1.mlp", 3, RECORD.stats, windows + RECORD.windows[1:2])
    settings = dataclasses.replace(settings, llm_context_tokens=1200)  # EXPLAINER_LLM_CONTEXT, read at the entry point
    store = _store(settings, record)
    server.script = [("answer", "tokens numbered tok")]
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, _opts(server)))
    assert row.status == "ok"
    shown = row.window_ids
    assert 1 <= len(shown) < 6 and row.settings["candidates"][0]["windows_available"] == 6
    sent = server.requests[0]["messages"]
    assert sum(len(m["content"]) for m in sent) / 3 + 8 * len(sent) <= 1200 - 48
    assert sent[-1]["content"].count("Excerpt ") == len(shown)


def test_a_context_too_small_for_one_window_is_recorded_as_failed(settings, server):
    store = _store(settings)
    server.script = [("answer", "never asked")]
    opts = LabelOptions(
        explainer=LLMConfig(model="fake", base_url=server.base_url, max_retries=0, timeout_s=5, context_tokens=200)
    )
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, opts))
    assert row.status == "failed" and row.error.startswith("PromptTooLongError:")
    assert server.requests == []


@pytest.mark.slow
def test_bench_quality_runs_on_a_few_concepts(capsys):
    """The benchmark's real path (local SmolLM2 explainer, scoring, Chroma index, search) on 2 concepts
    of each planted set."""
    from bench.bench_quality import main

    out = main(["--limit", "2", "--explainers", "baseline,local", "-q"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    # both planted sets by default: token-level and contextual concepts, each with its own figures
    assert figures["benchmark"] == "quality" and figures["concepts"] == {"token": 2, "context": 2}
    for name in ("baseline", "local"):
        for label in ("token", "context"):
            r = figures["sets"][label][name]
            assert r["units"] == 2 and r["ok"] + r["failed"] == 2
            assert 0.0 <= r["recall_at_1"] <= r["recall_at_3"] <= 1.0
            assert figures["recall_at_3"][label][name] == r["recall_at_3"]
    assert figures["explainers"] == figures["sets"]["token"]
    assert figures["explainers"]["baseline"]["ok"] == 2 and figures["explainers"]["baseline"]["mean_score"] > 0
    assert all(row["status"] in ("ok", "failed") for row in out["rows"]["local"])


@pytest.mark.slow
def test_local_detection_and_embedding_scores_through_score_stage(settings):
    """Detection from the real SmolLM2's yes/no logits and the MiniLM embedding scorer, stored
    by score_stage with method, model, held-out ids, interval and details."""
    store = _store(settings)
    fires = Window("top-3", "top", "heldout", "code:x", "code", ("def", " foo", "(", ")"), (0.0, 4.0, 0.0, 0.0))
    quiet = Window("random-1", "random", "heldout", "docs:y", "docs", ("the", " weather", " is", " nice"), (0.0,) * 4)
    record = UnitRecord(
        UNIT, "tiny", "layers.1.mlp", 3, RECORD.stats, (RECORD.windows[0], fires, quiet, *RECORD.windows[1:])
    )
    store.finish_collection("c1", [record], 100)
    eid = store.save_explanation(
        unit_id=UNIT,
        collection_id="c1",
        explainer_model="m",
        prompt_name="explain",
        prompt_version="2",
        prompt_hash="h",
        status="ok",
        text='the identifier "foo"',
    )
    pipeline.score_stage(settings, eid, LabelOptions(scorers=("detection", "embedding")))
    heldout = [w.window_id for w in record.windows_for("heldout")]
    det = store.get_score(eid, "detection")
    assert det.status == "ok", det.error
    assert det.simulator_model.endswith("[yes/no logits]") and list(det.heldout_ids) == heldout
    assert det.details["fidelity"] == "logprobs" and 0.0 <= det.value <= 1.0
    assert all(0.0 <= p <= 1.0 for p in det.details["p_yes"]) and det.details["auroc"] is not None
    emb = store.get_score(eid, "embedding")
    assert emb.status == "ok" and emb.details["mean_cos_activating"] > emb.details["mean_cos_other"]
