"""The global LLM rate limit: the bucket algorithm on a fake clock, the same budget shared by two
processes through the real Redis, the configuration, and invoke_chat waiting for its budget."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from explainer.errors import ConfigError
from explainer.llm.ratelimit import Limiter, Limits, LocalBucket, RedisBucket, estimate_tokens, limiter_for
from explainer.settings import load_settings


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_request_bucket_refills_at_the_rate():
    clock = Clock()
    b = LocalBucket(Limits(rpm=60, burst_s=5), clock)  # 1 request/s, holds 5
    assert [b.try_acquire(0, f"l{i}") for i in range(5)] == [0.0] * 5
    assert b.try_acquire(0, "l5") == pytest.approx(1.0)
    clock.now = 0.5
    assert b.try_acquire(0, "l5") == pytest.approx(0.5)
    clock.now = 1.0
    assert b.try_acquire(0, "l5") == 0.0
    clock.now = 100.0  # an idle spell never fills it beyond the burst
    assert [b.try_acquire(0, "x") for _ in range(6)].count(0.0) == 5


def test_token_bucket_is_corrected_by_the_reported_usage():
    clock = Clock()
    b = LocalBucket(Limits(tpm=600, burst_s=60), clock)  # 10 tokens/s, holds 600
    assert b.try_acquire(500, "a") == 0.0
    assert b.try_acquire(200, "b") == pytest.approx(10.0)  # 100 left, 100 short
    b.settle(400)  # the call used 100 tokens, not 500
    assert b.try_acquire(200, "b") == 0.0
    # a request larger than the whole bucket waits for a full bucket, then goes through
    assert b.try_acquire(5000, "c") > 0
    clock.now = 1000.0
    assert b.try_acquire(5000, "c") == 0.0


def test_concurrency_leases():
    clock = Clock()
    b = LocalBucket(Limits(concurrency=2, lease_s=30), clock)
    assert b.try_acquire(0, "a") == 0.0 and b.try_acquire(0, "b") == 0.0
    assert b.try_acquire(0, "c") > 0
    b.release("a")
    assert b.try_acquire(0, "c") == 0.0
    clock.now = 31.0  # a lease never returned (a crashed caller) expires
    assert b.try_acquire(0, "d") == 0.0 and b.try_acquire(0, "e") == 0.0


def test_limits_come_from_the_environment():
    s = load_settings(
        {
            "EXPLAINER_LLM_RPM": "120",
            "EXPLAINER_LLM_TPM": "90000",
            "EXPLAINER_LLM_CONCURRENCY": "8",
            "EXPLAINER_BROKER_URL": "redis://h:6379/0",
        }
    )
    assert (s.llm_rpm, s.llm_tpm, s.llm_concurrency, s.ratelimit_url) == (120.0, 90000.0, 8, "redis://h:6379/0")
    assert load_settings({}).ratelimit_url is None  # embedded default: in-process buckets
    assert load_settings({"EXPLAINER_RATELIMIT_URL": "redis://r/2"}).ratelimit_url == "redis://r/2"
    with pytest.raises(ConfigError, match="EXPLAINER_LLM_CONCURRENCY must be a whole number"):
        load_settings({"EXPLAINER_LLM_CONCURRENCY": "2.5"})
    with pytest.raises(ConfigError, match="EXPLAINER_LLM_RPM must be >= 0"):
        load_settings({"EXPLAINER_LLM_RPM": "-1"})
    env = {"EXPLAINER_DATA_DIR": "/tmp/x"}
    assert limiter_for("http://a/v1", load_settings(env)).bucket is None  # unlimited: no bookkeeping at all
    rpm = load_settings({**env, "EXPLAINER_LLM_RPM": "60"})
    lim = limiter_for("http://a/v1", rpm)
    assert isinstance(lim.bucket, LocalBucket) and lim is limiter_for(
        "http://a/v1", load_settings({**env, "EXPLAINER_LLM_RPM": "60"})
    )


def test_the_entry_points_settings_set_the_limits():
    from explainer.llm import ratelimit

    before = list(ratelimit._configured)
    try:
        ratelimit.configure(load_settings({"EXPLAINER_DATA_DIR": "/tmp/x", "EXPLAINER_LLM_CONCURRENCY": "2"}))
        assert limiter_for("http://b/v1").bucket.limits.concurrency == 2
    finally:
        ratelimit._configured[:] = before


def test_estimate_tokens():
    assert estimate_tokens([("system", "x" * 400), ("user", "y" * 400)], 48) == 248


def test_limiter_waits_then_calls():
    clock = Clock()
    bucket = LocalBucket(Limits(rpm=60, burst_s=1), clock)
    lim = Limiter(bucket)
    with lim.call(10):
        pass
    slept = []

    import explainer.llm.ratelimit as rl

    real_sleep = rl.time.sleep
    try:
        rl.time.sleep = lambda s: (slept.append(s), setattr(clock, "now", clock.now + s))
        with lim.call(10):
            pass
    finally:
        rl.time.sleep = real_sleep
    assert slept and sum(slept) >= 1.0  # it waited for the refill instead of calling at once


# -- the shared budget in the real Redis -----------------------------------------------------

_GRAB = """
import json, sys
from explainer.llm.ratelimit import Limits, RedisBucket
url, endpoint, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
b = RedisBucket(url, endpoint, Limits(**json.loads(sys.argv[5])))
got = [b.try_acquire(7, f"{hold}-{i}") == 0 for i in range(n)]
if hold == "release-one":
    b.release(f"{hold}-0")
print(json.dumps(sum(got)))
"""


def _grab(url, endpoint, n, tag, limits):
    out = subprocess.run(
        [sys.executable, "-c", _GRAB, url, endpoint, str(n), tag, json.dumps(limits)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.redis
def test_two_processes_share_one_bucket(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/9"
    endpoint = f"http://test-{uuid.uuid4().hex}/v1"
    limits = {"rpm": 1, "burst_s": 600}  # holds 10 requests, refills 1 a minute
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GRAB, url, endpoint, "8", tag, json.dumps(limits)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    granted = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        granted.append(json.loads(out))
    assert sum(granted) == 10, granted  # 16 attempts, one budget of 10
    b = RedisBucket(url, endpoint, Limits(**limits))
    assert b.try_acquire(7, "late") > 1.0  # and this process sees it spent too
    b.client.delete(*b.keys)


@pytest.mark.redis
def test_concurrency_is_shared_between_processes(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/9"
    endpoint = f"http://test-{uuid.uuid4().hex}/v1"
    limits = {"concurrency": 3, "lease_s": 600}
    assert json.loads(_grab(url, endpoint, 3, "release-one", limits).stdout) == 3
    b = RedisBucket(url, endpoint, Limits(**limits))
    assert b.try_acquire(0, "mine") == 0.0  # the one lease the other process returned
    assert b.try_acquire(0, "more") > 0  # the other two are still held
    b.release("mine")
    assert b.try_acquire(0, "more") == 0.0
    b.client.delete(*b.keys)


@pytest.mark.redis
def test_unreachable_redis_is_a_transient_error():
    from conftest import free_port

    from explainer.errors import TransientLLMError

    b = RedisBucket(f"redis://127.0.0.1:{free_port()}/0", "http://x/v1", Limits(rpm=10))
    with pytest.raises(TransientLLMError, match="rate limiter unavailable"):
        b.try_acquire(1, "a")


@pytest.mark.redis
def test_redis_token_bucket_and_settle(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/9"
    b = RedisBucket(url, f"http://test-{uuid.uuid4().hex}/v1", Limits(tpm=6, burst_s=6000))  # holds 600, ~0 refill
    assert b.try_acquire(500, "a") == 0.0
    assert b.try_acquire(200, "b") > 0  # 100 left
    b.settle(400)  # the call used 100 tokens, not 500
    assert b.try_acquire(200, "b") == 0.0
    b.client.delete(*b.keys)
