"""The same labeling through the real Redis broker, with separate `celery -A workers worker`
processes: one on the `llm` queue, one (the single Chroma writer) on the `index` queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent


def _worker(env, name, queue, log):
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-n", f"{name}@%h",
         "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_label_through_redis_with_separate_workers(tmp_path, redis_url):
    import redis

    broker, backend = "redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/8"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_")}
    env.update(EXPLAINER_DATA_DIR=str(tmp_path / "data"), EXPLAINER_BROKER_URL=broker,
               EXPLAINER_RESULT_BACKEND=backend, HF_HUB_OFFLINE="1")
    logs = tmp_path / "worker.log"
    with open(logs, "wb") as log:
        workers = [_worker(env, "llm", "llm", log), _worker(env, "index", "index", log)]
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "explainer", "label", "--layer", "15", "--units", "2", "--max-tokens", "3000", "--json"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
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

    # Each task ran in the worker process that owns its queue, not in the CLI.
    backend_db = redis.Redis.from_url(backend)
    by_task: dict[str, set[str]] = {}
    for key in backend_db.scan_iter("celery-task-meta-*"):
        meta = json.loads(backend_db.get(key))
        assert meta["status"] == "SUCCESS"
        by_task.setdefault(meta["name"], set()).add(meta["worker"].split("@")[0])
    assert by_task["explainer.explain"] == {"llm"} and by_task["explainer.score"] == {"llm"}
    assert by_task["explainer.index"] == {"index"}
