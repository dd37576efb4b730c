"""The typed seams: every scorer satisfies the Scorer protocol; LLM errors carry status and
Retry-After from the HTTP answer (an httpx.MockTransport, no server)."""

from __future__ import annotations

import inspect

import httpx
import pytest

from explainer.errors import PermanentLLMError, TransientLLMError
from explainer.score.base import Scorer, Simulator
from explainer.score.registry import scorer_names
from store.records import Window

WINDOW = Window("w0", "top", "heldout", "d:w0", "d", ("a",), (1.0,))


@pytest.mark.parametrize(
    "name",
    [
        "simulation-logits",
        "simulation-embedding",
        "simulation-context",
        "simulation-trained",
        "detection",
        "embedding",
        "simulation-endpoint",
        "intervention",
        "intervention-embedding",
    ],
)
def test_every_registered_scorer_satisfies_the_protocol(name, settings):
    from dataclasses import replace

    from explainer.score.registry import make_scorer

    assert name in scorer_names()
    s = replace(settings, simulator_base_url="http://127.0.0.1:9/v1", simulator_model="m")
    scorer = make_scorer(name, settings=s)
    # getattr_static: a property (e.g. a local model's name) is not evaluated, so nothing loads
    for member in ("method", "kind", "model_name", "score"):
        inspect.getattr_static(scorer, member)
    assert scorer.kind in ("simulation", "window") and scorer.method
    if scorer.kind == "simulation":
        inspect.getattr_static(scorer, "simulate")
    assert callable(scorer.score)
    assert {"method", "kind", "model_name", "score"} <= set(dir(Scorer)) | set(Scorer.__annotations__)
    assert "simulate" in dir(Simulator)


def _detector(handler):
    from explainer.llm.transport import openai_client
    from explainer.score.detection import RemoteDetector

    http = httpx.Client(transport=httpx.MockTransport(handler), timeout=5.0)
    return RemoteDetector(openai_client("http://mock.test/v1", None, 5.0, max_retries=0, http_client=http), "m")


def test_a_429_carries_its_status_and_retry_after():
    det = _detector(lambda req: httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow"}}))
    with pytest.raises(TransientLLMError) as info:
        det.score("x", [WINDOW])
    assert info.value.status == 429 and info.value.retry_after == 7.0


def test_a_400_on_logprobs_makes_detection_ask_plainly():
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(req.content)
        seen.append("logprobs" in body)
        if body.get("logprobs"):
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return httpx.Response(
            200,
            json={
                "id": "1",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "yes"}}],
            },
        )

    det = _detector(handler)
    assert det._ask("x", WINDOW) == (1.0, False)
    assert seen == [True, False]


def test_a_401_is_permanent_with_its_status():
    det = _detector(lambda req: httpx.Response(401, json={"error": {"message": "bad key"}}))
    det._no_logprobs.add(det.base_url)
    try:
        with pytest.raises(PermanentLLMError) as info:
            det._ask("x", WINDOW)
    finally:
        det._no_logprobs.discard(det.base_url)
    assert info.value.status == 401 and info.value.retry_after is None


def test_llm_errors_pickle_with_their_data():
    import pickle

    err = pickle.loads(pickle.dumps(TransientLLMError("slow", status=429, retry_after=2.5)))
    assert (type(err), str(err), err.status, err.retry_after) == (TransientLLMError, "slow", 429, 2.5)


def test_evaluate_steers_the_unit_only_with_a_unit_scorer_and_a_unit_id(settings):
    """Dispatch by protocol: an intervention scorer is a UnitScorer (checked without loading a model);
    the window-level and simulator scorers are not, and ``evaluate`` scores their windows."""
    from dataclasses import replace

    from explainer.score.base import ScoreResult, UnitScorer
    from explainer.score.registry import evaluate, make_scorer

    s = replace(settings, simulator_base_url="http://127.0.0.1:9/v1", simulator_model="m")
    assert isinstance(make_scorer("intervention", settings=s), UnitScorer)
    assert not any(isinstance(make_scorer(n, settings=s), UnitScorer) for n in ("simulation-logits", "detection"))

    def result(how: str) -> ScoreResult:
        return ScoreResult(1.0, None, None, {}, 0, "fake", {"how": how})

    class Steering:
        method, kind, model_name = "fake-steer", "window", "fake"

        def score(self, explanation, windows):
            return result("windows")

        def score_unit(self, explanation, unit_id):
            return result(f"steered {unit_id}")

    class Windows(Steering):
        score_unit = None  # type: ignore[assignment]  # a scorer without the unit-level method

    assert evaluate(Steering(), "x", [WINDOW], unit_id="m/l/1").details["how"] == "steered m/l/1"
    assert evaluate(Steering(), "x", [WINDOW]).details["how"] == "windows"  # no unit: its windows
    assert evaluate(Windows(), "x", [WINDOW], unit_id="m/l/1").details["how"] == "windows"
