"""Simulation over an OpenAI-compatible endpoint ("all at once": one request per held-out window).

Three ways to read a prediction, tried in this order and remembered per endpoint:

``completions-echo`` (fidelity ``logprobs``)
    ``POST /v1/completions`` with ``echo=true, logprobs=K, max_tokens=1``: the server returns the
    top-K logprobs at every prompt position (vLLM, llama-cpp-python). The prompt is the local
    simulator's (``prompts/simulate.yaml``) with ``echo_placeholder`` (a digit) after each TAB,
    so that digits stay among the top K; at the position right after each token's TAB the
    probabilities of "0"…"10" give the expected activation. ``max_tokens`` is 1, not 0: vLLM
    rejects 0 and llama-cpp-python reads 0 as "no limit"; the generated token is ignored.
``chat-logprobs`` (fidelity ``logprobs``)
    ``POST /v1/chat/completions`` with ``logprobs=true, top_logprobs=K``: the model answers a JSON
    list of integers; at each number's first token the alternatives give the expected value.
``json-answer`` (fidelity ``low``)
    the same chat request without logprobs: the integers themselves are the predictions.

The echo reading is neuron-explainer's (``parse_top_logprobs``): only the exact tokens "0"…"10"
count, their probabilities renormalised over them. Tokenizers that split "10" into "1" "0": in the
chat answer, the distribution after a "1" says how likely a "0" follows, which splits P("1") into 1
and 10; with echo there is no such position, so there the expectation runs over 0–9 (recorded as
``ten: "split-0-9"``). That is not only a change of scale: a token the model would rate 10 is read
as 1, which lowers the correlation (``tests/score/test_scoring_parity.py`` shows a 4-token case). An endpoint that gives no usable prediction fails with a
:class:`~explainer.errors.ParseError` (or an LLM error) that names it.
"""

from __future__ import annotations

import json
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from explainer.errors import ConfigError, ParseError, PermanentLLMError
from explainer.llm.prompts import PromptTemplate, load_template
from explainer.llm.transport import openai_client
from explainer.score.base import ScoreResult, ScorerKind, simulation_result
from explainer.score.logits import display_token, simulation_text
from store.records import Window

if TYPE_CHECKING:
    import httpx
    import openai

    from explainer.settings import Settings

__all__ = [
    "RemoteSimulator",
    "endpoint_simulator",
    "expected_value",
    "read_echo",
    "read_chat_logprobs",
    "read_json_answer",
    "METHODS",
]

METHODS = {"completions-echo": "logprobs", "chat-logprobs": "logprobs", "json-answer": "low"}
"""Method → fidelity, in the order ``auto`` tries them."""
_ORDER = {
    "auto": ("completions-echo", "chat-logprobs", "json-answer"),
    "logprobs": ("completions-echo", "chat-logprobs"),
    "completions": ("completions-echo",),
    "chat": ("chat-logprobs",),
    "json": ("json-answer",),
}
_VALUES = {str(v): v for v in range(11)}
MAX_MISSING_SHARE = 0.5
"""A window where more than this share of tokens has no digit among the top logprobs is unusable."""

_detected: dict[tuple[str, str, str], str] = {}
_simulators: dict[tuple[Any, ...], RemoteSimulator] = {}
_lock = threading.Lock()


class _Unsupported(Exception):
    """This endpoint does not offer the method tried; the next one is tried (internal)."""


def endpoint_simulator(settings: Settings, http_client: httpx.Client | None = None) -> RemoteSimulator:
    """The process's simulator for the endpoint ``settings`` names (``EXPLAINER_SIMULATOR_*``).
    With ``http_client`` (e.g. over an ``httpx.MockTransport``) a new simulator over that
    transport, not shared."""
    if not settings.simulator_base_url:
        raise ConfigError(
            "the simulation-endpoint scorer needs EXPLAINER_SIMULATOR_BASE_URL (or EXPLAINER_LLM_BASE_URL)"
        )
    key = (
        settings.simulator_base_url,
        settings.simulator_model,
        settings.simulator_method,
        settings.simulator_api_key,
        settings.llm_timeout_s,
    )
    with _lock:
        if http_client is None and key in _simulators:
            return _simulators[key]
    client = openai_client(
        settings.simulator_base_url, settings.simulator_api_key, settings.llm_timeout_s, http_client=http_client
    )
    sim = RemoteSimulator(client, settings.simulator_base_url, settings.simulator_model, settings.simulator_method)
    if http_client is not None:
        return sim
    with _lock:
        return _simulators.setdefault(key, sim)


# -- reading probabilities ------------------------------------------------------------------


def _digit_probs(alternatives: dict[str, float], prefix: str = "") -> dict[int, float]:
    """Probability of each value 0–10 among ``alternatives`` (token → logprob) that start with
    ``prefix`` and continue with a number."""
    probs: dict[int, float] = {}
    for tok, lp in alternatives.items():
        if not tok.startswith(prefix) or lp is None:
            continue
        rest = tok[len(prefix) :].strip()
        m = re.match(r"\d+", rest)
        if m and m.group() in _VALUES and (len(rest) == m.end() or not rest[m.end()].isdigit()):
            probs[_VALUES[m.group()]] = probs.get(_VALUES[m.group()], 0.0) + math.exp(lp)
    return probs


def _exact_digit_probs(alternatives: dict[str, float]) -> dict[int, float]:
    """Probability of each value among the tokens that are exactly "0"…"10" (neuron-explainer's
    rule: " 3" or "3\n" do not count)."""
    return {_VALUES[t]: math.exp(lp) for t, lp in alternatives.items() if t in _VALUES and lp is not None}


def expected_value(probs: dict[int, float], p_zero_after_one: float | None = None) -> float | None:
    """Expected value over 0–10; ``p_zero_after_one`` (P("0" | "1") for tokenizers that split
    "10") moves that share of P("1") to 10. ``None`` when no value has any probability."""
    probs = dict(probs)
    if p_zero_after_one is not None and 1 in probs and 10 not in probs:
        p10 = probs[1] * min(1.0, max(0.0, p_zero_after_one))
        probs[1] -= p10
        probs[10] = p10
    total = sum(probs.values())
    if total <= 0:
        return None
    return sum(v * p for v, p in probs.items()) / total


def read_echo(response: dict[str, Any], offsets: list[int]) -> tuple[list[float | None], dict[str, Any]]:
    """Predictions at the character ``offsets`` of an echoed completions response (``None``
    where no digit is among the top logprobs). Raises :class:`_Unsupported` without prompt logprobs."""
    choices = response.get("choices") or []
    lp = (choices[0].get("logprobs") if choices else None) or {}
    tokens, starts, tops = lp.get("tokens"), lp.get("text_offset"), lp.get("top_logprobs")
    if not tokens or not starts or not tops or len(starts) != len(tops):
        raise _Unsupported("the completions response has no prompt logprobs (echo)")
    at: dict[int, int] = {}
    for i, o in enumerate(starts):
        at.setdefault(o, i)
    ten_one_token = any("10" == t.strip() for t in tokens) or any(
        "10" in {k.strip() for k in (top or {})} for top in tops
    )
    out: list[float | None] = []
    for o in offsets:
        pos = at.get(o)
        out.append(None if pos is None or not tops[pos] else expected_value(_exact_digit_probs(tops[pos])))
    return out, {"ten": "one-token" if ten_one_token else "split-0-9"}


def read_chat_logprobs(response: dict[str, Any], n: int) -> tuple[list[float | None], dict[str, Any]]:
    """Predictions from the logprobs of a chat answer that lists ``n`` integers."""
    choices = response.get("choices") or []
    content = ((choices[0].get("logprobs") or {}).get("content") if choices else None) or []
    if not content or not any(c.get("top_logprobs") for c in content):
        raise _Unsupported("the chat response has no top_logprobs")
    starts, text = [], ""
    for c in content:
        starts.append(len(text))
        text += c.get("token") or ""
    first = text.find("[")
    numbers = list(re.finditer(r"\d+", text[first + 1 :] if first >= 0 else text))
    shift = first + 1 if first >= 0 else 0
    if len(numbers) < n:
        raise ParseError(f"the answer lists {len(numbers)} numbers for {n} tokens: {text[:120]!r}")
    out: list[float | None] = []
    split_seen = False
    for m in numbers[:n]:
        pos = m.start() + shift
        i = max(k for k, s in enumerate(starts) if s <= pos)
        prefix = text[starts[i] : pos]
        alts = {a["token"]: a.get("logprob") for a in content[i].get("top_logprobs") or []}
        alts.setdefault(content[i]["token"], content[i].get("logprob"))
        probs = _digit_probs(alts, prefix)
        p0 = None
        chosen = content[i]["token"][len(prefix) :]
        if 1 in probs and 10 not in probs and chosen.strip() == "1" and i + 1 < len(content):
            nxt = {a["token"]: a.get("logprob") for a in content[i + 1].get("top_logprobs") or []}
            nxt.setdefault(content[i + 1]["token"], content[i + 1].get("logprob"))
            p0 = sum(math.exp(lp) for t, lp in nxt.items() if lp is not None and t.startswith("0"))
            split_seen = True
        out.append(expected_value(probs, p0))
    return out, {"ten": "split-resolved" if split_seen else "no-split-seen"}


def read_json_answer(text: str, n: int) -> list[float]:
    """The integers of a JSON-list answer, clipped to 0–10; ParseError unless there are ``n``."""
    m = re.search(r"\[[^\[\]]*\]", text or "")
    if not m:
        raise ParseError(f"the answer is not a JSON list: {(text or '')[:120]!r}")
    try:
        values = json.loads(m.group())
    except ValueError as exc:
        raise ParseError(f"the answer is not a JSON list: {m.group()[:120]!r}") from exc
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ParseError(f"the answer's list holds non-numbers: {m.group()[:120]!r}")
    if len(values) != n:
        raise ParseError(f"the answer lists {len(values)} values for {n} tokens")
    return [float(min(10, max(0, v))) for v in values]


# -- the simulator ----------------------------------------------------------------------------


class RemoteSimulator:
    """Simulator over an OpenAI-compatible endpoint; windows of one call run concurrently."""

    method = "simulation-endpoint"
    kind: ScorerKind = "simulation"

    def __init__(
        self,
        client: openai.OpenAI,
        base_url: str,
        model: str,
        mode: str = "auto",
        top_logprobs: int = 10,
        template: PromptTemplate | None = None,
        parallel: int = 8,
    ):
        if mode not in _ORDER:
            raise ConfigError(f"unknown simulator method {mode!r}; known: {', '.join(_ORDER)}")
        from explainer.provenance import clean_url

        self.client, self.base_url, self.model, self.mode = client, base_url, model, mode
        self.shown_url = clean_url(base_url)
        """The endpoint as errors and details name it: no credentials or query string."""
        self.top_logprobs = top_logprobs
        self.template = template or load_template("simulate")
        self._pool = ThreadPoolExecutor(max(1, parallel), thread_name_prefix="simulate")

    @property
    def detected(self) -> str | None:
        """The method this endpoint was found to support (cached per endpoint and model)."""
        return _detected.get((self.base_url, self.model, self.mode))

    @property
    def model_name(self) -> str:
        return f"{self.model} [{self.detected or 'undetected'}]"

    def _fail(self, message: str) -> ParseError:
        return ParseError(f"simulator endpoint {self.shown_url} (model {self.model}): {message}")

    def _post(self, kind: str, chars: int, max_tokens: int, **kw: Any) -> dict[str, Any]:
        from explainer.llm.chat import call_endpoint

        api = self.client.completions if kind == "completions" else self.client.chat.completions
        return call_endpoint(
            "simulator endpoint",
            self.base_url,
            chars // 4 + max_tokens,
            lambda: api.create(model=self.model, temperature=0, max_tokens=max_tokens, **kw),
        )

    def continuation_logprob(self, prefix: str, continuation: str) -> float:
        """log P(continuation | prefix) under the endpoint's model: the prompt ``prefix + continuation``
        echoed with its tokens' logprobs (``/v1/completions``), summed over the tokens that start
        inside ``continuation`` (what the ``intervention-endpoint`` scorer asks)."""
        prompt = prefix + continuation
        resp = self._post("completions", len(prompt), 1, prompt=prompt, echo=True, logprobs=1)
        choices = resp.get("choices") or []
        lp = (choices[0].get("logprobs") if choices else None) or {}
        starts, values = lp.get("text_offset"), lp.get("token_logprobs")
        if not starts or not values or len(starts) != len(values):
            raise self._fail("the completions response has no prompt logprobs (echo): it cannot judge a text")
        inside = [v for o, v in zip(starts, values) if len(prefix) <= o < len(prompt)]
        if not inside or any(v is None or not math.isfinite(v) for v in inside):
            raise self._fail(f"no usable logprobs for the {len(inside)} token(s) of the judged text")
        return float(sum(inside))

    def _chat_messages(self, explanation: str, tokens: tuple[str, ...]) -> list[dict[str, str]]:
        ex = self.template["example"]
        shown = [display_token(t) for t in ex["tokens"]]

        def user(expl: str, toks: list[str]) -> str:
            return self.template.render("chat_user", explanation=expl, tokens=toks, n=len(toks))

        return [
            {"role": "system", "content": self.template["chat_system"]},
            {"role": "user", "content": user(ex["explanation"], shown)},
            {"role": "assistant", "content": json.dumps([int(a) for a in ex["activations"]])},
            {"role": "user", "content": user(explanation, [display_token(t) for t in tokens])},
        ]

    def _window(self, method: str, explanation: str, window: Window) -> tuple[list[float], dict[str, Any]]:
        n = len(window.tokens)
        if method == "completions-echo":
            prompt, offsets = simulation_text(self.template, explanation, window.tokens, "echo_placeholder")
            resp = self._post("completions", len(prompt), 1, prompt=prompt, echo=True, logprobs=self.top_logprobs)
            preds, info = read_echo(resp, offsets)
        else:
            messages = self._chat_messages(explanation, window.tokens)
            chars, budget = sum(len(m["content"]) for m in messages), 4 * n + 16
            if method == "chat-logprobs":
                resp = self._post(
                    "chat", chars, budget, messages=messages, logprobs=True, top_logprobs=self.top_logprobs
                )
                preds, info = read_chat_logprobs(resp, n)
            else:
                resp = self._post("chat", chars, budget, messages=messages)
                choices = resp.get("choices") or []
                text = ((choices[0].get("message") or {}).get("content") if choices else None) or ""
                return read_json_answer(text, n), {"ten": "answer"}
        missing = sum(p is None for p in preds)
        if missing > MAX_MISSING_SHARE * n:
            raise _Unsupported(f"no digit among the top-{self.top_logprobs} logprobs at {missing} of {n} tokens")
        return [0.0 if p is None else p for p in preds], {**info, "missing": missing}

    def _detect(self, explanation: str, window: Window) -> tuple[str, list[float], dict[str, Any]]:
        reasons = []
        for method in _ORDER[self.mode]:
            try:
                preds, info = self._window(method, explanation, window)
            except _Unsupported as exc:
                reasons.append(f"{method}: {exc}")
                continue
            except (PermanentLLMError, ParseError) as exc:  # e.g. 404/400: the server lacks this route or option
                if isinstance(exc, PermanentLLMError) and exc.status in (401, 403):
                    raise  # bad credentials are no reason to try another method
                reasons.append(f"{method}: {exc}")
                continue
            with _lock:
                _detected[(self.base_url, self.model, self.mode)] = method
            return method, preds, info
        raise self._fail("no usable predictions (" + "; ".join(reasons) + ")")

    def _one(self, method: str, explanation: str, window: Window) -> tuple[list[float], dict[str, Any]]:
        try:
            return self._window(method, explanation, window)
        except _Unsupported as exc:
            raise self._fail(f"{method} returned no usable logprobs: {exc}") from None
        except ParseError as exc:
            raise self._fail(f"{method}: {exc}") from exc

    def simulate_detailed(self, explanation: str, windows: list[Window]) -> tuple[list[list[float]], dict[str, Any]]:
        """Predictions per window and how they were read (method, fidelity, ten, missing positions)."""
        if not windows:
            return [], {}
        method, results, todo = self.detected, [], list(windows)
        if method is None:
            method, preds, info = self._detect(explanation, windows[0])
            results, todo = [(preds, info)], todo[1:]
        results += list(self._pool.map(lambda w: self._one(method, explanation, w), todo))
        tens = sorted({str(r[1]["ten"]) for r in results if r[1].get("ten")})
        tens = ["split-resolved"] if "split-resolved" in tens else tens
        details = {
            "method": method,
            "fidelity": METHODS[method],
            "endpoint": self.shown_url,
            "model": self.model,
            "top_logprobs": self.top_logprobs if METHODS[method] == "logprobs" else None,
            "ten": tens[0] if len(tens) == 1 else tens,
            "requests": len(windows),
            "missing_positions": sum(r[1].get("missing", 0) for r in results),
            "prompt": self.template.key,
        }
        return [r[0] for r in results], details

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        """Expected activation (0–10 scale) for every token of every window."""
        return self.simulate_detailed(explanation, windows)[0]

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        pred, details = self.simulate_detailed(explanation, windows)
        return simulation_result(self, pred, windows, details, model=f"{self.model} [{details['method']}]")


def reset_detection() -> None:
    """Forget which methods endpoints support (tests; a server that changed)."""
    with _lock:
        _detected.clear()
