"""A local fake OpenAI-compatible server for throughput and fault tests (not a real model).

``POST /v1/chat/completions`` waits ``latency`` seconds (asyncio, so any number of calls wait at
once), then answers: a short explanation for an explainer prompt, or — for a request whose system
message starts with ``SIMULATE`` — a JSON list with one predicted activation per token of the JSON
list of tokens in the user message. With ``fault_every`` set, a fixed pattern of calls fails
instead: HTTP 429, HTTP 500, a timeout (no answer for ``hang_s``), a body that is not JSON, and
an answer with no words, in turn; the share of faulty calls is ``len(FAULTS) / fault_every``.
``GET /stats`` reports calls, faults by kind and the most calls that were in flight at once (a
call that hangs stops counting as in flight when it starts hanging: its caller has given up).

Run it alone: ``python -m bench.fake_openai --port 8911 --latency 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
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


class FakeOpenAI:
    def __init__(self, latency: float = 0.1, fault_every: int = 0, hang_s: float = 30.0):
        if fault_every and fault_every < len(FAULTS):
            raise ValueError(f"fault_every must be 0 or >= {len(FAULTS)}")
        self.latency, self.fault_every, self.hang_s = latency, fault_every, hang_s
        self.force: str | None = None
        """A fault (one of FAULTS) every call gets while set (tests)."""
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
        if scope["method"] == "GET" and scope["path"] == "/stats":
            return await _respond(send, 200, json.dumps(self.stats).encode())
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return await _respond(send, 404, b'{"error": {"message": "not found"}}')
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
                return await _respond(send, int(fault), json.dumps({"error": {"message": f"fake {fault}"}}).encode())
            if fault == "not-json":
                return await _respond(send, 200, b"<html>upstream proxy error</html>")
            req = json.loads(body)
            content, kind = _answer(req["messages"])
            s[kind] += 1
            if fault == "no-words":
                content = "!!! ???"
            prompt_tokens = sum(len(str(m.get("content", ""))) for m in req["messages"]) // 4
            out = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.get("model", "fake"),
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 6, "total_tokens": prompt_tokens + 6},
            }
            return await _respond(send, 200, json.dumps(out).encode())
        finally:
            if not fault_hung:
                s["in_flight"] -= 1


def _answer(messages: list[dict[str, Any]]) -> tuple[str, str]:
    system = str(messages[0].get("content", "")) if messages else ""
    last = str(messages[-1].get("content", "")) if messages else ""
    if system.startswith("SIMULATE"):
        tokens = json.loads(last)
        return json.dumps([float(len(t.strip()) % 5) for t in tokens]), "simulate"
    word = WORDS[int(hashlib.sha256(last.encode()).hexdigest(), 16) % len(WORDS)]
    return f"{word} in source code", "explain"


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServerThread:
    """The fake server in a background thread of this process (for tests)."""

    def __init__(self, app: FakeOpenAI, port: int):
        import uvicorn

        self.app, self.port = app, port
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                backlog=2048,
                timeout_keep_alive=30,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--fault-every", type=int, default=0)
    ap.add_argument("--hang", type=float, default=30.0)
    args = ap.parse_args()
    uvicorn.run(
        FakeOpenAI(args.latency, args.fault_every, args.hang),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        backlog=2048,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
