"""The one seam to explainer LLMs: LangChain chat models.

- :class:`LocalChatModel` runs a local Hugging Face causal LM in-process (by default the
  packaged SmolLM2-135M-Instruct) behind LangChain's ``BaseChatModel`` interface.
- Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server) is
  ``langchain_openai.ChatOpenAI`` with a ``base_url``: one setting away.

:func:`invoke_chat` is the only place that calls a chat model; it maps provider errors to
the project's own :mod:`explainer.errors` types.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from explainer.collect.models import load_model
from explainer.errors import ExplainerError, LLMError, PermanentLLMError, PromptTooLongError, TransientLLMError

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class LocalChatModel(BaseChatModel):
    """A local HF causal LM as a LangChain chat model (greedy unless temperature > 0)."""

    model_path: str = "smollm2-135m"
    device: str = "cpu"
    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0

    @property
    def _llm_type(self) -> str:
        return "local-hf"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature}

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        import torch

        lm = load_model(self.model_path, self.device)
        chat = [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]
        enc = lm.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        n_prompt = int(enc["input_ids"].shape[1])
        ctx = int(getattr(lm.model.config, "max_position_embeddings", 2048))
        if n_prompt + self.max_new_tokens > ctx:
            raise PromptTooLongError(f"prompt of {n_prompt} tokens does not fit the {ctx}-token context")
        gen_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": lm.tokenizer.pad_token_id}
        if self.temperature > 0:
            torch.manual_seed(self.seed)
            gen_kwargs.update(do_sample=True, temperature=self.temperature, top_p=0.95)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = lm.model.generate(**enc, **gen_kwargs)
        new = out[0, n_prompt:]
        text = lm.tokenizer.decode(new, skip_special_tokens=True)
        for s in stop or []:
            text = text.split(s)[0]
        usage = {
            "input_tokens": n_prompt,
            "output_tokens": int(new.shape[0]),
            "total_tokens": n_prompt + int(new.shape[0]),
        }
        msg = AIMessage(content=text, usage_metadata=usage, response_metadata={"model_name": lm.name})
        return ChatResult(generations=[ChatGeneration(message=msg)])


@dataclass(frozen=True)
class LLMConfig:
    """Which explainer LLM to call and how. The API key is never serialized."""

    model: str = "smollm2-135m"
    """Local short name/path, or the model name at ``base_url``."""
    base_url: str | None = None
    """OpenAI-compatible endpoint; ``None`` runs ``model`` in-process."""
    temperature: float = 0.0
    max_tokens: int = 48
    timeout_s: float = 120.0
    max_retries: int = 2
    device: str = "cpu"
    seed: int = 0
    """Sampling seed (used when temperature > 0)."""
    context_tokens: int | None = None
    """Context window of an endpoint model, in tokens (``None``: ``EXPLAINER_LLM_CONTEXT``, default
    8192); a local model's own is read from its config. The prompt is shrunk to fit it."""

    def public(self) -> dict[str, Any]:
        """Settings recorded with each explanation (no secrets)."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "timeout_s": self.timeout_s,
            "context_tokens": self.context_tokens,
        }


_endpoint_models: dict[tuple[LLMConfig, str | None], BaseChatModel] = {}
_endpoint_lock = threading.Lock()


def make_chat_model(cfg: LLMConfig, api_key: str | None = None) -> BaseChatModel:
    """The chat model for ``cfg``. Endpoint clients are made once per (config, key) and process and
    shared by threads (building one costs more than a fast endpoint's answer)."""
    if cfg.base_url:
        with _endpoint_lock:
            if (cfg, api_key) not in _endpoint_models:
                if len(_endpoint_models) >= 64:
                    _endpoint_models.clear()
                _endpoint_models[(cfg, api_key)] = _chat_openai(cfg, api_key)
            return _endpoint_models[(cfg, api_key)]
    return LocalChatModel(
        model_path=cfg.model,
        device=cfg.device,
        max_new_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )


def _chat_openai(cfg: LLMConfig, api_key: str | None) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=cfg.model,
        base_url=cfg.base_url,
        api_key=api_key or "not-needed",
        temperature=cfg.temperature,
        timeout=cfg.timeout_s,
        max_retries=cfg.max_retries,
        max_completion_tokens=cfg.max_tokens,
        extra_body={"max_tokens": cfg.max_tokens},
        **({"seed": cfg.seed} if cfg.temperature > 0 else {}),
    )


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


def to_messages(messages: list[tuple[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[role](content=content) for role, content in messages]


def invoke_chat(chat: BaseChatModel, messages: list[tuple[str, str]]) -> ChatAnswer:
    """Call a chat model once, within its endpoint's global rate and concurrency limits
    (:mod:`explainer.llm.ratelimit`); provider errors become Transient/PermanentLLMError."""
    from explainer.llm.ratelimit import completion_budget, endpoint_of, estimate_tokens, limiter_for

    with limiter_for(endpoint_of(chat)).call(estimate_tokens(messages, completion_budget(chat))) as call:
        try:
            msg = chat.invoke(to_messages(messages))
        except ExplainerError:
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        usage = getattr(msg, "usage_metadata", None) or {}
        call.used(usage.get("input_tokens"), usage.get("output_tokens"))
    return ChatAnswer(str(msg.content), usage.get("input_tokens"), usage.get("output_tokens"))


def call_endpoint(what: str, base_url: str, estimate: int, create: Any) -> dict[str, Any]:
    """One raw request to an OpenAI-compatible endpoint (``create()`` returns the client's
    response) within the endpoint's shared rate and concurrency limits, the reported usage
    settling the token estimate. Provider errors become Transient/PermanentLLMError naming
    ``what`` and the endpoint without credentials."""
    from explainer.llm.ratelimit import limiter_for
    from explainer.provenance import clean_url

    with limiter_for(base_url).call(estimate) as call:
        try:
            resp = create().model_dump()
        except ExplainerError:
            raise
        except Exception as exc:
            err = _translate(exc)
            raise type(err)(
                f"{what} {clean_url(base_url)}: {err}", status=err.status, retry_after=err.retry_after
            ) from exc
        usage = resp.get("usage") or {}
        call.used(usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return resp


def _translate(exc: Exception) -> LLMError:
    """A provider error as the project's own: Transient (worth retrying) or Permanent, with the
    HTTP ``status`` and ``Retry-After`` the endpoint answered, if any."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a hard dependency
        openai = None  # type: ignore[assignment]
    if openai is not None:
        status = getattr(exc, "status_code", None) if isinstance(exc, openai.APIStatusError) else None
        wait = retry_after(getattr(exc, "response", None)) if status is not None else None
        if isinstance(
            exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)
        ):
            return TransientLLMError(f"{type(exc).__name__}: {exc}", status=status, retry_after=wait)
        if isinstance(exc, openai.APIStatusError):
            kind = TransientLLMError if (status or 0) == 429 or (status or 0) >= 500 else PermanentLLMError
            return kind(f"HTTP {status or 0}: {exc}", status=status or None, retry_after=wait)
    if isinstance(exc, TimeoutError):
        return TransientLLMError(f"timeout: {exc}")
    return PermanentLLMError(f"{type(exc).__name__}: {exc}")


def retry_after(response: Any) -> float | None:
    """Seconds from a response's ``Retry-After`` header (delta-seconds or an HTTP date); ``None``
    when there is none or it cannot be read."""
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())
