"""Explain: render a unit's top windows into a prompt and parse the LLM's short description."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from .errors import ParseError
from .llm import invoke_chat
from .prompts import PromptTemplate
from .records import UnitRecord, Window, scale_0_10

MAX_EXPLANATION_CHARS = 200


@dataclass(frozen=True)
class ExplainResult:
    text: str
    window_ids: tuple[str, ...]
    """Ids of the windows shown to the explainer."""
    prompt_tokens: int | None
    completion_tokens: int | None
    raw: str
    """The LLM's answer before parsing."""


def format_window(window: Window, unit_max: float, mark_threshold: int, max_chars: int) -> dict[str, str]:
    """A window as text with strong tokens in [[brackets]] plus its ``"token" activation`` list."""
    scaled = scale_0_10(window.activations, unit_max)
    pieces, top = [], []
    for tok, a in zip(window.tokens, scaled):
        if a >= mark_threshold and tok.strip():
            lead = tok[: len(tok) - len(tok.lstrip())]
            pieces.append(f"{lead}[[{tok.strip()}]]")
        else:
            pieces.append(tok)
        if a > 0 and tok.strip():
            top.append((a, tok))
    text = "".join(pieces).strip()
    if len(text) > max_chars:
        first = text.find("[[")
        start = max(0, min(first - max_chars // 2, len(text) - max_chars)) if first >= 0 else 0
        text = text[start : start + max_chars]
    top.sort(key=lambda t: -t[0])
    listed = ", ".join(f'"{t}" {a}' for a, t in top[:6]) or "none"
    return {"text": text, "top_tokens": listed}


def build_messages(template: PromptTemplate, record: UnitRecord, max_windows: int | None = None
                   ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Chat messages for the explainer and the ids of the windows they show."""
    shown = record.windows_for("explain", "top")[: max_windows or int(template.get("max_windows", 6))]
    fmt = [format_window(w, record.stats.max, int(template.get("mark_threshold", 4)),
                         int(template.get("max_window_chars", 400))) for w in shown]
    messages: list[tuple[str, str]] = [("system", template["system"])]
    for shot in template.get("few_shot", []) or []:
        messages.append(("user", template.render("user", windows=shot["windows"])))
        messages.append(("assistant", shot["answer"]))
    messages.append(("user", template.render("user", windows=fmt)))
    return messages, tuple(w.window_id for w in shown)


_PREFIX = re.compile(r"^(?:explanation|answer|this neuron|the neuron|neuron)\b\s*"
                     r"(?:(?:fires on|fires for|responds to|detects|is)\b)?\s*[:\-]?\s*", re.I)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]])(?<!\be\.g)(?<!\bi\.e)\.\s")


def _unwrap(text: str) -> str:
    """Remove one pair of quotes or emphasis marks that encloses the whole text, and only then."""
    for q in ("**", "*", "`", '"', "'"):
        inner = text[len(q):-len(q)]
        if len(text) > 2 * len(q) and text.startswith(q) and text.endswith(q) and q not in inner:
            return inner.strip()
    return text


def parse_explanation(raw: str) -> str:
    """Clean the explainer's answer into one short phrase; ParseError when there is none."""
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        raise ParseError("the explainer returned an empty answer")
    text = _unwrap(_PREFIX.sub("", lines[0]).strip())
    text = _unwrap(_SENTENCE_END.split(text, maxsplit=1)[0].rstrip(".").strip())
    if not re.search(r"[A-Za-z]{2,}", text):
        raise ParseError(f"the explainer's answer has no words: {raw[:80]!r}")
    if len(text) > MAX_EXPLANATION_CHARS:
        raise ParseError(f"the explainer's answer is too long ({len(text)} chars) to be a short description")
    if "[[" in text or "Excerpt" in text or "Activations:" in text:
        raise ParseError(f"the explainer echoed the prompt instead of explaining: {text[:80]!r}")
    return text


def explain_unit(record: UnitRecord, chat: BaseChatModel, template: PromptTemplate) -> ExplainResult:
    """Ask the explainer LLM for a description of ``record``'s unit."""
    if not record.windows_for("explain", "top"):
        raise ParseError(f"unit {record.unit_id} has no activating windows to explain")
    messages, window_ids = build_messages(template, record)
    answer = invoke_chat(chat, messages)
    text = parse_explanation(answer.text)
    examples = {str(s["answer"]).strip().lower() for s in template.get("few_shot", []) or []}
    if text.lower() in examples:
        raise ParseError(f"the explainer copied a few-shot example instead of explaining: {text!r}")
    return ExplainResult(text, window_ids, answer.prompt_tokens, answer.completion_tokens, answer.text)


def describe_settings(chat: BaseChatModel) -> dict[str, Any]:
    params = dict(getattr(chat, "_identifying_params", {}) or {})
    return {k: v for k, v in params.items() if "key" not in k.lower()}
