"""The explainer LLM over HTTP: a scripted OpenAI-compatible server, error mapping, and explain_stage."""

import time

import pytest
from builders.llm import RECORD, UNIT

from explainer.errors import PermanentLLMError, TransientLLMError
from explainer.llm.chat import ChatAnswer, LLMConfig, invoke_chat, make_chat_model
from explainer.pipeline import stages as pipeline
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store


@pytest.fixture
def server(fake_openai):
    return fake_openai


MESSAGES = [("system", "You explain neurons."), ("user", "What does it fire on?")]


def _chat(server, timeout_s=5.0):
    return make_chat_model(LLMConfig(model="fake", base_url=server.base_url, max_retries=0, timeout_s=timeout_s))


# -- invoke_chat over HTTP ----------------------------------------------------------------


def test_good_answer_returns_text_and_token_counts(server):
    server.script = [("answer", "the word foo")]
    answer = invoke_chat(_chat(server), MESSAGES)
    assert answer == ChatAnswer("the word foo", 321, 7)
    assert server.paths == ["/v1/chat/completions"]
    req = server.requests[0]
    assert req["model"] == "fake"
    assert req["messages"] == [
        {"role": "system", "content": "You explain neurons."},
        {"role": "user", "content": "What does it fire on?"},
    ]
    assert req["temperature"] == 0.0
    assert req["max_tokens"] == 48


@pytest.mark.parametrize("code", [429, 500, 502, 503])
def test_rate_limit_and_server_errors_are_transient(server, code):
    server.script = [("status", code)]
    with pytest.raises(TransientLLMError):
        invoke_chat(_chat(server), MESSAGES)
    assert len(server.requests) == 1  # max_retries=0: the client itself does not retry


@pytest.mark.parametrize("code", [400, 401, 403, 404])
def test_client_errors_are_permanent(server, code):
    server.script = [("status", code)]
    with pytest.raises(PermanentLLMError, match=f"HTTP {code}"):
        invoke_chat(_chat(server), MESSAGES)
    assert len(server.requests) == 1


def test_garbage_body_is_a_permanent_error(server):
    server.script = [("raw", b"<html>not json</html>")]
    with pytest.raises(PermanentLLMError):
        invoke_chat(_chat(server), MESSAGES)


def test_slow_server_times_out_as_transient(server):
    server.script = [("sleep", 1.5, "too late")]
    chat = _chat(server, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(TransientLLMError, match="(?i)timed? ?out"):
        invoke_chat(chat, MESSAGES)
    assert time.monotonic() - start < 1.4


def test_unreachable_server_is_transient():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = make_chat_model(LLMConfig(model="fake", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout_s=2))
    with pytest.raises(TransientLLMError):
        invoke_chat(chat, MESSAGES)


# -- explain_stage against the server -----------------------------------------------------


@pytest.fixture
def stored(settings):
    store = get_store(settings)
    store.start_collection("c1", "tiny", "layers.1.mlp", "test", "0" * 64, {"window": 16})
    store.finish_collection("c1", [RECORD], 100)
    return settings, store


def _opts(server, **kw):
    return LabelOptions(explainer=LLMConfig(model="fake", base_url=server.base_url, max_retries=0, timeout_s=5), **kw)


def test_explain_stage_records_a_garbage_answer_as_failed(stored, server):
    settings, store = stored
    server.script = [("answer", "!!!"), ("answer", "???")]  # the answer and the stricter retry's
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server))
    row = store.get_explanation(eid)
    assert row.status == "failed"
    assert row.text is None
    assert row.error.startswith("RejectedAnswer:") and "no words" in row.error
    assert row.settings["candidates"][0]["raw"] == ["!!!", "???"]  # the raw texts, never as explanation
    assert (row.unit_id, row.explainer_model, row.prompt_name) == (UNIT, "fake", "explain")
    assert row.settings["base_url"] == server.base_url
    assert not any("key" in k.lower() for k in row.settings)
    assert len(server.requests) == 2
    # without retry_failed the failure stands and the server is not asked again
    assert pipeline.explain_stage(settings, "c1", UNIT, _opts(server)) == eid
    assert len(server.requests) == 2


def test_explain_stage_retries_a_failure_and_then_keeps_the_ok_row(stored, server):
    settings, store = stored
    server.script = [("answer", "!!!"), ("answer", "???"), ("answer", "Explanation: the identifier foo.")]
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server))
    assert store.get_explanation(eid).status == "failed"
    assert pipeline.explain_stage(settings, "c1", UNIT, _opts(server, retry_failed=True)) == eid
    row = store.get_explanation(eid)
    assert (row.status, row.text, row.error) == ("ok", "the identifier foo", None)
    assert list(row.window_ids) == ["top-0", "top-2"]
    assert (row.prompt_tokens, row.completion_tokens) == (321, 7)
    assert store.count_rows()["explanations"] == 1
    assert len(server.requests) == 3
    # the prompt shows only the explain windows, after the system prompt and three few-shot examples
    msgs = server.requests[2]["messages"]
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "[[foo]]" in msgs[-1]["content"] and "bar" not in msgs[-1]["content"]
    # an ok row is final, even with retry_failed
    assert pipeline.explain_stage(settings, "c1", UNIT, _opts(server, retry_failed=True)) == eid
    assert pipeline.explain_stage(settings, "c1", UNIT, _opts(server)) == eid
    assert len(server.requests) == 3


def test_explain_stage_raises_transient_errors_before_the_final_attempt(stored, server):
    settings, store = stored
    server.script = [("status", 500)]
    with pytest.raises(TransientLLMError):
        pipeline.explain_stage(settings, "c1", UNIT, _opts(server), final_attempt=False)
    assert store.count_rows()["explanations"] == 0
    assert len(server.requests) == 1


def test_explain_stage_records_transient_errors_on_the_final_attempt(stored, server):
    settings, store = stored
    server.script = [("status", 500)]
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server), final_attempt=True)
    row = store.get_explanation(eid)
    assert row.status == "failed" and row.text is None
    assert row.error.startswith("gave up after retries:")
    assert "500" in row.error


def test_explain_stage_records_permanent_errors_even_before_the_final_attempt(stored, server):
    settings, store = stored
    server.script = [("status", 401)]
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server), final_attempt=False)
    row = store.get_explanation(eid)
    assert row.status == "failed"
    assert row.error.startswith("PermanentLLMError: HTTP 401")


def test_explain_stage_unknown_unit(stored, server):
    from explainer.errors import UnknownUnitError

    settings, _ = stored
    with pytest.raises(UnknownUnitError, match="tiny/layers.1.mlp/77"):
        pipeline.explain_stage(settings, "c1", "tiny/layers.1.mlp/77", _opts(server))
    assert server.requests == []


# -- best-of-k with the no-LLM baseline ----------------------------------------------------


def test_baseline_candidate_stands_in_for_a_garbage_answer(stored, server):
    settings, store = stored
    server.script = [("answer", "!!!"), ("answer", "!!!")]
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server, baseline_candidate=True))
    row = store.get_explanation(eid)
    assert row.status == "ok" and row.text == 'the token "foo"'
    assert row.settings["selected"] == "baseline"
    failed = [c for c in row.settings["candidates"] if c["source"] == "llm-0"][0]
    assert failed["text"] is None and "no words" in failed["error"]


def test_best_of_k_keeps_the_candidate_the_cheap_scorer_ranks_first(stored, server):
    settings, store = stored
    server.script = [("answer", "words about cooking and food"), ("answer", 'the word "foo"')]
    eid = pipeline.explain_stage(settings, "c1", UNIT, _opts(server, best_of=2))
    row = store.get_explanation(eid)
    assert len(server.requests) == 2
    assert row.status == "ok" and row.text == 'the word "foo"'
    assert row.settings["selected"] == "llm-1"
    by_source = {c["source"]: c for c in row.settings["candidates"]}
    assert by_source["llm-1"]["selection_score"] > by_source["llm-0"]["selection_score"]
    assert row.prompt_tokens == 2 * 321 and row.completion_tokens == 2 * 7
    # the second request was sampled, the first greedy
    assert server.requests[0].get("temperature") in (0, 0.0, None)
    assert server.requests[1]["temperature"] == 0.8


def test_cascade_spends_the_expensive_scorer_only_on_the_shortlist(stored, server, monkeypatch):
    from explainer.score import registry

    seen: list[str] = []

    from explainer.score.base import simulation_result

    class Expensive:
        method, model_name, kind = "test-expensive", "test", "simulation"

        def score(self, explanation, windows):
            return simulation_result(self, self.simulate(explanation, windows), windows)

        def simulate(self, explanation, windows):
            seen.append(explanation)
            # prefers the shorter explanation, whatever the cheap scorer thinks
            return [[1.0 / len(explanation) * (i % 2) for i in range(len(w.tokens))] for w in windows]

    monkeypatch.setitem(registry._REGISTRY, "test-expensive", lambda *_: Expensive())  # this test only
    settings, store = stored
    server.script = [
        ("answer", "words about cooking and food"),
        ("answer", 'the word "foo"'),
        ("answer", "calls of the function foo"),
    ]
    opts = _opts(server, best_of=3, cascade_scorer="test-expensive", cascade_top=2)
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, opts))
    cands = {c["source"]: c for c in row.settings["candidates"]}
    shortlist = sorted(cands, key=lambda s: -cands[s]["selection_score"])[:2]
    assert sorted(seen) == sorted(cands[s]["text"] for s in shortlist)  # 2 of 3 candidates, never the third
    assert row.settings["selected"] in shortlist and "cascade_score" in cands[row.settings["selected"]]
