"""A scripted OpenAI-compatible chat server over real HTTP, and the one unit record the LLM tests explain."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from store.records import UnitRecord, UnitStats, Window


class FakeOpenAI:
    """POST /v1/chat/completions answers with the next scripted response.

    Responses: ``("answer", text)``, ``("status", code)``, ``("raw", bytes)``, ``("sleep", seconds, text)``.
    An unscripted request gets HTTP 418, which the tests would notice.
    """

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake._lock:
                    fake.paths.append(self.path)
                    fake.requests.append(json.loads(body))
                    step = fake.script.pop(0) if fake.script else ("status", 418)
                try:
                    fake._respond(self, step)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @staticmethod
    def completion(text: str, prompt_tokens: int = 321, completion_tokens: int = 7) -> bytes:
        return json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        ).encode()

    def _respond(self, h: BaseHTTPRequestHandler, step: tuple) -> None:
        kind = step[0]
        if kind == "sleep":
            time.sleep(step[1])
            kind, step = "answer", ("answer", step[2])
        if kind == "answer":
            code, body = 200, self.completion(step[1])
        elif kind == "raw":
            code, body = 200, step[1]
        else:
            code = step[1]
            body = json.dumps({"error": {"message": f"scripted HTTP {code}", "type": "test", "code": None}}).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


UNIT = "tiny/layers.1.mlp/3"
RECORD = UnitRecord(
    UNIT,
    "tiny",
    "layers.1.mlp",
    3,
    UnitStats(max=4.0, mean=0.1, std=0.2, density=0.1, n_tokens=100),
    (
        Window("top-0", "top", "explain", "code:a.py", "code", ("def", " foo", "("), (0.0, 4.0, 1.0)),
        Window("top-1", "top", "heldout", "code:b.py", "code", ("def", " bar"), (0.0, 3.0)),
        Window("top-2", "top", "explain", "docs:c.md", "docs", ("call", " foo", "()"), (0.0, 3.5, 0.0)),
        Window("random-0", "random", "heldout", "docs:d.md", "docs", ("hello",), (0.0,)),
    ),
)
