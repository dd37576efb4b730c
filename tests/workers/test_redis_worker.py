"""The distributed deployment, natively on one machine, with the same commands and configuration
keys as compose.yaml: Redis (broker and results), PostgreSQL (SQL store), a `chroma run` server
(HttpClient), and separate `celery -A workers worker` processes on the `collect`, `llm` and `index`
queues: the CLI sends the collection to the collect worker, then one chain per unit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders.workers import worker_env
from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def chroma_server(tmp_path):
    """`chroma run` on a free port, as the compose `chroma` service runs it."""
    import chromadb

    port = free_port()
    log = open(tmp_path / "chroma.log", "wb")
    proc = subprocess.Popen(
        [
            str(BIN / "chroma"),
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--path",
            str(tmp_path / "chroma-server"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("chroma run did not start: " + (tmp_path / "chroma.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)


def _worker(env, name, queue, log, *extra):
    return subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "workers",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_label_through_redis_postgres_and_chroma_server(tmp_path, redis_url, postgres_url, chroma_server):
    import redis

    env = worker_env(tmp_path / "data", 7, 8, EXPLAINER_DATABASE_URL=postgres_url, EXPLAINER_CHROMA_URL=chroma_server)
    backend = env["EXPLAINER_RESULT_BACKEND"]
    logs = {q: tmp_path / f"{q}.log" for q in ("collect", "llm", "index")}
    with open(logs["collect"], "wb") as lc, open(logs["llm"], "wb") as ll, open(logs["index"], "wb") as li:
        workers = [
            _worker(env, "collect", "collect", lc),
            _worker(env, "llm", "llm", ll, "-P", "threads"),
            _worker(env, "index", "index", li),
        ]
        flower_port = free_port()
        flower = subprocess.Popen(
            _compose_argv("flower", port=flower_port),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            proc = subprocess.run(
                [str(BIN / "explainer"), "label", "--layer", "15", "--units", "2", "--max-tokens", "3000", "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            search = subprocess.run(
                [str(BIN / "explainer"), "search", "word", "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            metrics = _get_text(f"http://127.0.0.1:{flower_port}/metrics", lambda t: "llm@" in t)
        finally:
            flower.terminate()
            for w in workers:
                w.terminate()
            for w in workers:
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
    text = {q: f.read_text(errors="replace") for q, f in logs.items()}
    assert proc.returncode == 0, proc.stderr[-2000:] + "".join(t[-2000:] for t in text.values())
    result = json.loads(proc.stdout)
    assert not result["task_errors"] and result["counts"]["pending"] == 0
    assert result["store"]["explanations"] == 2
    assert result["run"]["done"] + result["run"]["failed"] == 2 and result["submitted"] == 2
    assert not (tmp_path / "data" / "explainer.db").exists(), "the SQLite default was used instead of PostgreSQL"

    # Each task ran in the worker process that owns its queue, not in the CLI (the worker logs say
    # which tasks succeeded there; the client drops finished results from the backend).
    ran = {q: set(re.findall(r"Task (explainer\.\w+)\[[^\]]+\] succeeded", t)) for q, t in text.items()}
    assert ran == {
        "collect": {"explainer.collect"},
        "llm": {"explainer.label_group"},
        "index": {"explainer.index"},
    }, ran
    assert not list(redis.Redis.from_url(backend).scan_iter("celery-task-meta-*"))

    # The index lives in the Chroma server and search reads it over HTTP.
    ok = [u for u in result["units"] if u["status"] == "ok"]
    assert search.returncode == 0, search.stderr[-2000:]
    hits = json.loads(search.stdout)
    assert {h["unit_id"] for h in hits} == {u["unit_id"] for u in ok}

    # Flower (the compose `flower` service's command) saw the three workers through the broker.
    for name in ("collect@", "llm@", "index@"):
        assert f'worker="{name}' in metrics, metrics[-2000:]

    # The compose `api` service's command serves the same store and index over real HTTP.
    port = free_port()
    api_env = {**env, "EXPLAINER_API_READ_KEYS": "reader-key"}
    api = subprocess.Popen(
        _compose_argv("api", host="127.0.0.1", port=port),
        cwd=ROOT,
        env=api_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        import httpx

        base = f"http://127.0.0.1:{port}"
        _get_text(f"{base}/healthz", lambda t: True)
        headers = {"X-API-Key": "reader-key"}
        found = httpx.get(f"{base}/api/v1/search", params={"q": "word"}, headers=headers, timeout=60).json()
        assert {h["unit_id"] for h in found["hits"]} == {u["unit_id"] for u in ok}
        runs = httpx.get(f"{base}/api/v1/runs", headers=headers, timeout=30).json()["runs"]
        assert [r["id"] for r in runs] == [result["run_id"]] and runs[0]["done"] + runs[0]["failed"] == 2
        assert httpx.get(f"{base}/api/v1/runs", timeout=30).status_code == 401
    finally:
        api.terminate()
        api.wait(30)


def _compose_argv(service, **values):
    """The command of a compose.yaml service, run from this venv, with the values of its options
    (``--port 8080`` or ``--port=8080``) replaced: the native test runs what the deployment runs."""
    import shlex

    import yaml

    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    for name, value in values.items():
        flag = f"--{name}"
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
        else:
            i = next(i for i, a in enumerate(argv) if a.startswith(flag + "="))
            argv[i] = f"{flag}={value}"
    return [str(BIN / argv[0]), *argv[1:]]


def _get_text(url, ready, limit_s=90):
    """GET ``url`` until it answers 200 with a body ``ready`` accepts (a server still starting)."""
    import httpx

    deadline, last = time.monotonic() + limit_s, ""
    while True:
        try:
            r = httpx.get(url, timeout=5)
            last = f"HTTP {r.status_code}: {r.text[-3000:]}"
            if r.status_code == 200 and ready(r.text):
                return r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer as expected within {limit_s} s; last answer: {last}")
        time.sleep(0.5)
