"""With a broker configured, `explainer audit` runs on a worker of the `collect` queue (where the
subject model lives): a real `celery -A workers worker -Q collect` over Redis takes the
`explainer.audit` task, and its result equals the same audit run in the CLI's process (`--here`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from builders.audit import planted_cases
from builders.workers import ROOT, worker_env

from explainer.audit.cases import write_cases


@pytest.mark.redis
def test_audit_runs_on_a_collect_worker_through_redis(tiny_model_dir, settings, redis_url, tmp_path):
    env = worker_env(settings.data_dir, 11, 12)
    write_cases(tmp_path / "cases.jsonl", planted_cases(per_class=12))
    celery = str(Path(sys.executable).parent / "celery")
    log = tmp_path / "collect.log"
    worker = subprocess.Popen(
        [celery, "-A", "workers", "worker", "-Q", "collect", "-n", "collect@%h", "--concurrency", "1"]
        + ["--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    argv = [sys.executable, "-m", "workers.cli", "audit", "--cases", str(tmp_path / "cases.jsonl")]
    argv += ["--model", str(tiny_model_dir), "--layer", "1", "--no-causal", "--json"]
    try:
        remote = subprocess.run(
            [*argv, "--out", str(tmp_path / "remote")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert remote.returncode == 0, remote.stderr[-2000:] + log.read_text(errors="replace")[-2000:]
    assert len(re.findall(r"explainer\.audit\[[^\]]+\] succeeded", log.read_text(errors="replace"))) == 1
    here = subprocess.run(
        [*argv, "--out", str(tmp_path / "here"), "--here"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert here.returncode == 0, here.stderr[-2000:]
    a, b = json.loads(remote.stdout), json.loads(here.stdout)
    # the same audit; the worker's process and the CLI's sum floats in another order (threads), so an
    # L1 weight at the edge of zero may fall either way: figures agree closely, not bit for bit
    assert a["pooled"]["test"]["auroc"] == pytest.approx(b["pooled"]["test"]["auroc"], abs=0.05)
    assert abs(a["selected_units"]["count"] - b["selected_units"]["count"]) <= 3
    # near-tied logits may swap the surest failures; both lists are held-out failures, surest first
    for r in (a, b):
        fails = r["confident_failures"]
        assert len(fails) == 3 and all("-fail-" in f["id"] for f in fails)
        assert [f["logit"] for f in fails] == sorted((f["logit"] for f in fails), reverse=True)
    assert a["provenance"]["unit_space"] == b["provenance"]["unit_space"]
    assert (tmp_path / "remote" / "probe.json").is_file() and (tmp_path / "remote" / "audit.pdf").is_file()
