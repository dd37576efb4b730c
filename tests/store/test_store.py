"""The SQL store on SQLite and on PostgreSQL: round trips, upserts and failure rows."""

import json
from datetime import UTC, datetime

import pytest

from store.records import UnitRecord, UnitStats, Window
from store.sql import SQLStore, key_id


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLStore(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        s = SQLStore(request.getfixturevalue("postgres_url"))  # a fresh database
    yield s
    s.engine.dispose()


def _record(index, windows=True, model="tiny", hookpoint="layers.1.mlp"):
    ws = (
        (
            Window("top-0", "top", "explain", "code:a.py", "code", ("def", " foo"), (0.0, 2.5)),
            Window("top-1", "top", "heldout", "docs:b.md", "docs", ("The", " é", "\n"), (1.25, -0.5, 0.0)),
            Window("random-0", "random", "heldout", "legal:c.txt", "legal", ("x",), (0.0,)),
        )
        if windows
        else ()
    )
    stats = UnitStats(max=2.5 if windows else 0.0, mean=0.25, std=0.5, density=0.125 if windows else 0.0, n_tokens=400)
    return UnitRecord(f"{model}/{hookpoint}/{index}", model, hookpoint, index, stats, ws)


def _start(store, cid="c1", **kw):
    store.start_collection(
        cid, kw.get("model", "tiny"), "layers.1.mlp", "builtin", "f" * 64, {"window": 16, "top_k": 4}
    )


EXPL = dict(
    collection_id="c1", explainer_model="fake-llm", prompt_name="explain", prompt_version="1", prompt_hash="a" * 64
)


def test_start_and_finish_collection(store):
    assert store.get_collection("c1") is None
    _start(store)
    row = store.get_collection("c1")
    assert row["status"] == "running"
    assert (row["model"], row["hookpoint"], row["corpus"], row["corpus_hash"]) == (
        "tiny",
        "layers.1.mlp",
        "builtin",
        "f" * 64,
    )
    assert json.loads(row["config"]) == {"top_k": 4, "window": 16}
    assert row["finished_at"] is None and row["n_units"] is None
    records = [_record(i) for i in range(3)] + [_record(3, windows=False)]
    store.finish_collection("c1", records, 400)
    row = store.get_collection("c1")
    assert (row["status"], row["n_tokens"], row["n_units"], row["error"]) == ("done", 400, 4, None)
    assert row["finished_at"] is not None
    assert store.count_rows() == {"collections": 1, "units": 4, "explanations": 0, "scores": 0}


def test_fail_collection(store):
    _start(store)
    store.fail_collection("c1", "RuntimeError: boom")
    row = store.get_collection("c1")
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: boom")


def test_units_round_trip(store):
    _start(store)
    records = [_record(i) for i in range(3)] + [_record(3, windows=False)]
    store.finish_collection("c1", records, 400)
    assert store.get_record("tiny/layers.1.mlp/1") == records[1]
    assert store.get_record("tiny/layers.1.mlp/99") is None
    got = store.get_records([r.unit_id for r in records] + ["nope"])
    assert got == {r.unit_id: ("c1", r) for r in records}
    live = store.unit_rows("c1")
    assert [r["idx"] for r in live] == [0, 1, 2]  # the unit without windows is not live
    every = store.unit_rows("c1", live_only=False)
    assert [(r["idx"], r["live"]) for r in every] == [(0, True), (1, True), (2, True), (3, False)]
    assert "record" not in every[0]
    assert (every[0]["max_act"], every[0]["mean_act"], every[0]["std_act"], every[0]["density"]) == (
        2.5,
        0.25,
        0.5,
        0.125,
    )
    assert every[0]["collection_id"] == "c1" and every[0]["unit_id"] == "tiny/layers.1.mlp/0"


def test_finishing_twice_upserts_units(store):
    _start(store)
    store.finish_collection("c1", [_record(0), _record(1)], 400)
    store.finish_collection("c1", [_record(0), _record(1)], 400)
    assert store.count_rows()["units"] == 2


def test_start_collection_again_discards_stale_units(store):
    _start(store, "c1")
    _start(store, "c2", model="other")
    store.finish_collection("c1", [_record(i) for i in range(3)], 400)
    store.finish_collection("c2", [_record(0, model="other")], 400)
    # a crash: the collection is restarted from scratch
    _start(store, "c1")
    assert store.get_collection("c1")["status"] == "running"
    assert store.get_collection("c1")["finished_at"] is None
    assert store.unit_rows("c1", live_only=False) == []
    assert store.get_record("tiny/layers.1.mlp/0") is None
    # other collections keep their units
    assert [r["unit_id"] for r in store.unit_rows("c2", live_only=False)] == ["other/layers.1.mlp/0"]
    assert store.count_rows() == {"collections": 2, "units": 1, "explanations": 0, "scores": 0}


def _with_units(store, n=2):
    _start(store)
    store.finish_collection("c1", [_record(i) for i in range(n)], 400)


def test_save_explanation_is_an_upsert(store):
    _with_units(store)
    uid = "tiny/layers.1.mlp/0"
    eid = store.save_explanation(unit_id=uid, status="failed", error="ParseError: no words", **EXPL)
    assert eid == key_id(uid, "c1", "fake-llm", "a" * 64)
    eid2 = store.save_explanation(
        unit_id=uid,
        status="ok",
        text="the word foo",
        window_ids=["top-0"],
        settings={"model": "fake-llm", "temperature": 0.0},
        prompt_tokens=120,
        completion_tokens=4,
        **EXPL,
    )
    assert eid2 == eid
    assert store.count_rows()["explanations"] == 1
    row = store.get_explanation(eid)
    assert (row.status, row.text, row.error) == ("ok", "the word foo", None)
    assert list(row.window_ids) == ["top-0"]
    assert row.settings == {"model": "fake-llm", "temperature": 0.0}
    assert (row.prompt_tokens, row.completion_tokens) == (120, 4)
    assert (row.prompt_name, row.prompt_version, row.prompt_hash) == ("explain", "1", "a" * 64)
    assert row.created_at.tzinfo is not None  # aware, whatever the server's time zone
    assert abs((datetime.now(UTC) - row.created_at).total_seconds()) < 300
    assert row.indexed_at is None
    # a different explainer model is a different row
    other = store.save_explanation(unit_id=uid, status="ok", text="x", **{**EXPL, "explainer_model": "m2"})
    assert other != eid and store.count_rows()["explanations"] == 2
    assert [e.explainer_model for e in store.explanations_for([uid])] == ["fake-llm", "m2"]
    assert store.labeled_unit_ids() == [uid]


def test_failed_explanation_stores_no_text(store):
    _with_units(store)
    eid = store.save_explanation(
        unit_id="tiny/layers.1.mlp/1",
        status="failed",
        text="half an answer",
        error="PermanentLLMError: HTTP 401",
        **EXPL,
    )
    row = store.get_explanation(eid)
    assert (row.status, row.text, row.error) == ("failed", None, "PermanentLLMError: HTTP 401")
    assert list(row.window_ids) == [] and row.settings == {}


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_ok_explanation_needs_a_text(store, text):
    _with_units(store)
    with pytest.raises(ValueError, match="needs a text"):
        store.save_explanation(unit_id="tiny/layers.1.mlp/0", status="ok", text=text, **EXPL)
    assert store.count_rows()["explanations"] == 0


def test_mark_indexed(store):
    _with_units(store)
    eid = store.save_explanation(unit_id="tiny/layers.1.mlp/0", status="ok", text="foo", **EXPL)
    store.mark_indexed(eid)
    assert store.get_explanation(eid).indexed_at.tzinfo is not None
    assert store.get_explanation("nope") is None


def test_save_score_is_an_upsert(store):
    _with_units(store)
    eid = store.save_explanation(unit_id="tiny/layers.1.mlp/0", status="ok", text="foo", **EXPL)
    sid = store.save_score(
        explanation_id=eid, scorer="simulation-logits", simulator_model="sim", status="failed", error="timeout"
    )
    sid2 = store.save_score(
        explanation_id=eid,
        scorer="simulation-logits",
        simulator_model="sim",
        status="ok",
        value=0.5,
        ci_low=0.25,
        ci_high=0.75,
        per_domain={"code": 0.5, "docs": -0.125},
        heldout_ids=["top-1", "random-0"],
        n_tokens=4,
    )
    assert sid == sid2 == key_id(eid, "simulation-logits")
    assert store.count_rows()["scores"] == 1
    row = store.get_score(eid, "simulation-logits")
    assert (row.status, row.value, row.ci_low, row.ci_high, row.n_tokens, row.error) == ("ok", 0.5, 0.25, 0.75, 4, None)
    assert row.per_domain == {"code": 0.5, "docs": -0.125}
    assert list(row.heldout_ids) == ["top-1", "random-0"]
    assert store.get_score(eid, "other-scorer") is None
    store.save_score(explanation_id=eid, scorer="other-scorer", simulator_model=None, status="ok", value=0.1)
    assert store.count_rows()["scores"] == 2
    assert sorted(s.scorer for s in store.scores_for([eid])) == ["other-scorer", "simulation-logits"]


def test_explanation_of_unknown_unit_is_rejected(store):
    from sqlalchemy.exc import IntegrityError

    _with_units(store)
    with pytest.raises(IntegrityError):
        store.save_explanation(unit_id="tiny/layers.1.mlp/999", status="failed", error="x", **EXPL)


def test_collections_of_the_same_hookpoint_keep_their_own_units(store):
    _start(store, "c1")
    store.finish_collection("c1", [_record(0), _record(1)], 400)
    store.start_collection("c2", "tiny", "layers.1.mlp", "other-corpus", "e" * 64, {"window": 16, "top_k": 4})
    store.finish_collection("c2", [_record(0), _record(1)], 500)
    # c1 is still "done" with n_units=2, so collect_stage reuses it; its units must still be there
    assert store.get_collection("c1")["n_units"] == 2
    assert [r["idx"] for r in store.unit_rows("c1")] == [0, 1]


def test_opening_an_older_store_adds_new_nullable_columns(tmp_path):
    """A database written before ``scores.details`` existed gains the column on open, keeps its
    rows, and accepts the new field."""
    import sqlite3

    path = tmp_path / "old.db"
    s = SQLStore(f"sqlite:///{path}")
    _start(s)
    s.finish_collection("c1", [_record(0)], 400)
    eid = s.save_explanation(
        unit_id="tiny/layers.1.mlp/0",
        collection_id="c1",
        explainer_model="m",
        prompt_name="explain",
        prompt_version="1",
        prompt_hash="h",
        status="ok",
        text="digits",
    )
    s.save_score(explanation_id=eid, scorer="sim", simulator_model="m", status="ok", value=0.5)
    s.engine.dispose()
    with sqlite3.connect(path) as conn:  # what an older version wrote: no `details` column
        conn.execute("ALTER TABLE scores DROP COLUMN details")
        assert "details" not in [r[1] for r in conn.execute("PRAGMA table_info(scores)")]

    s = SQLStore(f"sqlite:///{path}")
    assert s.get_score(eid, "sim").value == 0.5
    s.save_score(explanation_id=eid, scorer="sim", simulator_model="m", status="ok", value=0.6, details={"method": "x"})
    assert s.get_score(eid, "sim").details == {"method": "x"}
    s.engine.dispose()
