"""The one unit record the LLM tests explain, and a scripted chat client (no HTTP) for explain_unit.

Tests that need real HTTP use the one fake OpenAI-compatible server, ``bench/fake_openai.py``,
through the ``fake_openai`` and ``fake_endpoint`` fixtures of ``tests/conftest.py``.
"""

from typing import Any

from explainer.llm.chat import ChatAnswer, LLMConfig
from explainer.pipeline.options import LabelOptions
from store.records import UnitRecord, UnitStats, Window


class ScriptedChat:
    """A :class:`~explainer.llm.chat.ChatClient` that answers with the next scripted text and
    keeps the contents of the messages it was sent (``seen``). Reports no token counts."""

    endpoint = "local:scripted"
    max_tokens = 256

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.seen: list[list[str]] = []

    def complete(self, messages: list[tuple[str, str]]) -> ChatAnswer:
        self.seen.append([content for _, content in messages])
        return ChatAnswer(self.answers.pop(0), None, None)

    def describe(self) -> dict[str, Any]:
        return {"model": "scripted"}


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


def fake_label_options(server: Any, **kw: Any) -> LabelOptions:
    """Label options whose explainer is the fake server ``server`` (the ``server`` fixture), no retries,
    no baseline candidate."""
    return LabelOptions(
        explainer=LLMConfig(model="fake", base_url=server.base_url, max_retries=0, timeout_s=5),
        baseline_candidate=False,
        **kw,
    )
