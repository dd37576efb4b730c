"""A group of units explained and scored in one call (what one llm task runs), against the fake
OpenAI-compatible server over real HTTP and the SQLite store: one transaction for the group's rows,
each unit's failure its own, and a retry that redoes only the unit that met a transient error."""

from __future__ import annotations

import pytest
from builders.llm import fake_label_options
from sqlalchemy import event

from bench.synthetic import store_synthetic_collection
from explainer.errors import TransientLLMError
from explainer.pipeline import stages
from explainer.pipeline.group import label_group
from explainer.runtime import get_store
from explainer.score.registry import DEFAULT_SCORERS
from store import keyword


@pytest.fixture
def units(settings):
    return store_synthetic_collection(get_store(settings), 4)


_opts = fake_label_options


def _marker(unit_index: int) -> str:
    """How the explain prompt of synthetic unit ``unit_index`` shows the word it fires on."""
    from bench.synthetic import _WORDS

    return f'Activations: "{_WORDS[unit_index % len(_WORDS)]}"'


def _fail_explaining(server, unit_index: int, status: int, times: int = 1_000) -> list[int]:
    """Make the server answer ``status`` to the explain calls of one unit (the first ``times`` of them);
    returns a list that counts those calls."""
    calls: list[int] = []
    real = server.app.route

    def route(path, body):
        user = str(body["messages"][-1]["content"])
        if _marker(unit_index) in user:
            calls.append(1)
            if len(calls) <= times:
                return status, {"error": {"message": f"scripted {status}"}}
        return real(path, body)

    server.app.route = route
    return calls


def _commits(store) -> list[int]:
    seen: list[int] = []
    event.listen(store.engine, "commit", lambda conn: seen.append(1))
    return seen


def test_a_group_is_written_in_one_transaction_and_matches_the_stages(settings, units, server):
    store = get_store(settings)
    opts = _opts(server)
    commits = _commits(store)
    result = label_group(settings, "synthetic", units, opts, opts)
    assert len(commits) == 1  # explanations, scores and keyword rows of the four units together
    assert result.errors == {}
    assert result.explanation_ids == [stages.explanation_key("synthetic", u, opts)[0] for u in units]
    rows = keyword.all_rows(store)
    for eid in result.explanation_ids:
        expl = store.get_explanation(eid)
        assert expl is not None and expl.status == "ok" and expl.text
        score = store.get_score(eid, DEFAULT_SCORERS[0])
        assert score is not None and score.status == "ok"
        assert rows[eid]["text"] == expl.text and rows[eid]["score"] == pytest.approx(score.value)
    # the single-unit stages, on the same units, find everything done: nothing is asked or written again
    calls, before = server.app.stats["calls"], len(commits)
    for u in units:
        stages.score_stage(settings, stages.explain_stage(settings, "synthetic", u, opts), opts)
    label_group(settings, "synthetic", units, opts, opts)
    assert server.app.stats["calls"] == calls and len(commits) == before


def test_a_unit_that_fails_is_stored_failed_while_the_others_finish(settings, units, server):
    store = get_store(settings)
    opts = _opts(server)
    _fail_explaining(server, 1, 400)
    result = label_group(settings, "synthetic", [*units, "synth/layers.0.mlp/999"], opts, opts)
    assert result.errors == {"synth/layers.0.mlp/999": "UnknownUnitError: unknown unit id(s): synth/layers.0.mlp/999"}
    failed = store.get_explanation(result.explanation_ids[1])
    assert failed is not None and failed.status == "failed" and "HTTP 400" in (failed.error or "")
    assert store.get_score(result.explanation_ids[1], DEFAULT_SCORERS[0]) is None
    for i in (0, 2, 3):
        expl = store.get_explanation(result.explanation_ids[i])
        assert expl is not None and expl.status == "ok"
        assert store.get_score(result.explanation_ids[i], DEFAULT_SCORERS[0]).status == "ok"


def test_a_transient_error_is_raised_after_the_others_are_written_and_its_retry_redoes_that_unit_alone(
    settings, units, server
):
    store = get_store(settings)
    opts = _opts(server)
    calls = _fail_explaining(server, 2, 500, times=1)
    with pytest.raises(TransientLLMError, match=r"1 of 4 units met a transient error"):
        label_group(settings, "synthetic", units, opts, opts, final_attempt=False)
    eids = [stages.explanation_key("synthetic", u, opts)[0] for u in units]
    assert store.get_explanation(eids[2]) is None  # nothing stored for it: it is retried
    assert all(store.get_explanation(eids[i]).status == "ok" for i in (0, 1, 3))
    explained = server.app.stats["explain"]
    result = label_group(settings, "synthetic", units, opts, opts, final_attempt=False)
    assert server.app.stats["explain"] == explained + 1 and len(calls) == 2  # unit 2 only, asked once more
    assert result.explanation_ids == eids and store.get_explanation(eids[2]).status == "ok"
