"""Settings are read once, at the entry points, and passed down: what they carry (the model cache,
the secret values reports scrub), where they go, and that no module below the entry points reads the
environment itself."""

from __future__ import annotations

import ast
from pathlib import Path

from explainer import runtime
from explainer.collect import models
from explainer.report.model import ReportMeta
from explainer.report.render import render_report
from explainer.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("explainer/settings.py", "explainer/cli/", "explainer/api/")


def test_the_model_cache_and_the_secret_values_come_from_the_settings(tmp_path):
    s = load_settings(
        {
            "EXPLAINER_DATA_DIR": str(tmp_path),
            "EXPLAINER_MODEL_CACHE": str(tmp_path / "mc"),
            "HF_TOKEN": "hf_ab,hf_defghi",
        }
    )
    assert s.model_cache == tmp_path / "mc"
    assert s.secrets == ("hf_defghi",)  # comma-separated values split; too short a value is no secret
    assert "hf_defghi" not in repr(s)
    assert load_settings({"EXPLAINER_DATA_DIR": str(tmp_path)}).model_cache.name == "activation-explainer"


def test_a_gguf_copy_goes_to_the_model_cache_the_entry_point_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("EXPLAINER_MODEL_CACHE", raising=False)
    monkeypatch.setattr(runtime, "_model_cache", [])
    (tmp_path / "m.gguf").write_bytes(b"x")
    source = models.ModelSource("m", tmp_path, "m.gguf")
    runtime.configure(
        load_settings({"EXPLAINER_DATA_DIR": str(tmp_path), "EXPLAINER_MODEL_CACHE": str(tmp_path / "mc")})
    )
    assert models._gguf_cache_dir(source).parent == tmp_path / "mc"


def test_a_report_scrubs_the_secret_values_of_the_settings_it_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_API_KEY", raising=False)
    settings = load_settings({"EXPLAINER_DATA_DIR": str(tmp_path), "MY_API_KEY": "sk-live-123456"})
    meta = ReportMeta(title="called with sk-live-123456", note="via https://bob:pw@llm.example/v1")
    text = render_report([], "md", meta, secrets=settings.secrets).decode()
    assert "sk-live-123456" not in text and "bob:pw" not in text and text.count("redacted") == 2


def _reads_the_environment(path: Path) -> list[str]:
    """``os.environ`` reads (``.get``, ``[...]``, the mapping itself), ``os.getenv`` and
    ``load_settings(...)`` calls in ``path``; ``os.environ.setdefault`` (a library default this
    process sets, not a setting it reads) is allowed."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            parent = parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.attr == "setdefault"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} os.environ")
        elif isinstance(node, ast.Attribute) and node.attr == "getenv":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} os.getenv")
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_settings"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} load_settings()")
    return found


def test_no_module_below_the_entry_points_reads_the_environment():
    below = [
        p
        for package in ("explainer", "store")
        for p in sorted((ROOT / package).rglob("*.py"))
        if not str(p.relative_to(ROOT)).startswith(ENTRY_POINTS)
    ]
    assert len(below) > 50
    assert [hit for p in below for hit in _reads_the_environment(p)] == []


def test_a_bench_hands_the_model_cache_to_the_runtime_as_the_cli_does(tmp_path, monkeypatch):
    from bench import configure_runtime

    monkeypatch.setenv("EXPLAINER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EXPLAINER_MODEL_CACHE", str(tmp_path / "bench-mc"))
    monkeypatch.setattr(runtime, "_model_cache", [])
    configure_runtime()
    assert runtime.model_cache() == tmp_path / "bench-mc"


def test_labeling_groups_units_and_the_index_worker_waits_half_a_second_for_company(tmp_path):
    """With a broker, an llm task labels 8 units and an index batch gathers what arrives within 500 ms
    (at 30 units/s that is a batch of about 50 explanations, where 50 ms gave about 12: half the
    index worker's CPU per unit); the in-process default labels one unit per task. Both can be set."""
    base = {"EXPLAINER_DATA_DIR": str(tmp_path)}
    embedded = load_settings(base)
    brokered = load_settings({**base, "EXPLAINER_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert (embedded.task_units, brokered.task_units, brokered.index_batch_wait_ms) == (1, 8, 500.0)
    tuned = load_settings({**base, "EXPLAINER_UNITS_PER_TASK": "3", "EXPLAINER_INDEX_BATCH_WAIT_MS": "20"})
    assert (tuned.task_units, tuned.index_batch_wait_ms) == (3, 20.0)
