"""Inputs that used to end in a traceback (or a wrong result) now end in one line and exit 2:
a malformed setting in the environment, a cfg.json nested 100k levels deep, sizes memory cannot
hold (checked before anything is stored), `report -o` a directory or a suffix that is no report
format, a closed stdout pipe, and any exception the commands did not expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from explainer.cli.guard import run_guarded
from explainer.runtime import get_store
from workers.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_deeply_nested_sae_config(settings, tiny_model_dir, tmp_path, capsys):
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text("[" * 100_000 + "]" * 100_000)
    (sae / "sae_weights.safetensors").write_bytes(b"")
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--sae", sae)
    assert code == 2 and "nested too deeply" in _one_line_error(err)


@pytest.mark.parametrize("flag, value", [("--top-k", 1_000_000_000), ("--context", 1_000_000), ("--random", 10**12)])
def test_sizes_memory_cannot_hold_are_refused_before_anything_is_stored(settings, tiny_model_dir, capsys, flag, value):
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--layer", 1, "--max-tokens", 200, flag, value)
    # the size check needs the model's unit count: the model's load is progress, the refusal one error line
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith(("loading model ", "loaded model ")))
    line = _one_line_error(err)
    assert code == 2 and f"{flag} {value} needs about" in line and f"lower {flag}" in line
    with get_store(settings).engine.connect() as conn:  # no `failed` collection row left behind
        from sqlalchemy import text

        assert conn.execute(text("select count(*) from collections")).scalar() == 0


def test_report_output_must_be_a_report_file(settings, tmp_path, capsys):
    code, _, err = run(capsys, "report", "-o", tmp_path)
    assert code == 2 and "is a directory" in _one_line_error(err)
    code, _, err = run(capsys, "report", "-o", tmp_path / "x.docx")
    assert code == 2 and "'.docx' is none of them" in _one_line_error(err)
    assert not (tmp_path / "x.docx").exists()
    code, _, err = run(capsys, "report", "-o", tmp_path / "x.md", "--format", "pdf")
    assert code == 2 and "--format says pdf" in _one_line_error(err)
    code, _, _ = run(capsys, "report", "-o", tmp_path / "x.md")
    assert code == 0 and (tmp_path / "x.md").read_text().startswith("#")


def test_unexpected_errors_are_one_line(capsys):
    def boom() -> int:
        raise KeyError("the\nmessage")

    assert run_guarded(boom) == 2
    err = capsys.readouterr().err
    assert "unexpected KeyError" in _one_line_error(err) and "Traceback" not in err

    def deep() -> int:
        raise RecursionError("maximum recursion depth exceeded")

    assert run_guarded(deep) == 2 and "nested too deeply" in capsys.readouterr().err


def test_closed_stdout_pipe_is_silent(tmp_path):
    """`explainer runs | head` where head has gone: no traceback, no 'Exception ignored' line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLAINER_DATA_DIR": str(tmp_path / "data")}
    env = {k: v for k, v in env.items() if not k.startswith("EXPLAINER_") or k == "EXPLAINER_DATA_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "runs"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_a_collection_the_workers_stored_elsewhere_is_named(settings, tiny_model_dir, tmp_path, capsys):
    """Workers that write to another database than the CLI reads (a misconfigured deployment): the
    sharded collection they report is missing here, and the error says which store was read."""
    from explainer.cli.main import main as cli_main

    class ElsewhereBackend:
        def collect_sharded(self, *args, **kwargs):
            return "0" * 16

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world " * 50)
    argv = ["collect", "--model", str(tiny_model_dir), "--layer", "1", "--corpus", str(corpus), "--shards", "2"]
    assert cli_main(argv, backend=ElsewhereBackend()) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "0000000000000000 was reported collected but is not in" in line and "EXPLAINER_DATABASE_URL" in line


@pytest.mark.parametrize("command", [["-m", "workers.cli", "runs"], ["-m", "celery", "-A", "workers", "worker"]])
def test_a_bad_setting_in_the_environment_is_one_line(tmp_path, command):
    """The ``explainer`` command and a ``celery -A workers worker`` started with a malformed
    variable: one line naming it, exit 2, no traceback (the settings are read at the entry point)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_")}
    env.update(PYTHONPATH=str(ROOT), EXPLAINER_DATA_DIR=str(tmp_path / "data"), EXPLAINER_LLM_TIMEOUT="abc")
    proc = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "EXPLAINER_LLM_TIMEOUT must be a number of seconds, got 'abc'" in _one_line_error(proc.stderr)
