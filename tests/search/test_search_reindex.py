"""`explainer check` finds every difference between SQL and the search indexes (missing, extra,
stale text, stale metadata) and `explainer reindex` repairs all of them."""

from __future__ import annotations

import json

from builders.search import unit, write_units

from explainer.runtime import get_index, get_store
from explainer.search.hybrid import search
from explainer.search.reindex import check, reindex
from store.keyword import SEARCH_SCORER
from workers.cli import main


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out


def _counts(report):
    return {
        f"{part}.{kind}": d["count"] for part in ("vector", "keyword") for kind, d in report[part].items() if d["count"]
    }


def test_reindex_builds_both_indexes_from_sql(settings, capsys):
    eids = write_units(settings, index=False)  # SQL (and its keyword rows) only
    report = check(settings)
    assert not report["in_sync"] and _counts(report) == {"vector.missing": 11}
    assert report["sql_explanations"] == 11 and report["vector_entries"] == 0
    code, out = _cli(capsys, "check")
    assert code == 1 and "OUT OF SYNC" in out and "vector missing: 11" in out
    assert search(settings, "xylophone", limit=1)[0]["unit_id"] == unit(11).unit_id  # keyword ranking alone

    code, out = _cli(capsys, "reindex", "--json")
    assert code == 0 and json.loads(out)["indexed"] == 11
    code, out = _cli(capsys, "check", "--json")
    assert code == 0 and json.loads(out)["in_sync"] is True
    store = get_store(settings)
    assert all(store.get_explanation(e).indexed_at for u, e in eids.items() if u != unit(10).unit_id)
    hit = search(settings, "made-up bibliography entries", limit=1)[0]
    assert hit["unit_id"] == unit(0).unit_id and hit["semantic_rank"] == 1


def test_check_reports_each_kind_of_difference_and_reindex_repairs_them(settings, capsys):
    eids = write_units(settings)
    assert check(settings)["in_sync"]
    store, index = get_store(settings), get_index(settings)

    # stale text: the explanation was rewritten (same key) after it was indexed
    e0 = store.get_explanation(eids[unit(0).unit_id])
    key = {
        k: getattr(e0, k)
        for k in ("unit_id", "collection_id", "explainer_model", "prompt_name", "prompt_version", "prompt_hash")
    }
    store.save_explanation(status="ok", text="quotation marks around titles", **key)
    # stale metadata: a new score after indexing
    store.save_score(
        explanation_id=eids[unit(1).unit_id],
        scorer=SEARCH_SCORER,
        simulator_model="fake",
        status="ok",
        value=0.05,
        ci_low=0.0,
        ci_high=0.1,
    )
    # extra: an entry SQL does not back; missing: an entry dropped from the index
    index.upsert(["ghost"], ["a ghost explanation"], [{"unit_id": "tiny/layers.1.mlp/99"}])
    index.delete([eids[unit(2).unit_id]])
    # keyword index drifting by hand (e.g. a crash between the two writes)
    from sqlalchemy import update

    from store.schema import keyword_docs

    with store.engine.begin() as conn:
        conn.execute(
            update(keyword_docs).where(keyword_docs.c.explanation_id == eids[unit(3).unit_id]).values(score=0.99)
        )
        conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id == eids[unit(4).unit_id]))

    report = check(settings)
    assert _counts(report) == {
        "vector.missing": 1,
        "vector.extra": 1,
        "vector.stale_text": 1,
        "vector.stale_metadata": 1,
        "keyword.missing": 1,
        "keyword.stale": 1,
    }
    assert report["vector"]["extra"]["ids"] == ["ghost"]
    assert report["vector"]["stale_text"]["ids"] == [eids[unit(0).unit_id]]
    assert report["vector"]["stale_metadata"]["ids"] == [eids[unit(1).unit_id]]
    code, out = _cli(capsys, "check")
    assert code == 1 and "vector extra: 1  e.g. ghost" in out

    result = reindex(settings)
    assert (result["indexed"], result["deleted"], result["keyword_docs"]) == (11, 1, 11)
    assert check(settings)["in_sync"]
    assert _cli(capsys, "check")[0] == 0
    assert search(settings, "quotation marks around titles", limit=1)[0]["unit_id"] == unit(0).unit_id


def test_check_on_an_empty_store_is_in_sync(settings, capsys):
    code, out = _cli(capsys, "check")
    assert code == 0 and out.startswith("in sync")
