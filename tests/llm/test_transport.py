"""The HTTP seam as plain functions: every client runs over an injected ``httpx.MockTransport``
(no socket), and each endpoint answer becomes the right error with its ``status`` and ``retry_after``."""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
from builders.llm import RECORD, UNIT

from explainer.errors import PermanentLLMError, TransientLLMError
from explainer.llm.chat import (
    ChatAnswer,
    ChatClient,
    EndpointChat,
    LLMConfig,
    call_endpoint,
    chat_factory,
    invoke_chat,
    make_chat_model,
)
from explainer.llm.transport import openai_client, retry_after, translate

MESSAGES = [("system", "You explain neurons."), ("user", "What does it fire on?")]
CFG = LLMConfig(model="m", base_url="http://mock.test/v1", max_retries=0, timeout_s=5.0)


def _completion(text: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def _chat(handler, seen: list | None = None) -> EndpointChat:
    def record(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    chat = make_chat_model(CFG, "sk-test", http_client=http)
    assert isinstance(chat, EndpointChat)
    return chat


def test_an_answer_through_the_injected_transport():
    seen: list[httpx.Request] = []
    chat = _chat(lambda req: httpx.Response(200, json=_completion("the word foo")), seen)
    assert isinstance(chat, ChatClient) and chat.endpoint == CFG.base_url and chat.max_tokens == 48
    assert invoke_chat(chat, MESSAGES) == ChatAnswer("the word foo", 11, 3)
    (req,) = seen
    assert req.url == "http://mock.test/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    body = json.loads(req.content)
    assert body["model"] == "m" and body["temperature"] == 0.0 and body["max_tokens"] == 48
    assert body["messages"] == [{"role": r, "content": c} for r, c in MESSAGES]
    assert "seed" not in body  # greedy: no seed sent
    assert chat.describe() == CFG.public() and "key" not in json.dumps(chat.describe())


def test_a_sampled_config_sends_its_seed():
    from dataclasses import replace

    seen: list[httpx.Request] = []
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json=_completion("x")))
    )
    invoke_chat(make_chat_model(replace(CFG, temperature=0.8, seed=3), http_client=http), MESSAGES)
    body = json.loads(seen[0].content)
    assert body["temperature"] == 0.8 and body["seed"] == 3


def test_a_429_with_retry_after_is_transient_and_carries_both():
    chat = _chat(lambda req: httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow"}}))
    with pytest.raises(TransientLLMError, match="HTTP 429") as info:
        invoke_chat(chat, MESSAGES)
    assert info.value.status == 429 and info.value.retry_after == 7.0


def test_a_retry_after_given_as_an_http_date_is_read():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    chat = _chat(lambda req: httpx.Response(503, headers={"Retry-After": when}, json={"error": {"message": "busy"}}))
    with pytest.raises(TransientLLMError) as info:
        invoke_chat(chat, MESSAGES)
    assert info.value.status == 503 and 100 < info.value.retry_after <= 120
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(429)) is None


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors_are_transient_with_their_status(code):
    calls = []
    chat = _chat(lambda req: calls.append(req) or httpx.Response(code, json={"error": {"message": "down"}}))
    with pytest.raises(TransientLLMError, match=f"HTTP {code}") as info:
        invoke_chat(chat, MESSAGES)
    assert info.value.status == code and info.value.retry_after is None
    assert len(calls) == 1  # max_retries=0: the client itself does not retry


@pytest.mark.parametrize("code", [400, 401, 403, 404])
def test_client_errors_are_permanent_with_their_status(code):
    chat = _chat(lambda req: httpx.Response(code, json={"error": {"message": "no"}}))
    with pytest.raises(PermanentLLMError, match=f"HTTP {code}") as info:
        invoke_chat(chat, MESSAGES)
    assert info.value.status == code and info.value.retry_after is None


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, headers={"content-type": "application/json"}, content=b"<html>proxy error</html>"),
        httpx.Response(200, json={"unexpected": True}),
        httpx.Response(200, json={"choices": []}),
    ],
    ids=["not-json", "not-a-completion", "no-choices"],
)
def test_a_garbage_body_is_permanent(response):
    chat = _chat(lambda req: response)
    with pytest.raises(PermanentLLMError) as info:
        invoke_chat(chat, MESSAGES)
    assert info.value.status is None


def test_a_transport_timeout_and_a_dropped_connection_are_transient():
    def timeout(req):
        raise httpx.ReadTimeout("read timed out", request=req)

    def dropped(req):
        raise httpx.ConnectError("connection refused", request=req)

    for handler in (timeout, dropped):
        with pytest.raises(TransientLLMError) as info:
            invoke_chat(_chat(handler), MESSAGES)
        assert info.value.status is None


def test_call_endpoint_names_the_endpoint_without_credentials_and_keeps_the_data():
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "2"}, json={}))
    )
    client = openai_client("http://mock.test/v1", None, 5.0, max_retries=0, http_client=http)
    secret = "http://user:s3cret@mock.test/v1"
    with pytest.raises(TransientLLMError, match="simulator endpoint http://mock.test/v1: HTTP 429") as info:
        call_endpoint("simulator endpoint", secret, 10, lambda: client.completions.create(model="m", prompt="x"))
    assert "s3cret" not in str(info.value)
    assert (info.value.status, info.value.retry_after) == (429, 2.0)


def test_clients_are_pooled_per_endpoint_unless_a_transport_is_injected():
    a = openai_client("http://pool.test/v1", "k", 5.0)
    assert openai_client("http://pool.test/v1", "k", 5.0) is a
    assert openai_client("http://pool.test/v1", "other", 5.0) is not a
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=_completion("x"))))
    assert openai_client("http://pool.test/v1", "k", 5.0, http_client=http) is not a


def test_translate_passes_the_projects_own_errors_through():
    err = TransientLLMError("slow", status=429, retry_after=1.0)
    assert translate(err) is err
    assert isinstance(translate(TimeoutError("late")), TransientLLMError)
    assert isinstance(translate(ValueError("odd")), PermanentLLMError)


def test_the_explain_stage_takes_its_chat_client_from_the_caller(settings):
    """explain_stage over an injected transport: the answer is stored, an HTTP error is recorded
    with the status in its reason; no socket is opened."""
    from explainer.pipeline import stages as pipeline
    from explainer.pipeline.options import LabelOptions
    from explainer.runtime import get_store

    store = get_store(settings)
    store.start_collection("c1", "tiny", "layers.1.mlp", "test", "0" * 64, {"window": 16})
    store.finish_collection("c1", [RECORD], 100)
    answers = iter([httpx.Response(200, json=_completion("the identifier foo"))])
    http = httpx.Client(transport=httpx.MockTransport(lambda req: next(answers)))
    opts = LabelOptions(explainer=CFG)
    eid = pipeline.explain_stage(settings, "c1", UNIT, opts, chat_factory=chat_factory(http))
    row = store.get_explanation(eid)
    assert (row.status, row.text, row.prompt_tokens, row.completion_tokens) == ("ok", "the identifier foo", 11, 3)

    refused = httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(403, json={})))
    factory = partial(make_chat_model, http_client=refused)
    eid = pipeline.explain_stage(
        settings, "c1", UNIT, LabelOptions(explainer=CFG, retry_failed=True), chat_factory=factory
    )
    assert store.get_explanation(eid).status == "ok"  # an ok row is final: the endpoint is not asked
    other = LabelOptions(explainer=LLMConfig(model="m2", base_url=CFG.base_url, max_retries=0))
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", UNIT, other, chat_factory=factory))
    assert row.status == "failed" and row.error.startswith("PermanentLLMError: HTTP 403")


def test_the_endpoint_simulator_takes_an_injected_transport(settings):
    from dataclasses import replace

    from explainer.score.endpoint import endpoint_simulator, reset_detection
    from store.records import Window

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/chat/completions"):
            return httpx.Response(200, json=_completion("[0, 10]"))
        return httpx.Response(404, json={"error": {"message": "no such route"}})

    s = replace(settings, simulator_base_url="http://mock.test/v1", simulator_model="m", simulator_method="json")
    http = httpx.Client(transport=httpx.MockTransport(handler))
    sim = endpoint_simulator(s, http_client=http)
    assert sim is not endpoint_simulator(s, http_client=http)  # an injected transport is never shared
    reset_detection()
    try:
        w = Window("w", "top", "heldout", "d:w", "d", ("a", " foo"), (0.0, 4.0))
        preds, details = sim.simulate_detailed("the word foo", [w])
    finally:
        reset_detection()
    assert preds == [[0.0, 10.0]] and details["method"] == "json-answer"


def test_the_wire_body_is_exactly_the_request_body_built():
    """The chat request goes out as built (plain JSON, every key kept: no per-call rewrite by the client)."""
    seen: list[httpx.Request] = []
    chat = _chat(lambda req: httpx.Response(200, json=_completion("x")), seen)
    invoke_chat(chat, MESSAGES)
    assert (
        json.loads(seen[0].content)
        == chat.request_body(MESSAGES)
        == {
            "model": "m",
            "messages": [{"role": r, "content": c} for r, c in MESSAGES],
            "temperature": 0.0,
            "max_tokens": 48,
            "max_completion_tokens": 48,
        }
    )
