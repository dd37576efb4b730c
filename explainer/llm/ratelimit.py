"""A global rate limit per LLM endpoint: requests per minute, tokens per minute and concurrent calls.

Every worker process on every host that calls the same endpoint shares one budget, kept in Redis
by one Lua script (atomic, on Redis's own clock, so hosts' clocks do not matter):

- two token buckets, ``requests`` and ``tokens``, refilled continuously at the configured rate per
  minute, holding at most ``burst_s`` seconds' worth (at least one request's need);
- a sorted set of leases for the concurrency limit; a lease a crashed process never returned
  expires after ``lease_s``.

A call's token need is estimated before it is sent (prompt characters / 4 plus the completion
budget) and corrected with the usage the server reports afterwards. Without Redis (the embedded
default) the same algorithm runs in-process. Unset limits (0) cost nothing: no Redis round trip.
Limits come from ``EXPLAINER_LLM_RPM``, ``EXPLAINER_LLM_TPM``, ``EXPLAINER_LLM_CONCURRENCY`` and
the store from ``EXPLAINER_RATELIMIT_URL`` (default: the broker, when it is Redis), read once by the
entry point and handed over with :func:`configure`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from explainer.errors import ConfigError, TransientLLMError

if TYPE_CHECKING:
    from explainer.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Limits", "Limiter", "RedisBucket", "LocalBucket", "configure", "limiter_for", "estimate_tokens"]


@dataclass(frozen=True)
class Limits:
    """The budget of one endpoint; 0 means unlimited."""

    rpm: float = 0.0
    """Requests per minute, over all workers."""
    tpm: float = 0.0
    """Tokens (prompt + completion) per minute, over all workers."""
    concurrency: int = 0
    """Calls in flight at once, over all workers."""
    burst_s: float = 5.0
    """Seconds' worth of rate a bucket holds when full (the largest burst after an idle spell)."""
    lease_s: float = 600.0
    """A concurrency lease not returned within this many seconds (a crashed caller) is dropped."""

    def __post_init__(self) -> None:
        if min(self.rpm, self.tpm, self.concurrency) < 0 or self.burst_s <= 0 or self.lease_s <= 0:
            raise ConfigError(f"rate limits must be >= 0 and burst/lease times > 0, got {self}")

    @property
    def unlimited(self) -> bool:
        return not (self.rpm or self.tpm or self.concurrency)


class Bucket(Protocol):
    def try_acquire(self, tokens: int, lease_id: str) -> float:
        """Take one request and ``tokens`` tokens and a concurrency lease, or nothing; returns 0
        when granted, else the seconds to wait before trying again."""

    def settle(self, delta_tokens: int) -> None:
        """Give back (positive) or take (negative) tokens once the real usage is known."""

    def release(self, lease_id: str) -> None:
        """Return a concurrency lease."""


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local need, burst_ms, lease_ms = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function fill(key, rate, least)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local cap = math.max(rate * burst_ms / 60000, least)
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  return math.min(cap, level + math.max(0, now - ts) * rate / 60000)
end
local wait, rl, tl = 0, 0, 0
if rpm > 0 then
  rl = fill(KEYS[1], rpm, 1)
  if rl < 1 then wait = math.max(wait, math.ceil((1 - rl) * 60000 / rpm)) end
end
if tpm > 0 then
  tl = fill(KEYS[2], tpm, need)
  if tl < need then wait = math.max(wait, math.ceil((need - tl) * 60000 / tpm)) end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then wait = math.max(wait, 10) end
end
if wait > 0 then return wait end
local keep = math.max(burst_ms * 4, 120000)
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'level', tostring(rl - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], keep)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 'level', tostring(tl - need), 'ts', now)
  redis.call('PEXPIRE', KEYS[2], keep)
end
if conc > 0 then
  redis.call('ZADD', KEYS[3], now + lease_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], lease_ms * 2)
end
return 0
"""

_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBYFLOAT', KEYS[1], 'level', ARGV[1]) end
return 0
"""


class RedisBucket:
    """The shared budget of ``endpoint`` in Redis (keys ``explainer:rl:{hash}:…``, one hash slot)."""

    def __init__(self, url: str, endpoint: str, limits: Limits, client: Any = None):
        import redis

        self.limits = limits
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        tag = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.keys = [f"explainer:rl:{{{tag}}}:{part}" for part in ("requests", "tokens", "leases")]
        self._acquire = self.client.register_script(_ACQUIRE)
        self._settle = self.client.register_script(_SETTLE)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        import redis

        try:
            return fn(*args, **kw)
        except redis.RedisError as exc:  # a restarting Redis: the task retries later
            raise TransientLLMError(f"rate limiter unavailable: {type(exc).__name__}: {exc}") from exc

    def try_acquire(self, tokens: int, lease_id: str) -> float:
        lim = self.limits
        args = [
            lim.rpm,
            lim.tpm,
            lim.concurrency,
            max(0, tokens),
            lease_id,
            int(lim.burst_s * 1000),
            int(lim.lease_s * 1000),
        ]
        return int(self._call(self._acquire, keys=self.keys, args=args)) / 1000.0

    def settle(self, delta_tokens: int) -> None:
        if self.limits.tpm and delta_tokens:
            self._call(self._settle, keys=[self.keys[1]], args=[delta_tokens])

    def release(self, lease_id: str) -> None:
        if self.limits.concurrency:
            self._call(self.client.zrem, self.keys[2], lease_id)


class LocalBucket:
    """The same budget inside one process (the embedded default, or no Redis configured)."""

    def __init__(self, limits: Limits, clock: Any = time.monotonic):
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float]] = {}
        self._leases: dict[str, float] = {}

    def _fill(self, name: str, rate: float, least: float, now: float) -> float:
        cap = max(rate * self.limits.burst_s / 60.0, least)
        level, ts = self._levels.get(name, (cap, now))
        return min(cap, level + max(0.0, now - ts) * rate / 60.0)

    def try_acquire(self, tokens: int, lease_id: str) -> float:
        lim, tokens = self.limits, max(0, tokens)
        with self._lock:
            now = self.clock()
            wait = 0.0
            rl = self._fill("requests", lim.rpm, 1, now) if lim.rpm else 0.0
            tl = self._fill("tokens", lim.tpm, tokens, now) if lim.tpm else 0.0
            if lim.rpm and rl < 1:
                wait = max(wait, (1 - rl) * 60.0 / lim.rpm)
            if lim.tpm and tl < tokens:
                wait = max(wait, (tokens - tl) * 60.0 / lim.tpm)
            if lim.concurrency:
                self._leases = {k: exp for k, exp in self._leases.items() if exp > now}
                if len(self._leases) >= lim.concurrency:
                    wait = max(wait, 0.01)
            if wait > 0:
                return wait
            if lim.rpm:
                self._levels["requests"] = (rl - 1, now)
            if lim.tpm:
                self._levels["tokens"] = (tl - tokens, now)
            if lim.concurrency:
                self._leases[lease_id] = now + lim.lease_s
            return 0.0

    def settle(self, delta_tokens: int) -> None:
        if self.limits.tpm and delta_tokens:
            with self._lock:
                if "tokens" in self._levels:
                    level, ts = self._levels["tokens"]
                    self._levels["tokens"] = (level + delta_tokens, ts)

    def release(self, lease_id: str) -> None:
        with self._lock:
            self._leases.pop(lease_id, None)


class Call:
    """What a caller reports back inside :meth:`Limiter.call`."""

    def __init__(self, bucket: Bucket | None, estimate: int):
        self._bucket, self.estimate = bucket, estimate

    def used(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The usage the server reported; corrects the token bucket by the estimate's error. The
        answer is already in hand: a limiter store that cannot be reached now only skips the
        correction (logged), it never fails the call."""
        if self._bucket is not None and (prompt_tokens is not None or completion_tokens is not None):
            try:
                self._bucket.settle(self.estimate - (prompt_tokens or 0) - (completion_tokens or 0))
            except TransientLLMError as exc:
                log.warning("rate limiter: usage not recorded (%s)", exc)


class Limiter:
    """Waits for the endpoint's budget before a call and returns the lease after it."""

    def __init__(self, bucket: Bucket | None, max_wait_s: float = 3600.0):
        self.bucket = bucket
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0
        """Total seconds callers of this limiter spent waiting (for tests and logs)."""

    @contextmanager
    def call(self, tokens: int) -> Iterator[Call]:
        if self.bucket is None:
            yield Call(None, tokens)
            return
        lease = uuid.uuid4().hex
        start = time.monotonic()
        while (wait := self.bucket.try_acquire(tokens, lease)) > 0:
            if time.monotonic() - start > self.max_wait_s:
                raise TransientLLMError(f"rate limit: no budget after {self.max_wait_s:.0f} s")
            time.sleep(min(wait, 5.0) * random.uniform(1.0, 1.25))  # jitter keeps waiters from stampeding
        self.waited_s += time.monotonic() - start
        try:
            yield Call(self.bucket, tokens)
        finally:
            try:
                self.bucket.release(lease)
            except TransientLLMError:
                pass  # the lease expires on its own


def estimate_tokens(messages: list[tuple[str, str]], max_completion: int) -> int:
    """Prompt characters / 4 plus the completion budget: a rough upper estimate, corrected later."""
    return sum(len(text) for _, text in messages) // 4 + max(0, max_completion)


_limiters: dict[tuple[Any, ...], Limiter] = {}
_lock = threading.Lock()


_configured: list[Settings] = []
"""The settings the process's entry point handed over with :func:`configure` (the last one)."""


def configure(settings: Settings) -> None:
    """Use ``settings``' limits (``EXPLAINER_LLM_RPM``, ``_TPM``, ``_CONCURRENCY``,
    ``EXPLAINER_RATELIMIT_URL``) for this process's LLM calls. Called once by each entry point
    (the CLI, the API factory, the worker start) with the settings it read."""
    with _lock:
        _configured[:] = [settings]


def limiter_for(endpoint: str, settings: Settings | None = None) -> Limiter:
    """The process's limiter for ``endpoint`` under ``settings``' limits (default: those the entry
    point handed to :func:`configure`; none configured: unlimited). One per endpoint and configuration,
    created on first use."""
    with _lock:
        s = settings or (_configured[0] if _configured else None)
    if s is None:
        limits, url = Limits(), None
    else:
        limits, url = (
            Limits(
                rpm=s.llm_rpm, tpm=s.llm_tpm, concurrency=s.llm_concurrency, lease_s=max(60.0, 2 * s.llm_timeout_s + 30)
            ),
            s.ratelimit_url,
        )
    key = (endpoint, limits, url)
    with _lock:
        if key not in _limiters:
            if limits.unlimited:
                bucket: Bucket | None = None
            elif url:
                bucket = RedisBucket(url, endpoint, limits)
            else:
                bucket = LocalBucket(limits)
            _limiters[key] = Limiter(bucket)
        return _limiters[key]
