"""The one place that builds HTTP clients for OpenAI-compatible endpoints, and maps their errors.

:func:`openai_client` makes the ``openai.OpenAI`` client for an endpoint (one connection pool per
endpoint, key, timeout and retry count, shared by the threads of a process). A caller may hand in
its own ``httpx.Client`` — in tests one over an ``httpx.MockTransport``, so no socket is opened —
and then gets a client of its own over that transport.

:func:`translate` turns whatever the client raised into the project's
:class:`~explainer.errors.TransientLLMError` (429, 5xx, timeouts, dropped connections: worth a
retry) or :class:`~explainer.errors.PermanentLLMError` (the rest), carrying the HTTP ``status`` and
the ``Retry-After`` seconds the endpoint answered; callers decide on those, never on the text.
"""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

from explainer.errors import LLMError, PermanentLLMError, TransientLLMError

if TYPE_CHECKING:
    import httpx
    import openai

__all__ = ["openai_client", "translate", "retry_after", "MAX_CACHED_CLIENTS"]

MAX_CACHED_CLIENTS = 64
"""Pooled clients kept per process; beyond this the cache starts afresh (a bound, not a tuning knob)."""

_clients: dict[tuple[str, str | None, float, int], openai.OpenAI] = {}
_lock = threading.Lock()


def openai_client(
    base_url: str,
    api_key: str | None,
    timeout_s: float,
    max_retries: int = 2,
    http_client: httpx.Client | None = None,
) -> openai.OpenAI:
    """The ``openai.OpenAI`` client for ``base_url``. Without ``http_client`` it is made once per
    (endpoint, key, timeout, retries) and process and shared; with one (e.g. over an
    ``httpx.MockTransport``) it is a new client over that transport, never cached. ``timeout_s``
    bounds each request; ``max_retries`` are the client's own retries of transient failures."""
    import openai

    def build(http: httpx.Client | None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,
            # openai types this as its own httpx2.Client; it accepts an httpx.Client as well
            http_client=cast(Any, http),
        )

    if http_client is not None:
        return build(http_client)
    key = (base_url, api_key, float(timeout_s), int(max_retries))
    with _lock:
        if key not in _clients:
            if len(_clients) >= MAX_CACHED_CLIENTS:
                _clients.clear()
            _clients[key] = build(None)
        return _clients[key]


def translate(exc: Exception) -> LLMError:
    """``exc`` (raised by an openai client or its transport) as the project's own error:
    Transient (worth retrying) or Permanent, with the HTTP ``status`` and ``Retry-After`` the
    endpoint answered, if any. Already-translated errors pass through unchanged."""
    import openai

    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status, wait = exc.status_code, retry_after(exc.response)
        kind = TransientLLMError if status == 429 or status >= 500 else PermanentLLMError
        return kind(f"HTTP {status}: {type(exc).__name__}: {exc}", status=status, retry_after=wait)
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, TimeoutError)):
        return TransientLLMError(f"{type(exc).__name__}: {exc}")
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
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
