"""The one seam to explainer LLMs: the :class:`ChatClient` protocol and its two implementations.

- :class:`LocalChatModel` runs a local Hugging Face causal LM in-process (by default the
  packaged SmolLM2-135M-Instruct); it is also a LangChain ``BaseChatModel``.
- :class:`EndpointChat` calls any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp
  server) through the client :func:`explainer.llm.transport.openai_client` builds; a caller may
  inject the ``httpx.Client`` it runs over (tests: an ``httpx.MockTransport`` or a fake server).

:func:`make_chat_model` is the default :class:`ChatClientFactory` (config → client); the explain
stage takes another from its caller. :func:`invoke_chat` is the only place that calls a chat
client: within the endpoint's rate limit, with provider errors mapped to :mod:`explainer.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from explainer.collect.models import load_model
from explainer.errors import ConfigError, ExplainerError, LLMError, PermanentLLMError, PromptTooLongError
from explainer.llm.transport import openai_client, translate

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ChatAnswer",
    "ChatClient",
    "ChatClientFactory",
    "EndpointChat",
    "LLMConfig",
    "LocalChatModel",
    "call_endpoint",
    "chat_factory",
    "invoke_chat",
    "make_chat_model",
]

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


@dataclass(frozen=True)
class ChatAnswer:
    """One chat completion: its text and the token counts the model reported (``None``: not reported)."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


@runtime_checkable
class ChatClient(Protocol):
    """What the explainer needs of a chat LLM, local or remote."""

    @property
    def endpoint(self) -> str:
        """Where calls go (a base URL, or ``local:MODEL``): the key of the rate limit."""
        ...

    @property
    def max_tokens(self) -> int:
        """The completion budget of one answer, in tokens."""
        ...

    def complete(self, messages: list[tuple[str, str]]) -> ChatAnswer:
        """One answer to ``(role, content)`` messages; may raise the provider's own errors."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings worth recording with an explanation (never a key)."""
        ...


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
    def endpoint(self) -> str:
        return f"local:{self.model_path}"

    @property
    def max_tokens(self) -> int:
        return self.max_new_tokens

    def complete(self, messages: list[tuple[str, str]]) -> ChatAnswer:
        msg = self.invoke(to_messages(messages))
        usage = getattr(msg, "usage_metadata", None) or {}
        return ChatAnswer(str(msg.content), usage.get("input_tokens"), usage.get("output_tokens"))

    def describe(self) -> dict[str, Any]:
        return dict(self._identifying_params)

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


class ChatClientFactory(Protocol):
    """Makes the chat client for a config (the explain stage's seam; default :func:`make_chat_model`)."""

    def __call__(self, cfg: LLMConfig, api_key: str | None = None) -> ChatClient: ...


class EndpointChat:
    """An OpenAI-compatible chat endpoint as a :class:`ChatClient`. The HTTP client comes from
    :func:`~explainer.llm.transport.openai_client` (pooled per endpoint and process), or runs over
    the ``http_client`` the caller injects."""

    def __init__(self, cfg: LLMConfig, api_key: str | None = None, http_client: httpx.Client | None = None):
        if not cfg.base_url:
            raise ConfigError(f"the chat model {cfg.model!r} has no endpoint base_url")
        self.cfg, self.base_url = cfg, cfg.base_url
        self.client = openai_client(cfg.base_url, api_key, cfg.timeout_s, cfg.max_retries, http_client)

    @property
    def endpoint(self) -> str:
        return self.base_url

    @property
    def max_tokens(self) -> int:
        return self.cfg.max_tokens

    def request_body(self, messages: list[tuple[str, str]]) -> dict[str, Any]:
        """The JSON body of one chat completion request: plain values only (strings, numbers)."""
        cfg = self.cfg
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": [{"role": role, "content": content} for role, content in messages],
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "max_completion_tokens": cfg.max_tokens,
        }
        if cfg.temperature > 0:
            body["seed"] = cfg.seed
        return body

    def complete(self, messages: list[tuple[str, str]]) -> ChatAnswer:
        from openai.types.chat import ChatCompletion

        # The client's documented custom-request path: the same endpoint, headers, timeout, retries
        # and errors as ``chat.completions.create``, without its per-call walk of the body against
        # the request's TypedDicts (a no-op on plain strings and numbers that cost about 1.5 ms of
        # CPU per call, two calls per labeled unit).
        resp = self.client.post("/chat/completions", body=self.request_body(messages), cast_to=ChatCompletion)
        choices = getattr(resp, "choices", None)
        if not choices:
            raise PermanentLLMError(f"the endpoint answered no chat completion: {str(resp)[:120]!r}")
        usage = getattr(resp, "usage", None)
        return ChatAnswer(
            choices[0].message.content or "",
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
        )

    def describe(self) -> dict[str, Any]:
        return self.cfg.public()


def make_chat_model(cfg: LLMConfig, api_key: str | None = None, http_client: httpx.Client | None = None) -> ChatClient:
    """The chat client for ``cfg``: an endpoint when it has a ``base_url`` (over ``http_client`` if
    given), else the local model in-process."""
    if cfg.base_url:
        return EndpointChat(cfg, api_key, http_client)
    return LocalChatModel(
        model_path=cfg.model,
        device=cfg.device,
        max_new_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )


def chat_factory(http_client: httpx.Client | None = None) -> ChatClientFactory:
    """A :class:`ChatClientFactory` whose endpoint clients all run over ``http_client``."""
    return partial(make_chat_model, http_client=http_client)


def to_messages(messages: list[tuple[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[role](content=content) for role, content in messages]


def invoke_chat(chat: ChatClient, messages: list[tuple[str, str]]) -> ChatAnswer:
    """Call a chat client once, within its endpoint's global rate and concurrency limits
    (:mod:`explainer.llm.ratelimit`); provider errors become Transient/PermanentLLMError."""
    from explainer.llm.ratelimit import estimate_tokens, limiter_for

    with limiter_for(chat.endpoint).call(estimate_tokens(messages, chat.max_tokens)) as call:
        try:
            answer = chat.complete(messages)
        except ExplainerError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        call.used(answer.prompt_tokens, answer.completion_tokens)
    return answer


def call_endpoint(what: str, base_url: str, estimate: int, create: Callable[[], Any]) -> dict[str, Any]:
    """One raw request to an OpenAI-compatible endpoint (``create()`` returns the client's
    response) within the endpoint's shared rate and concurrency limits, the reported usage
    settling the token estimate. Provider errors become Transient/PermanentLLMError naming
    ``what`` and the endpoint without credentials."""
    from explainer.llm.ratelimit import limiter_for
    from explainer.provenance import clean_url

    with limiter_for(base_url).call(estimate) as call:
        try:
            resp = create()
            if not hasattr(resp, "model_dump"):
                raise PermanentLLMError(f"the answer is not an API response: {str(resp)[:120]!r}")
            out: dict[str, Any] = resp.model_dump()
        except Exception as exc:
            if isinstance(exc, ExplainerError) and not isinstance(exc, LLMError):
                raise
            err = translate(exc)
            raise type(err)(
                f"{what} {clean_url(base_url)}: {err}", status=err.status, retry_after=err.retry_after
            ) from exc
        usage = out.get("usage") or {}
        call.used(usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return out
