"""The project's one fake OpenAI-compatible server (not a real model), for tests and ``make bench-workers``.

An ASGI app (:class:`FakeOpenAI`) served by uvicorn, in a thread of the caller (:class:`ServerThread`)
or alone (``python -m bench.fake_openai --port 8911 --latency 0.1``). Every request waits ``latency``
seconds (asyncio, so any number of calls wait at once). What it answers, in this order:

1. **A script** (tests): while ``script`` holds steps, each request takes the next —
   ``("answer", text)`` (usage: :data:`SCRIPTED_USAGE`), ``("status", code)`` or
   ``("status", code, headers)``, ``("raw", body_bytes)``, ``("sleep", seconds, text)``. With
   ``strict`` set, a request with nothing scripted gets HTTP 418, which a test would notice.
2. **A canned model** (:meth:`FakeOpenAI.route`), which knows one thing: a token containing ``foo``
   fires (activation 10), any other does not.

   - ``POST /v1/completions`` with ``echo`` and ``logprobs``: the prompt's tokens with the top
     logprobs of a digit after each TAB (the endpoint simulator's ``completions-echo``).
   - ``POST /v1/chat/completions``: a detection question ("Does the neuron fire") is answered
     yes/no; a simulation prompt (tokens between ``<start>`` and ``<end>``) a JSON list of 0/10; a
     system message starting ``SIMULATE`` (``bench.http_scorer``) one value per token of the
     user's JSON list; anything else a short explanation (one of :data:`WORDS`). Chat answers
     carry ``logprobs.content`` with ``top_logprobs`` when asked for them.

   Switches (constructor keywords or attributes): ``completions`` (False → 404 on
   ``/v1/completions``), ``echo_logprobs`` / ``chat_logprobs`` (False → answers without logprobs),
   ``split_digits`` (one token per digit, like SmolLM2's tokenizer that splits "10"), ``answer``
   (a fixed chat text), ``no_digits`` (logprobs whose alternatives hold no digit).

3. **Faults** (the bench): with ``fault_every`` set, a fixed pattern of calls fails instead — HTTP
   429, HTTP 500, no answer for ``hang_s`` seconds, a body that is not JSON, an answer with no
   words, in turn (the share of faulty calls is ``len(FAULTS) / fault_every``); ``force`` makes
   every call get one fault.

Every request's path and JSON body are kept in ``paths`` and ``requests``; ``GET /stats`` reports
calls, faults by kind and the most calls in flight at once (a call that hangs stops counting as in
flight when it starts hanging: its caller has given up).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import re
import threading
import time
from typing import Any

FAULTS = ("429", "500", "timeout", "not-json", "no-words")
WORDS = (
    "commas",
    "closing brackets",
    "the word return",
    "numbers",
    "legal terms",
    "function names",
    "plural nouns",
    "quotation marks",
    "indentation",
    "import statements",
)
SCRIPTED_USAGE = (321, 7)
"""Prompt and completion tokens a scripted answer reports."""
LN = math.log


class FakeOpenAI:
    def __init__(
        self,
        latency: float = 0.1,
        fault_every: int = 0,
        hang_s: float = 30.0,
        *,
        strict: bool = False,
        **switches: Any,
    ):
        if fault_every and fault_every < len(FAULTS):
            raise ValueError(f"fault_every must be 0 or >= {len(FAULTS)}")
        self.latency, self.fault_every, self.hang_s, self.strict = latency, fault_every, hang_s, strict
        self.force: str | None = None
        """A fault (one of FAULTS) every call gets while set (tests)."""
        self.script: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.completions, self.echo_logprobs, self.chat_logprobs = True, True, True
        self.split_digits, self.no_digits = False, False
        self.answer: str | None = None
        unknown = set(switches) - set(vars(self))
        if unknown:
            raise TypeError(f"unknown switches: {sorted(unknown)}")
        self.__dict__.update(switches)
        self.base_url = ""
        """Set by :class:`ServerThread` once the server listens."""
        self._count = itertools.count()
        self.stats: dict[str, Any] = {
            "calls": 0,
            "in_flight": 0,
            "max_in_flight": 0,
            "faults": {f: 0 for f in FAULTS},
            "explain": 0,
            "simulate": 0,
        }

    def _fault(self, n: int) -> str | None:
        if self.force:
            return self.force
        if not self.fault_every:
            return None
        slot = n % self.fault_every
        step = self.fault_every // len(FAULTS)
        return FAULTS[slot // step] if slot % step == step - 1 and slot // step < len(FAULTS) else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path == "/stats":
            return await _respond(send, 200, json.dumps(self.stats).encode())
        if scope["method"] != "POST" or not path.endswith("/completions"):
            return await _respond(send, 404, b'{"error": {"message": "not found"}}')
        req = json.loads(body or b"{}")
        self.paths.append(path)
        self.requests.append(req)
        s = self.stats
        s["calls"] += 1
        s["in_flight"] += 1
        s["max_in_flight"] = max(s["max_in_flight"], s["in_flight"])
        fault_hung = False
        try:
            fault = self._fault(next(self._count))
            if fault:
                s["faults"][fault] += 1
            if fault == "timeout":  # the caller gives up: no longer counted in flight
                s["in_flight"] -= 1
                fault_hung = True
                await asyncio.sleep(self.hang_s)
            await asyncio.sleep(self.latency)
            if fault in ("429", "500"):
                return await _respond(send, int(fault), _error(f"fake {fault}"))
            if fault == "not-json":
                return await _respond(send, 200, b"<html>upstream proxy error</html>")
            if self.script:
                return await self._scripted(send, self.script.pop(0))
            if self.strict:
                return await _respond(send, 418, _error("nothing scripted"))
            code, out = self.route(path, req)
            if fault == "no-words" and out.get("choices"):
                out["choices"][0]["message"]["content"] = "!!! ???"
            return await _respond(send, code, json.dumps(out).encode())
        finally:
            if not fault_hung:
                s["in_flight"] -= 1

    async def _scripted(self, send: Any, step: tuple[Any, ...]) -> None:
        kind = step[0]
        if kind == "sleep":
            await asyncio.sleep(step[1])
            kind, step = "answer", ("answer", step[2])
        if kind == "answer":
            text = json.dumps(_chat_completion("fake", step[1], None, *SCRIPTED_USAGE)).encode()
            return await _respond(send, 200, text)
        if kind == "raw":
            return await _respond(send, 200, step[1])
        if kind == "status":
            headers = step[2] if len(step) > 2 else {}
            return await _respond(send, step[1], _error(f"scripted HTTP {step[1]}"), headers)
        raise ValueError(f"unknown script step {step!r}")

    # -- the canned model ----------------------------------------------------------------------

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer for a request nothing scripted (tests may replace it)."""
        if not path.endswith("/chat/completions"):
            if not self.completions:
                return 404, {"error": {"message": "no such route", "type": "not_found"}}
            return 200, self.echo(body)
        return 200, self.chat(body)

    def tokenize(self, text: str) -> list[str]:
        digits = r"\d" if self.split_digits else r"\d+"
        return re.findall(digits + r"|[A-Za-z]+|\s|[^\sA-Za-z\d]", text)

    def digit_dist(self, fires: bool) -> dict[str, float]:
        if self.no_digits:
            return {"unknown": LN(0.9), "x": LN(0.1)}
        if fires:
            return {"1": LN(0.9), "0": LN(0.1)} if self.split_digits else {"10": LN(0.9), "0": LN(0.1)}
        return {"0": LN(0.8), "1": LN(0.2)}

    def judge_echo(self, body: dict[str, Any]) -> dict[str, Any]:
        """The echoed prompt with each token's log-probability (``logprobs`` 1: a judge asking
        log P(text | prefix)): a word already seen in the prompt is likely (0.9), any other is not
        (0.1) — enough for an explanation to fit the text that holds its words better."""
        prompt = body["prompt"]
        tokens, offsets, values, seen, pos = self.tokenize(prompt), [], [], set(), 0
        for t in tokens:
            offsets.append(pos)
            values.append(None if not pos else LN(0.1) if t.strip() and t.lower() not in seen else LN(0.9))
            if t.strip():
                seen.add(t.lower())
            pos += len(t)
        lp = {"tokens": tokens + ["\n"], "text_offset": offsets + [pos], "token_logprobs": values + [LN(0.5)]}
        lp["top_logprobs"] = [None] + [{t: v} for t, v in zip(tokens[1:] + ["\n"], values[1:] + [LN(0.5)])]
        choice = {
            "index": 0,
            "text": prompt + "\n",
            "finish_reason": "length",
            "logprobs": lp if self.echo_logprobs else None,
        }
        return {"id": "cmpl", "object": "text_completion", "created": 1, "model": body["model"], "choices": [choice]}

    def echo(self, body: dict[str, Any]) -> dict[str, Any]:
        """The echoed prompt with, after each TAB, the logprobs of the digit that follows."""
        prompt = body["prompt"]
        if body.get("logprobs") == 1:
            return self.judge_echo(body)
        assert body["echo"] is True and body["max_tokens"] == 1 and body["logprobs"] == 10
        tokens = self.tokenize(prompt)
        offsets: list[int] = []
        tops: list[dict[str, float] | None] = []
        pos = 0
        for t in tokens:
            offsets.append(pos)
            if pos and prompt[pos - 1] == "\t":
                line = prompt[prompt.rfind("\n", 0, pos - 1) + 1 : pos - 1]
                tops.append(self.digit_dist("foo" in line))
            else:
                tops.append({t: LN(0.5)} if pos else None)
            pos += len(t)
        lp = {
            "tokens": tokens + ["\n"],
            "text_offset": offsets + [pos],
            "token_logprobs": [None] * (len(tokens) + 1),
            "top_logprobs": tops + [{"\n": LN(0.9)}],
        }
        return {
            "id": "cmpl",
            "object": "text_completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "text": prompt + "\n",
                    "finish_reason": "length",
                    "logprobs": lp if self.echo_logprobs else None,
                }
            ],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1, "total_tokens": len(tokens) + 1},
        }

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or [{}]
        system, user = str(messages[0].get("content", "")), str(messages[-1].get("content", ""))
        content: list[dict[str, Any]] = []
        if system.startswith("SIMULATE"):  # bench.http_scorer: one value per token of a JSON list
            text = json.dumps([float(len(t.strip()) % 5) for t in json.loads(user)])
            self.stats["simulate"] += 1
        elif "Does the neuron fire" in user:  # detection
            fires = "foo" in user.split("Excerpt:", 1)[1]
            word, other = ("yes", "no") if fires else ("no", "yes")
            text = word
            content = [{"token": word, "logprob": LN(0.8), "top_logprobs": [_alt(word, 0.8), _alt(other, 0.2)]}]
        elif "<start>\n" in user:  # simulation: a JSON list of activations
            listed = user.split("<start>\n", 1)[1].split("<end>", 1)[0].split("\n")[:-1]
            text = json.dumps([10 if "foo" in t else 0 for t in listed])
            content = self._list_logprobs(self.answer if self.answer is not None else text)
        else:  # an explainer prompt
            text = f"{WORDS[int(hashlib.sha256(user.encode()).hexdigest(), 16) % len(WORDS)]} in source code"
            self.stats["explain"] += 1
        text = self.answer if self.answer is not None else text
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
        lp = {"content": content} if body.get("logprobs") and self.chat_logprobs and content else None
        return _chat_completion(body.get("model", "fake"), text, lp, prompt_tokens, 6)

    def _list_logprobs(self, text: str) -> list[dict[str, Any]]:
        """Per-token logprobs of a JSON list answer: each number's first token has the digit
        distribution (a split "10" is "1" then "0")."""
        content: list[dict[str, Any]] = []
        for t in self.tokenize(text):
            if t.isdigit() and (not content or not content[-1]["token"].isdigit()):
                chosen = t[0] if self.split_digits else t
                dist = self.digit_dist(t.startswith("1"))
                content.append(
                    {
                        "token": chosen,
                        "logprob": dist.get(chosen, LN(0.5)),
                        "top_logprobs": [{"token": k, "logprob": v} for k, v in dist.items()],
                    }
                )
            elif t.isdigit():  # the "0" after a "1" when digits are split
                content.append({"token": t, "logprob": LN(0.8), "top_logprobs": [_alt("0", 0.8), _alt(",", 0.2)]})
            else:
                content.append({"token": t, "logprob": LN(0.99), "top_logprobs": [_alt(t, 0.99)]})
        return content


def _alt(token: str, p: float) -> dict[str, Any]:
    return {"token": token, "logprob": LN(p)}


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "test", "code": None}}).encode()


def _chat_completion(
    model: str, text: str, logprobs: dict[str, Any] | None, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def _respond(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _config(app: FakeOpenAI, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", backlog=2048, timeout_keep_alive=30
    )


class ServerThread:
    """The fake server in a background thread of this process (tests); ``port=0`` picks a free one."""

    def __init__(self, app: FakeOpenAI, port: int = 0):
        import uvicorn

        self.app, self.port = app, port
        self.server = uvicorn.Server(_config(app, port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.app.base_url = self.base_url
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--fault-every", type=int, default=0)
    ap.add_argument("--hang", type=float, default=30.0)
    args = ap.parse_args()
    uvicorn.Server(_config(FakeOpenAI(args.latency, args.fault_every, args.hang), args.port)).run()


if __name__ == "__main__":
    main()
