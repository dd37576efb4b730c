"""The distributed deployment, natively on one machine, with the same commands and configuration
keys as compose.yaml: Redis (broker and results), PostgreSQL (SQL store), a `chroma run` server
(HttpClient), and separate `celery -A workers worker` processes on the `llm` and `index` queues."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def pg_database(postgres_url):
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"explainer_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def chroma_server(tmp_path):
    """`chroma run` on a free port, as the compose `chroma` service runs it."""
    import chromadb

    port = free_port()
    log = open(tmp_path / "chroma.log", "wb")
    proc = subprocess.Popen([str(BIN / "chroma"), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", str(tmp_path / "chroma-server")], stdout=log, stderr=subprocess.STDOUT)
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


def _worker(env, name, queue, log):
    return subprocess.Popen(
        [str(BIN / "celery"), "-A", "workers", "worker", "-Q", queue, "-n", f"{name}@%h",
         "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_label_through_redis_postgres_and_chroma_server(tmp_path, redis_url, pg_database, chroma_server):
    import redis

    broker, backend = "redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/8"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_")}
    env.update(EXPLAINER_DATA_DIR=str(tmp_path / "data"), EXPLAINER_BROKER_URL=broker,
               EXPLAINER_RESULT_BACKEND=backend, EXPLAINER_DATABASE_URL=pg_database,
               EXPLAINER_CHROMA_URL=chroma_server, HF_HUB_OFFLINE="1")
    logs = tmp_path / "worker.log"
    with open(logs, "wb") as log:
        workers = [_worker(env, "llm", "llm", log), _worker(env, "index", "index", log)]
        try:
            proc = subprocess.run(
                [str(BIN / "explainer"), "label", "--layer", "15", "--units", "2", "--max-tokens", "3000", "--json"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            search = subprocess.run([str(BIN / "explainer"), "search", "word", "--json"],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
    assert proc.returncode == 0, proc.stderr[-2000:] + logs.read_text()[-3000:]
    result = json.loads(proc.stdout)
    assert not result["task_errors"] and result["counts"]["pending"] == 0
    assert result["store"]["explanations"] == 2
    assert not (tmp_path / "data" / "explainer.db").exists(), "the SQLite default was used instead of PostgreSQL"

    # Each task ran in the worker process that owns its queue, not in the CLI.
    backend_db = redis.Redis.from_url(backend)
    by_task: dict[str, set[str]] = {}
    for key in backend_db.scan_iter("celery-task-meta-*"):
        meta = json.loads(backend_db.get(key))
        assert meta["status"] == "SUCCESS"
        by_task.setdefault(meta["name"], set()).add(meta["worker"].split("@")[0])
    assert by_task["explainer.explain"] == {"llm"} and by_task["explainer.score"] == {"llm"}
    assert by_task["explainer.index"] == {"index"}

    # The index lives in the Chroma server and search reads it over HTTP.
    ok = [u for u in result["units"] if u["status"] == "ok"]
    assert search.returncode == 0, search.stderr[-2000:]
    hits = json.loads(search.stdout)
    assert {h["unit_id"] for h in hits} == {u["unit_id"] for u in ok}
