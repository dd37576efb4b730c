"""A minimal simulator that asks an OpenAI-compatible endpoint for every held-out token's activation
in one chat call, for ``make bench-workers`` only (the bench's fake server answers it; a real model
would not). It goes through ``invoke_chat``, so the global rate limit applies to it as to explain
calls. Workers load it with ``celery -A workers worker -I bench.http_scorer``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from explainer.errors import ParseError
from explainer.llm.chat import LLMConfig, invoke_chat, make_chat_model
from explainer.score.base import ScoreResult, ScorerKind, simulation_result
from explainer.score.registry import register

NAME = "bench-http-simulation"
_clients: dict[str, Any] = {}
_lock = threading.Lock()


class HTTPSimulator:
    method = NAME
    kind: ScorerKind = "simulation"

    def __init__(self, base_url: str, model: str = "fake"):
        self.model_name, self.base_url = model, base_url
        with _lock:  # one client (and connection pool) per process
            if base_url not in _clients:
                _clients[base_url] = make_chat_model(
                    LLMConfig(model=model, base_url=base_url, max_retries=0, timeout_s=30, max_tokens=512)
                )
        self.chat = _clients[base_url]

    def simulate(self, explanation: str, windows: list[Any]) -> list[list[float]]:
        tokens = [t for w in windows for t in w.tokens]
        answer = invoke_chat(
            self.chat, [("system", f"SIMULATE activations for: {explanation}"), ("user", json.dumps(tokens))]
        )
        try:
            flat = [float(v) for v in json.loads(answer.text)]
        except (ValueError, TypeError) as exc:
            raise ParseError(f"the simulator's answer is not a list of numbers: {answer.text[:80]!r}") from exc
        if len(flat) != len(tokens):
            raise ParseError(f"the simulator predicted {len(flat)} values for {len(tokens)} tokens")
        out, i = [], 0
        for w in windows:
            out.append(flat[i : i + len(w.tokens)])
            i += len(w.tokens)
        return out

    def score(self, explanation: str, windows: list[Any]) -> ScoreResult:
        return simulation_result(self, self.simulate(explanation, windows), windows)


@register(NAME)
def _http(simulator_model: str, device: str, settings: Any = None) -> HTTPSimulator:
    base_url = os.environ.get("BENCH_SIMULATOR_URL")
    if not base_url:
        from explainer.errors import ConfigError

        raise ConfigError("BENCH_SIMULATOR_URL is not set (bench-http-simulation is for make bench-workers)")
    return HTTPSimulator(base_url)
