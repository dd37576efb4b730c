"""Slow steps say what they are doing: model loads are announced on stderr with their time, and a
labeling run's time left leaves the warm-up (the first unit waits for every model) out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.fake_openai import FakeOpenAI, ServerThread
from bench.synthetic import store_synthetic_collection
from explainer.llm.chat import LLMConfig
from explainer.pipeline.options import LabelOptions
from explainer.progress import Eta
from explainer.runtime import get_store
from workers.batch import label_units


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_leaves_the_warm_up_out():
    clock = Clock()
    eta = Eta(10, clock=clock)
    assert eta.text() == "warming up (loading models)" and eta.seconds_left() is None
    clock.now = 60.0  # the first unit waited a minute for the models
    eta.update()
    assert eta.seconds_left() is None and "warm-up took 1m00s" in eta.text()
    for _ in range(2):  # then 2 s a unit
        clock.now += 2.0
        eta.update()
    assert eta.seconds_left() == pytest.approx(2.0 * 7)
    assert eta.text() == "eta 14s (warm-up took 1m00s)"
    whole_run_average = clock.now / eta.done * (10 - eta.done)  # what an average over the whole run says
    assert whole_run_average > 10 * eta.seconds_left()
    clock.now += 2.0 * 7
    eta.update(7)
    assert eta.text() == "done (warm-up took 1m00s)"


def test_the_labeling_bar_shows_the_honest_eta(settings, capsys):
    units = store_synthetic_collection(get_store(settings), 4)
    with ServerThread(FakeOpenAI(latency=0.0)) as srv:
        opts = LabelOptions(
            explainer=LLMConfig(model="fake", base_url=srv.base_url, max_retries=0, timeout_s=5),
            baseline_candidate=False,
        )
        result = label_units(settings, "synthetic", units, opts, progress=True, window=1)
    assert result.task_errors == {}
    err = capsys.readouterr().err
    assert "label units" in err and "4/4" in err
    assert "warming up (loading models)" in err and "warm-up took" in err
    assert "<" not in err  # tqdm's own whole-run average ("elapsed<remaining") is not shown


@pytest.mark.parametrize("json_flag", [False, True])
def test_cli_search_says_what_it_loads(searchable, json_flag):
    """A fresh process: the embedding model loads on the first search, and says so (not with --json,
    where stdout is for machines and stderr stays quiet)."""
    argv = [sys.executable, "-m", "workers", "search", "fabricated citations", "--data-dir", str(searchable.data_dir)]
    proc = subprocess.run(
        argv + (["--json"] if json_flag else []),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    if json_flag:
        assert json.loads(proc.stdout) and "loading" not in proc.stderr
    else:
        lines = proc.stderr.splitlines()
        assert "loading the embedding model all-MiniLM-L6-v2 ..." in lines
        assert any(line.startswith("loaded the embedding model all-MiniLM-L6-v2 in ") for line in lines)
        assert "fabricated" in proc.stdout.lower() or "citation" in proc.stdout.lower()
