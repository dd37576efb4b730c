"""Simulation and detection over real HTTP against the fake OpenAI-compatible server with canned logprobs.

The fake server (``bench/fake_openai.py``) tokenises with a small regex (optionally one token per
digit, like SmolLM2's tokenizer that splits "10"). Its canned "model" knows one thing: a token
containing ``foo`` fires (activation 10), any other token does not.
"""

import json
import re

import pytest

from explainer.errors import ParseError, PermanentLLMError
from explainer.llm.transport import openai_client
from explainer.pipeline import stages as pipeline
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from explainer.score.endpoint import (
    RemoteSimulator,
    endpoint_simulator,
    read_chat_logprobs,
    read_json_answer,
    reset_detection,
)
from explainer.score.registry import evaluate, make_scorer
from store.records import UnitRecord, UnitStats, Window


@pytest.fixture
def fake(fake_endpoint):
    """``fake(**switches)``: the fake OpenAI-compatible server with its canned logprob model
    (``bench/fake_openai.py``); endpoint detection is forgotten before and after."""
    reset_detection()
    yield fake_endpoint
    reset_detection()


def _sim(server, mode="auto"):
    return RemoteSimulator(openai_client(server.base_url, None, 5.0, max_retries=0), server.base_url, "fake", mode)


def _win(wid, kind, tokens, acts, domain="code"):
    return Window(wid, kind, "heldout", f"{domain}:{wid}", domain, tuple(tokens), tuple(acts))


WINDOWS = [
    _win("top-1", "top", ["def", " foo", "(", "x", ")"], [0, 4.0, 0, 0, 0]),
    _win("top-3", "top", ["call", " foo", "()"], [0, 3.0, 0], "docs"),
    _win("random-0", "random", ["hello", " world", "\t", "10"], [0, 0, 0, 0]),
    _win("random-1", "random", ["the", " cat"], [0, 0.1], "docs"),
]
EXPECT_FIRES = [[0, 1, 0, 0, 0], [0, 1, 0], [0, 0, 0, 0], [0, 0]]


def _check(preds, hi, lo):
    for p_w, f_w in zip(preds, EXPECT_FIRES):
        assert p_w == pytest.approx([hi if f else lo for f in f_w], abs=1e-6)


# -- the three methods ------------------------------------------------------------------------


def test_completions_echo_reads_the_digits_after_each_tab(fake):
    server = fake()
    sim = _sim(server)
    preds, details = sim.simulate_detailed("the word foo", WINDOWS)
    _check(preds, 9.0, 0.2)  # 0.9·10 + 0.1·0 and 0.8·0 + 0.2·1
    assert details["method"] == "completions-echo" and details["fidelity"] == "logprobs"
    assert details["ten"] == "one-token" and details["requests"] == 4 and details["missing_positions"] == 0
    assert server.paths == ["/v1/completions"] * 4  # one request per window
    prompt = server.requests[0]["prompt"]
    # the echo prompt fills unknown activations with a digit (simulate.yaml's echo_placeholder)
    assert prompt.endswith("def\t0\n foo\t0\n(\t0\nx\t0\n)\t0\n")
    assert sim.model_name == "fake [completions-echo]"


def test_completions_echo_with_split_ten_reads_zero_to_nine(fake):
    server = fake(split_digits=True)
    preds, details = _sim(server).simulate_detailed("the word foo", WINDOWS)
    _check(preds, 0.9, 0.2)  # "1" can mean 1 or 10: the expectation runs over 0-9
    assert details["ten"] == "split-0-9"


def test_no_completions_route_falls_back_to_chat_logprobs(fake):
    server = fake(completions=False)
    sim = _sim(server)
    preds, details = sim.simulate_detailed("the word foo", WINDOWS)
    _check(preds, 9.0, 0.2)
    assert details["method"] == "chat-logprobs" and details["fidelity"] == "logprobs"
    # detection happened once; the method is cached for the endpoint
    assert server.paths == ["/v1/completions"] + ["/v1/chat/completions"] * 4
    sim.simulate("the word foo", WINDOWS[:1])
    assert server.paths[-1] == "/v1/chat/completions" and server.paths.count("/v1/completions") == 1
    req = server.requests[1]
    assert req["logprobs"] is True and req["top_logprobs"] == 10
    assert [m["role"] for m in req["messages"]] == ["system", "user", "assistant", "user"]
    assert "def\n foo\n(\nx\n)\n<end>" in req["messages"][-1]["content"]


def test_chat_logprobs_resolve_a_split_ten(fake):
    server = fake(completions=False, split_digits=True)
    preds, details = _sim(server).simulate_detailed("the word foo", WINDOWS)
    # "1" then "0": P(1)=0.9 and P("0" | "1")=0.8 -> P(10)=0.72, P(1)=0.18, P(0)=0.1
    _check(preds, 0.72 * 10 + 0.18, 0.2)
    assert details["ten"] == "split-resolved"


def test_echo_without_logprobs_and_chat_without_logprobs_fall_back_to_the_json_answer(fake):
    server = fake(echo_logprobs=False, chat_logprobs=False)
    preds, details = _sim(server).simulate_detailed("the word foo", WINDOWS)
    _check(preds, 10.0, 0.0)
    assert details["method"] == "json-answer" and details["fidelity"] == "low" and details["top_logprobs"] is None
    assert server.paths[:3] == ["/v1/completions", "/v1/chat/completions", "/v1/chat/completions"]
    assert "logprobs" not in server.requests[-1]


# -- failures name the endpoint ---------------------------------------------------------------


def test_logprobs_mode_without_logprobs_fails_loudly_naming_the_endpoint(fake):
    server = fake(echo_logprobs=False, chat_logprobs=False)
    with pytest.raises(ParseError, match=re.escape(server.base_url) + r".*no usable predictions.*echo.*top_logprobs"):
        _sim(server, "logprobs").simulate("the word foo", WINDOWS)


def test_logprobs_without_digits_are_unusable(fake):
    server = fake(no_digits=True, chat_logprobs=False)
    with pytest.raises(ParseError, match="no digit among the top-10 logprobs"):
        _sim(server, "logprobs").simulate("the word foo", WINDOWS)


@pytest.mark.parametrize(
    "answer, message",
    [
        ("I cannot predict activations.", "not a JSON list"),
        ("[0, 1]", "2 values for 5 tokens"),
        ('["a", "b", "c", "d", "e"]', "non-numbers"),
        ("[0, 1, 2", "not a JSON list"),
    ],
)
def test_garbage_json_answers_fail_naming_the_endpoint(fake, answer, message):
    server = fake(completions=False, chat_logprobs=False, answer=answer)
    with pytest.raises(ParseError, match=re.escape(server.base_url) + ".*" + re.escape(message)):
        _sim(server, "json").simulate("the word foo", WINDOWS[:1])


def test_a_cached_method_that_stops_giving_logprobs_fails_loudly(fake):
    server = fake()
    sim = _sim(server)
    sim.simulate("the word foo", WINDOWS[:1])
    server.echo_logprobs = False
    with pytest.raises(ParseError, match=re.escape(server.base_url) + ".*completions-echo returned no usable logprobs"):
        sim.simulate("the word foo", WINDOWS)


def test_parsers_directly():
    assert read_json_answer("Sure: [0, 3, 12, -1]", 4) == [0.0, 3.0, 10.0, 0.0]
    with pytest.raises(ParseError, match="non-numbers"):
        read_json_answer("[true, 1]", 2)
    with pytest.raises(ParseError, match="numbers for 3 tokens"):
        read_chat_logprobs(
            {
                "choices": [
                    {
                        "logprobs": {
                            "content": [
                                {"token": "[", "logprob": 0.0, "top_logprobs": [{"token": "[", "logprob": 0.0}]},
                                {"token": "0", "logprob": 0.0, "top_logprobs": [{"token": "0", "logprob": 0.0}]},
                                {"token": "]", "logprob": 0.0, "top_logprobs": []},
                            ]
                        }
                    }
                ]
            },
            3,
        )


# -- the registered scorer, settings and score_stage ------------------------------------------


def test_endpoint_scorer_reads_its_settings(settings, monkeypatch, fake):
    from explainer.errors import ConfigError
    from explainer.settings import load_settings

    with pytest.raises(ConfigError, match="EXPLAINER_SIMULATOR_BASE_URL"):
        make_scorer("simulation-endpoint", settings=settings)
    server = fake()
    monkeypatch.setenv("EXPLAINER_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("EXPLAINER_LLM_MODEL", "explainer-model")
    s = load_settings()
    assert (s.simulator_base_url, s.simulator_model) == ("http://127.0.0.1:1/v1", "explainer-model")
    monkeypatch.setenv("EXPLAINER_SIMULATOR_BASE_URL", server.base_url)
    monkeypatch.setenv("EXPLAINER_SIMULATOR_MODEL", "sim-model")
    monkeypatch.setenv("EXPLAINER_SIMULATOR_METHOD", "chat")
    s = load_settings()
    sim = make_scorer("simulation-endpoint", settings=s)
    assert sim is endpoint_simulator(s)  # one simulator (and one HTTP client) per endpoint and process
    assert (sim.base_url, sim.model, sim.mode) == (server.base_url, "sim-model", "chat")
    monkeypatch.setenv("EXPLAINER_SIMULATOR_METHOD", "telepathy")
    with pytest.raises(ConfigError, match="EXPLAINER_SIMULATOR_METHOD must be one of"):
        load_settings()


UNIT = "tiny/layers.1.mlp/3"
RECORD = UnitRecord(
    UNIT,
    "tiny",
    "layers.1.mlp",
    3,
    UnitStats(max=4.0, mean=0.1, std=0.2, density=0.1, n_tokens=100),
    (Window("top-0", "top", "explain", "code:a", "code", ("a", " foo"), (0.0, 4.0)), *WINDOWS),
)


@pytest.fixture
def stored(settings):
    store = get_store(settings)
    store.start_collection("c1", "tiny", "layers.1.mlp", "test", "0" * 64, {"window": 16})
    store.finish_collection("c1", [RECORD], 100)
    eid = store.save_explanation(
        unit_id=UNIT,
        collection_id="c1",
        explainer_model="m",
        prompt_name="explain",
        prompt_version="2",
        prompt_hash="h",
        status="ok",
        text="the word foo",
    )
    return settings, store, eid


def test_score_stage_stores_method_fidelity_model_and_heldout_ids(stored, fake, monkeypatch):
    from explainer.settings import load_settings

    settings, store, eid = stored
    server = fake(completions=False)
    monkeypatch.setenv("EXPLAINER_SIMULATOR_BASE_URL", server.base_url)
    monkeypatch.setenv("EXPLAINER_SIMULATOR_MODEL", "sim-model")
    settings = load_settings()
    opts = LabelOptions(scorers=("simulation-endpoint", "detection", "embedding"))
    pipeline.score_stage(settings, eid, opts)
    heldout = [w.window_id for w in WINDOWS]

    sim = store.get_score(eid, "simulation-endpoint")
    assert sim.status == "ok" and sim.value > 0.9
    assert sim.simulator_model == "sim-model [chat-logprobs]"
    assert sim.details["method"] == "chat-logprobs" and sim.details["fidelity"] == "logprobs"
    assert sim.details["endpoint"] == server.base_url and sim.details["prompt"].startswith("simulate@3#")
    assert list(sim.heldout_ids) == heldout and sim.ci_low <= sim.value <= sim.ci_high

    det = store.get_score(eid, "detection")
    assert det.status == "ok" and det.value == 1.0  # balanced accuracy: 2 activating, 2 not, all right
    assert det.simulator_model == "sim-model [yes/no]"
    assert det.details["fidelity"] == "logprobs" and det.details["auroc"] == 1.0
    assert det.details["n_activating"] == 2 and list(det.heldout_ids) == heldout
    assert det.details["prompt"].startswith("detect@1#")

    emb = store.get_score(eid, "embedding")
    assert emb.status == "ok" and emb.simulator_model == "all-MiniLM-L6-v2"
    assert 0.0 <= emb.value <= 1.0 and emb.details["method"] == "embedding"


def test_score_stage_records_an_endpoint_without_predictions_as_failed(stored, fake, monkeypatch):
    from explainer.settings import load_settings

    settings, store, eid = stored
    server = fake(completions=False, chat_logprobs=False, answer="no idea")
    monkeypatch.setenv("EXPLAINER_SIMULATOR_BASE_URL", server.base_url)
    pipeline.score_stage(load_settings(), eid, LabelOptions(scorers=("simulation-endpoint", "detection")))
    sim = store.get_score(eid, "simulation-endpoint")
    assert sim.status == "failed" and sim.value is None
    assert sim.error.startswith("ParseError: simulator endpoint " + server.base_url)
    det = store.get_score(eid, "detection")
    assert det.status == "failed" and "answered neither yes nor no" in det.error


def test_detection_from_a_plain_answer_is_low_fidelity(fake):
    from explainer.score.detection import RemoteDetector

    server = fake(chat_logprobs=False)
    det = RemoteDetector(openai_client(server.base_url, None, 5.0, max_retries=0), "fake")
    result = evaluate(det, "the word foo", WINDOWS)
    assert result.value == 1.0 and result.details["fidelity"] == "low" and result.details["auroc"] is None


def test_auth_errors_are_not_mistaken_for_a_missing_method(fake):
    server = fake()
    server.route = lambda path, body: (401, {"error": {"message": "bad key", "type": "auth"}})
    with pytest.raises(PermanentLLMError, match=re.escape(server.base_url) + ".*HTTP 401"):
        _sim(server).simulate("x", WINDOWS[:1])


def test_a_transient_endpoint_error_in_scoring_is_raised_for_a_retry_then_recorded(stored, monkeypatch):
    """429/5xx/timeouts while scoring: raised (the score task retries with backoff) until the last
    attempt, which stores a failed score with the reason; never an ok score."""
    from explainer.errors import TransientLLMError

    settings, store, eid = stored

    class Flaky:
        method, model_name = "flaky", "flaky-endpoint"

        def score(self, explanation, windows):
            raise TransientLLMError("HTTP 429: slow down")

    monkeypatch.setattr(pipeline, "make_scorer", lambda *a, **k: Flaky())
    opts = LabelOptions(scorers=("simulation-endpoint",))
    with pytest.raises(TransientLLMError):
        pipeline.score_stage(settings, eid, opts, final_attempt=False)
    assert store.get_score(eid, "simulation-endpoint") is None
    pipeline.score_stage(settings, eid, opts, final_attempt=True)
    row = store.get_score(eid, "simulation-endpoint")
    assert row.status == "failed" and "429" in row.error and row.value is None


def test_endpoint_credentials_never_reach_errors_or_details(fake):
    """A base URL with a user, password or query key is named without them in errors and details."""
    from explainer.score.endpoint import reset_detection

    server = fake(no_digits=True)
    reset_detection()
    secret_url = server.base_url.replace("http://", "http://user:s3cret@") + "?api-key=s3cret"
    sim = RemoteSimulator(openai_client(server.base_url, None, 5), secret_url, "m", "completions")
    with pytest.raises(ParseError) as err:
        sim.simulate_detailed("the word foo", list(WINDOWS))
    assert "s3cret" not in str(err.value) and server.base_url.split("//")[1] in str(err.value)
    server.no_digits = False
    _, details = sim.simulate_detailed("the word foo", list(WINDOWS))
    assert "s3cret" not in json.dumps(details)
