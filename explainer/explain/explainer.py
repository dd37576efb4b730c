"""Explain: render a unit's top windows into a prompt and parse the LLM's short description."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explainer.errors import ParseError, PromptTooLongError
from explainer.llm.chat import ChatClient, invoke_chat
from explainer.llm.prompts import PromptTemplate
from store.records import UnitRecord, Window, scale_0_10

MAX_EXPLANATION_CHARS = 200
CHARS_PER_TOKEN = 3.0
"""Endpoint prompts are measured as characters ÷ 3 tokens (no tokenizer at hand): a conservative
estimate — English prose averages about 4 characters per token, code and marked windows fewer."""
MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds around each message (role markers), in the endpoint estimate."""
MIN_WINDOW_CHARS = 80
"""Windows are truncated (halving their characters) down to this before the prompt is given up on."""


class RejectedAnswer(ParseError):
    """Both the answer and the answer to the stricter retry were unusable; ``raw_answers`` keeps
    the LLM's texts so that the failed attempt can be stored with them."""

    def __init__(self, message: str, raw_answers: list[str]):
        super().__init__(message)
        self.raw_answers = raw_answers


@dataclass(frozen=True)
class ExplainResult:
    text: str
    window_ids: tuple[str, ...]
    """Ids of the windows shown to the explainer."""
    prompt_tokens: int | None
    completion_tokens: int | None
    raw: str
    """The LLM's answer before parsing."""
    attempts: int = 1
    """2 when the first answer was unusable and the stricter retry gave this one."""
    rejected_raw: str | None = None
    """The unusable first answer, when there was a retry."""
    windows_available: int | None = None
    """Explain windows the unit has; ``len(window_ids)`` of them fit the prompt."""


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


def output_context(output: dict[str, Any] | None, k: int = 8) -> dict[str, str]:
    """``promoted`` and ``suppressed`` for a prompt: the unit's output side through the unembedding
    as quoted tokens, and ``steered_promoted`` / ``steered_suppressed``: the measured change when
    steered (``output["steering"]``, see :func:`stored_output_side`); ``""`` for what it lacks. For
    templates that show them (``prompts/explain_output.yaml``)."""

    def tokens(rows: list[dict[str, Any]]) -> str:
        return ", ".join(json.dumps(r["token"], ensure_ascii=False) for r in rows[:k])

    out = {"promoted": "", "suppressed": "", "steered_promoted": "", "steered_suppressed": ""}
    if not output:
        return out
    steering = output.get("steering") or {}
    out.update(
        promoted=tokens(output.get("promoted") or []),
        suppressed=tokens(output.get("suppressed") or []),
        steered_promoted=tokens(steering.get("promoted") or []),
        steered_suppressed=tokens(steering.get("suppressed") or []),
    )
    return out


def stored_output_side(store: Any, unit_id: str) -> dict[str, Any] | None:
    """The output side an output-aware prompt shows for ``unit_id``, from ``store``: the vocabulary
    projection (``promoted``, ``suppressed``), with the measured steering effect under
    ``steering`` when an intervention scorer stored one (for mid-layer units the better evidence);
    ``None`` when the unit has neither."""
    projection = store.output_sides([unit_id]).get(unit_id)
    steering = store.output_sides([unit_id], method="steering").get(unit_id)
    if projection is None and steering is None:
        return None
    return {**(projection or {}), **({"steering": steering} if steering else {})}


def build_messages(
    template: PromptTemplate,
    record: UnitRecord,
    max_windows: int | None = None,
    max_window_chars: int | None = None,
    output: dict[str, Any] | None = None,
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Chat messages for the explainer and the ids of the windows they show; ``output`` is the
    unit's output side, shown by templates that ask for it."""
    shown = record.windows_for("explain", "top")[: max_windows or int(template.get("max_windows", 6))]
    fmt = [
        format_window(
            w,
            record.stats.max,
            int(template.get("mark_threshold", 4)),
            max_window_chars or int(template.get("max_window_chars", 400)),
        )
        for w in shown
    ]
    messages: list[tuple[str, str]] = [("system", template["system"])]
    for shot in template.get("few_shot", []) or []:
        shown_output = {
            k: shot.get(k, "") for k in ("promoted", "suppressed", "steered_promoted", "steered_suppressed")
        }
        messages.append(("user", template.render("user", windows=shot["windows"], **shown_output)))
        messages.append(("assistant", shot["answer"]))
    messages.append(("user", template.render("user", windows=fmt, **output_context(output))))
    return messages, tuple(w.window_id for w in shown)


_PREFIX = re.compile(
    r"^(?:explanation|answer|this neuron|the neuron|neuron)\b\s*"
    r"(?:(?:fires on|fires for|responds to|detects|is)\b)?\s*[:\-]?\s*",
    re.I,
)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]])(?<!\be\.g)(?<!\bi\.e)\.\s")


_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i (?:cannot|can'?t|am unable|'m unable|won'?t)\b"
    r"|as an ai\b|unfortunately\b)",
    re.I,
)


_ACTIVATION_LIST = re.compile(r'"[^"]{1,30}" (?:10|[0-9])(?:,|$)')
"""A copy of the prompt's ``"token" 7, …`` activation list."""


def _unwrap(text: str) -> str:
    """Remove one pair of quotes or emphasis marks that encloses the whole text, and only then."""
    for q in ("**", "*", "`", '"', "'"):
        inner = text[len(q) : -len(q)]
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
    if _REFUSAL.match(text):
        raise ParseError(f"the explainer refused instead of explaining: {text[:80]!r}")
    if len(text) > MAX_EXPLANATION_CHARS:
        raise ParseError(f"the explainer's answer is too long ({len(text)} chars) to be a short description")
    if "[[" in text or "Excerpt" in text or "Activations:" in text or _ACTIVATION_LIST.search(text):
        raise ParseError(f"the explainer echoed the prompt instead of explaining: {text[:80]!r}")
    return text


def prompt_meter(
    chat: ChatClient, context_tokens: int | None = None
) -> tuple[Callable[[list[tuple[str, str]]], int], int]:
    """How to count a prompt's tokens for ``chat`` and how many it may have: a local model's own
    tokenizer and context window, else :data:`CHARS_PER_TOKEN` and ``context_tokens`` (default
    8192); the answer's budget is kept free in both cases."""
    from explainer.llm.chat import LocalChatModel

    if isinstance(chat, LocalChatModel):
        from explainer.collect.models import load_model

        lm = load_model(chat.model_path, chat.device)
        ctx = int(getattr(lm.model.config, "max_position_embeddings", 2048))

        def count(messages: list[tuple[str, str]]) -> int:
            roles = {"system": "system", "user": "user", "assistant": "assistant"}
            enc = lm.tokenizer.apply_chat_template(
                [{"role": roles[r], "content": c} for r, c in messages], add_generation_prompt=True, return_dict=True
            )
            return len(enc["input_ids"])

        return count, ctx - chat.max_new_tokens

    def estimate(messages: list[tuple[str, str]]) -> int:
        return math.ceil(sum(len(c) / CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS for _, c in messages))

    return estimate, (context_tokens or 8192) - chat.max_tokens


def fit_messages(
    template: PromptTemplate,
    record: UnitRecord,
    count: Callable[[list[tuple[str, str]]], int],
    limit: int,
    output: dict[str, Any] | None = None,
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The explainer prompt shrunk until ``count`` of it is at most ``limit``: drop windows (the
    weakest first) down to one, then halve the characters kept per window down to
    :data:`MIN_WINDOW_CHARS`; PromptTooLongError beyond that."""
    n = min(int(template.get("max_windows", 6)), len(record.windows_for("explain", "top"))) or 1
    chars = int(template.get("max_window_chars", 400))
    while True:
        messages, ids = build_messages(template, record, max_windows=n, max_window_chars=chars, output=output)
        used = count(messages)
        if used <= limit:
            return messages, ids
        if n > 1:
            n -= 1
        elif chars > MIN_WINDOW_CHARS:
            chars = max(MIN_WINDOW_CHARS, chars // 2)
        else:
            raise PromptTooLongError(
                f"the explainer prompt needs {used} tokens with one window of {chars} "
                f"characters; the model allows {limit}"
            )


def check_answer(raw: str, template: PromptTemplate) -> str:
    """The parsed explanation, or ParseError (also for a copy of a few-shot example)."""
    text = parse_explanation(raw)
    examples = {str(s["answer"]).strip().lower() for s in template.get("few_shot", []) or []}
    if text.lower() in examples:
        raise ParseError(f"the explainer copied a few-shot example instead of explaining: {text!r}")
    return text


def stricter(messages: list[tuple[str, str]], template: PromptTemplate) -> list[tuple[str, str]]:
    """The same prompt with the template's ``retry_instruction`` appended to the last user message."""
    role, content = messages[-1]
    return [*messages[:-1], (role, f"{content}\n\n{template['retry_instruction']}")]


def explain_unit(
    record: UnitRecord,
    chat: ChatClient,
    template: PromptTemplate,
    context_tokens: int | None = None,
    output: dict[str, Any] | None = None,
) -> ExplainResult:
    """Ask the explainer LLM for a description of ``record``'s unit (``output``: its output side, for
    templates that show it). The prompt is shrunk to fit the model's context; an unusable answer
    (empty, refusing, rambling, an echo or a copied example) is asked again once with a stricter
    instruction, then rejected with both texts."""
    if not record.windows_for("explain", "top"):
        raise ParseError(f"unit {record.unit_id} has no activating windows to explain")
    count, limit = prompt_meter(chat, context_tokens)
    messages, window_ids = fit_messages(template, record, count, limit, output)
    answers, errors = [], []
    for attempt in range(2):
        answer = invoke_chat(chat, messages if attempt == 0 else stricter(messages, template))
        answers.append(answer)
        try:
            text = check_answer(answer.text, template)
            break
        except ParseError as exc:
            errors.append(str(exc))
    else:
        raise RejectedAnswer(f"{errors[0]}; after a stricter retry: {errors[1]}", [a.text for a in answers])

    def total(field: str) -> int | None:
        values = [getattr(a, field) for a in answers if getattr(a, field) is not None]
        return sum(values) if values else None

    return ExplainResult(
        text,
        window_ids,
        total("prompt_tokens"),
        total("completion_tokens"),
        answers[-1].text,
        attempts=len(answers),
        rejected_raw=answers[0].text if len(answers) > 1 else None,
        windows_available=len(record.windows_for("explain", "top")),
    )


def describe_settings(chat: ChatClient) -> dict[str, Any]:
    return {k: v for k, v in chat.describe().items() if "key" not in k.lower()}
