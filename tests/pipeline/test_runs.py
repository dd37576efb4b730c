"""Labeling runs on the embedded default (in-process Celery worker, SQLite, Chroma directory) against a
fake OpenAI-compatible server over real HTTP: a run is reused by the same options, resumes without
redoing work or adding rows, retries only failures when asked, and `explainer runs` reports it."""

from __future__ import annotations

import json

import pytest
from builders.llm import fake_label_options

from bench.synthetic import store_synthetic_collection
from explainer.pipeline import stages as pipeline
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from explainer.score.registry import DEFAULT_SCORERS
from store import runs
from workers.batch import label_units, open_run, run_key
from workers.cli import main


@pytest.fixture
def units(settings):
    return store_synthetic_collection(get_store(settings), 8)


_opts = fake_label_options


def _explain_calls(server):
    return server.app.stats["explain"] + sum(server.app.stats["faults"].values())


def test_run_units_point_at_the_explanation_keys(settings, units, server):
    opts = _opts(server)
    run_id = open_run(settings, "synthetic", units[:3], opts)
    assert run_id == run_key("synthetic", opts) == run_key("synthetic", _opts(server, retry_failed=True))
    assert run_id != run_key("synthetic", _opts(server, best_of=2))
    store = get_store(settings)
    with store.engine.connect() as conn:
        rows = dict(
            conn.execute(
                runs.run_units.select().with_only_columns(runs.run_units.c.unit_id, runs.run_units.c.explanation_id)
            ).all()
        )
    assert rows == {u: pipeline.explanation_key("synthetic", u, opts)[0] for u in units[:3]}
    assert dict(runs.unit_states(store, run_id)) == {u: "pending" for u in units[:3]}
    # adding units again keeps one row per unit
    open_run(settings, "synthetic", units[:5], opts)
    assert runs.get_run(store, run_id)["n_units"] == 5


def test_resume_redoes_nothing_and_adds_no_rows(settings, units, server):
    store = get_store(settings)
    first = label_units(settings, "synthetic", units[:3], _opts(server), progress=False)
    assert (first.submitted, first.skipped, first.task_errors) == (3, 0, {})
    assert _explain_calls(server) == 3
    rows = store.count_rows()

    # the same command over more units continues the run: only the new units are sent
    second = label_units(settings, "synthetic", units, _opts(server), progress=False, window=2)
    assert second.run_id == first.run_id
    assert (second.submitted, second.skipped) == (5, 3)
    assert _explain_calls(server) == 8
    assert second.counts == {"done": 8, "failed": 0, "pending": 0, "units": 8, "tokens": second.counts["tokens"]}
    assert second.counts["tokens"] > 0

    # and once more: nothing is sent, nothing is written
    created = {e.id: e.created_at for e in store.explanations_for(units)}
    third = label_units(settings, "synthetic", units, _opts(server), progress=False)
    assert (third.submitted, third.skipped) == (0, 8) and _explain_calls(server) == 8
    assert {e.id: e.created_at for e in store.explanations_for(units)} == created
    after = store.count_rows()
    assert after["explanations"] == 8 and after["scores"] == 8 and rows["explanations"] == 3
    assert runs.get_run(store, first.run_id)["status"] == "done"


def test_retry_failed_retries_only_failures(settings, units, server):
    store = get_store(settings)
    server.app.force = "no-words"
    label_units(settings, "synthetic", units[:2], _opts(server), progress=False)
    server.app.force = None
    result = label_units(settings, "synthetic", units[:4], _opts(server), progress=False)
    assert result.counts["failed"] == 2 and result.counts["done"] == 2
    fails = runs.failures(store, result.run_id)
    assert [f["unit_id"] for f in fails] == sorted(units[:2])
    assert all(f["stage"] == "explain" and "no words" in f["reason"] for f in fails), fails
    for e in store.explanations_for(units[:2]):
        assert e.status == "failed" and e.text is None  # garbage is never stored as text

    calls = _explain_calls(server)
    again = label_units(settings, "synthetic", units[:4], _opts(server), progress=False)
    assert again.submitted == 0 and _explain_calls(server) == calls  # failures stand without the flag
    retried = label_units(settings, "synthetic", units[:4], _opts(server, retry_failed=True), progress=False)
    assert retried.submitted == 2 and _explain_calls(server) == calls + 2
    assert retried.counts["done"] == 4 and retried.counts["failed"] == 0
    assert store.count_rows()["explanations"] == 4


def test_runs_command_lists_and_shows(settings, units, server, capsys):
    server.app.force = "no-words"
    label_units(settings, "synthetic", units[:1], _opts(server), progress=False)
    server.app.force = None
    result = label_units(settings, "synthetic", units[:3], _opts(server), progress=False)

    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 1
    r = listed[0]
    assert (r["id"], r["done"], r["failed"], r["pending"], r["units"]) == (result.run_id, 2, 1, 0, 3)
    assert r["status"] == "done" and r["explainer_model"] == "fake" and r["simulator"] == list(DEFAULT_SCORERS)
    expl = get_store(settings).explanations_for(units[:3])
    assert r["tokens"] == sum((e.prompt_tokens or 0) + (e.completion_tokens or 0) for e in expl) > 0

    assert main(["runs", "show", result.run_id[:8], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["failures"][0]["unit_id"] == units[0] and "no words" in shown["failures"][0]["reason"]
    assert main(["runs", "show", result.run_id[:8]]) == 0
    text = capsys.readouterr().out
    assert "2 done, 1 failed, 0 pending of 3 units" in text and f"failed {units[0]} (explain)" in text
    assert main(["runs", "show", "ffffffffff"]) == 2
    assert "no run" in capsys.readouterr().err


def test_units_argument():
    from explainer.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["label", "--units", "all"]).units == "all"
    assert p.parse_args(["label", "--units", "7"]).units == 7
    assert p.parse_args(["label"]).units is None
    with pytest.raises(SystemExit):
        p.parse_args(["label", "--units", "0"])


def test_a_duplicate_delivery_never_replaces_an_ok_explanation(settings, units):
    store = get_store(settings)
    key = dict(
        unit_id=units[0],
        collection_id="synthetic",
        explainer_model="m",
        prompt_name="explain",
        prompt_version="1",
        prompt_hash="h" * 64,
    )
    eid = store.save_explanation(status="ok", text="first answer", keep_ok=True, **key)
    store.mark_indexed(eid)
    store.save_explanation(status="ok", text="second answer", keep_ok=True, **key)
    store.save_explanation(status="failed", error="gave up", keep_ok=True, **key)
    row = store.get_explanation(eid)
    assert (row.status, row.text) == ("ok", "first answer") and row.indexed_at is not None


def test_workers_load_no_model_at_import():
    """A worker process imports the tasks before it forks or starts threads: no torch, no model
    may be loaded then; models are loaded on first use, once per process (a keyed cache)."""
    import subprocess
    import sys

    code = (
        "import sys, workers, workers.batch, explainer.collect.models as m; "
        "print(sorted(k for k in ('torch', 'transformers', 'chromadb', 'sentence_transformers') if k in sys.modules), len(m._cache))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "0"]


def test_collect_and_label_queues():
    from workers.celery_app import app

    routes = app.conf.task_routes
    assert routes["explainer.collect"] == {"queue": "collect"}
    assert routes["explainer.label_group"] == {"queue": "llm"}
    assert routes["explainer.index"] == {"queue": "index"}
    assert routes["explainer.score_subject"] == {"queue": "collect"}  # steering needs the subject model
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost and app.conf.worker_prefetch_multiplier == 1


def test_scorers_that_steer_the_subject_model_get_their_own_step_on_the_collect_queue():
    from workers.tasks import group_chain

    opts = LabelOptions(scorers=("simulation-context", "intervention-embedding")).to_payload()
    units = ["m/layers.1.mlp/3", "m/layers.1.mlp/4"]
    steps = group_chain("cid", units, opts).tasks
    assert [t.task for t in steps] == ["explainer.label_group", "explainer.score_subject", "explainer.index"]
    assert steps[0].args[1] == units  # one task for the group
    assert steps[0].args[-1]["scorers"] == ["simulation-context"]  # explained, then scored by the LLM-side scorers
    assert steps[1].args[-1]["scorers"] == ["intervention-embedding"]
    assert tuple(steps[2].args[-1]["scorers"]) == opts["scorers"]  # the index step ranks by the first scorer
    only = group_chain("cid", units, LabelOptions(scorers=("intervention",)).to_payload()).tasks
    assert [t.task for t in only] == ["explainer.label_group", "explainer.score_subject", "explainer.index"]
    assert only[0].args[-1] is None  # explained only
    plain = group_chain("cid", units, LabelOptions().to_payload()).tasks
    assert [t.task for t in plain] == ["explainer.label_group", "explainer.index"]


def test_a_run_sends_one_chain_per_group_of_units(settings, units, server, monkeypatch):
    """With ``units_per_task`` 3, eight units go as three chains (3 + 3 + 2), and every unit is labeled
    once; the window counts units."""
    import workers.tasks as tasks

    sent: list[list[str]] = []
    real = tasks.group_chain

    def spy(collection_id, unit_ids, options):
        sent.append(list(unit_ids))
        return real(collection_id, unit_ids, options)

    monkeypatch.setattr(tasks, "group_chain", spy)
    result = label_units(settings, "synthetic", units, _opts(server), progress=False, units_per_task=3, window=6)
    assert [len(g) for g in sent] == [3, 3, 2] and sorted(u for g in sent for u in g) == sorted(units)
    assert result.counts["done"] == 8 and result.submitted == 8 and not result.task_errors
    assert server.app.stats["explain"] == 8


def test_a_unit_its_group_cannot_label_is_reported_while_the_others_finish(settings, units, server):
    missing = "synth/layers.0.mlp/999"
    store = get_store(settings)
    result = label_units(settings, "synthetic", [*units[:3], missing], _opts(server), progress=False, units_per_task=4)
    assert set(result.task_errors) == {missing} and "UnknownUnitError" in result.task_errors[missing]
    assert result.counts["done"] == 3
    assert all(store.get_explanation(pipeline.explanation_key("synthetic", u, _opts(server))[0]) for u in units[:3])


def test_no_more_chains_in_flight_than_the_window(settings, units, server, monkeypatch):
    import workers.batch as batch

    seen = []
    real = batch._finished

    def spy(app, in_flight):
        seen.append(len(in_flight))
        return real(app, in_flight)

    monkeypatch.setattr(batch, "_finished", spy)
    result = label_units(settings, "synthetic", units, _opts(server), progress=False, window=3)
    assert result.counts["done"] == 8 and result.submitted == 8
    assert max(seen) == 3  # the window was filled, never exceeded


def test_label_prints_the_run_summary(capsys):
    from explainer.cli.labeling import print_label

    print_label(
        {
            "run_id": "abcdef1234567890",
            "run": {"done": 5, "failed": 1, "pending": 0, "units": 6, "tokens": 900},
            "submitted": 2,
            "already_finished": 4,
            "seconds": 1.5,
            "task_errors": {},
        },
    )
    out = capsys.readouterr().out
    assert out.startswith("run abcdef123456: 5 done, 1 failed, 0 pending of 6 units (4 finished before, 2 sent now")


def test_a_thread_pool_worker_loads_each_model_once():
    """The llm workers run many threads: the first tasks of all of them, arriving together, must
    share one embedding model (and one subject/local model: explainer.collect.models.load_model locks too)."""
    from concurrent.futures import ThreadPoolExecutor

    import store.embedding as vectors

    embedders = [vectors.LocalEmbedder() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        models = list(pool.map(lambda e: e._load(), embedders))
    assert len({id(m) for m in models}) == 1
