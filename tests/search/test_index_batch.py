"""Indexing in batches: ``index_many`` embeds and upserts many explanations at once with what a
one-by-one ``index_stage`` would store, and skips those already indexed with their current score."""

from __future__ import annotations

from builders.search import write_units

from explainer.runtime import get_index, get_store
from explainer.search.index import index_many, index_stage
from explainer.search.reindex import check
from store.keyword import SEARCH_SCORER


def test_index_many_indexes_what_index_stage_would_and_only_what_changed(settings, tmp_path, monkeypatch):
    eids = list(write_units(settings, index=False).values())  # 11 ok, 1 failed
    assert index_many(settings, eids) == 11  # the failed one is not indexed
    assert check(settings)["in_sync"]
    batched = get_index(settings).collection.get(ids=eids, include=["metadatas", "documents"])
    assert index_many(settings, eids) == 0  # nothing changed: nothing embedded again

    store = get_store(settings)
    ok = [e for e in eids if store.get_explanation(e).status == "ok"]
    store.save_score(explanation_id=ok[0], scorer=SEARCH_SCORER, simulator_model="fake", status="ok", value=0.93)
    assert index_many(settings, eids) == 1  # only the newly scored one
    assert check(settings)["in_sync"]  # both the vector metadata and the keyword row hold 0.93
    meta = get_index(settings).collection.get(ids=[ok[0]], include=["metadatas"])["metadatas"][0]
    assert meta["score"] == 0.93
    from store.keyword import iter_docs
    from store.records import Score

    [doc] = iter_docs(store, [ok[0]])
    assert isinstance(doc.score, Score) and (doc.score.scorer, doc.score.value) == (SEARCH_SCORER, 0.93)

    # the same explanations indexed one by one in another data dir store the same entries
    monkeypatch.setenv("EXPLAINER_DATA_DIR", str(tmp_path / "one-by-one"))
    from explainer.settings import load_settings

    other = load_settings()
    for eid in write_units(other, index=False).values():
        index_stage(other, eid)
    single = get_index(other).collection.get(ids=eids, include=["metadatas", "documents"])
    by_id = lambda got: {i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}  # noqa: E731
    assert by_id(single) == by_id(batched)


def test_a_score_of_another_scorer_leaves_the_keyword_row_alone(settings):
    eids = list(write_units(settings, index=True).values())
    store = get_store(settings)
    ok = next(e for e in eids if store.get_explanation(e).status == "ok")
    store.save_score(explanation_id=ok, scorer="simulation-logits", simulator_model="x", status="ok", value=0.99)
    assert check(settings)["in_sync"]
    store.save_score(explanation_id=ok, scorer=SEARCH_SCORER, simulator_model="x", status="failed", error="boom")
    report = check(settings)  # the keyword row now says unscored; the vector entry still has the old score
    assert report["keyword"]["stale"]["count"] == 0 and report["vector"]["stale_metadata"]["count"] == 1


def test_units_written_before_the_domain_column_are_read_from_their_record(settings):
    """A store whose units rows lack ``top_domains`` and ``name`` (written by an older version) gets
    the same keyword rows: they are read from the record then."""
    from sqlalchemy import update

    from store.keyword import iter_docs
    from store.schema import units

    eids = list(write_units(settings, index=False).values())
    store = get_store(settings)
    new = {d.explanation_id: d for d in iter_docs(store, eids)}
    with store.engine.begin() as conn:
        conn.execute(update(units).values(top_domains=None, name=None))
    old = {d.explanation_id: d for d in iter_docs(store, eids)}
    assert old == new and len(new) == 11 and all(d.domains for d in new.values())


def test_a_repeated_search_query_is_embedded_once(monkeypatch):
    from store.embedding import LocalEmbedder

    emb = LocalEmbedder()
    calls: list[list[str]] = []
    real = emb.embed
    monkeypatch.setattr(emb, "embed", lambda texts: calls.append(texts) or real(texts))
    monkeypatch.setattr(LocalEmbedder, "QUERY_CACHE", 2)
    first = emb.embed_query("closing parentheses in Python code")
    assert emb.embed_query("closing parentheses in Python code") == first and len(calls) == 1
    assert first == real(["closing parentheses in Python code"])[0]  # the same vector as embedding it anew
    emb.embed_query("legal disclaimers")
    emb.embed_query("warranty exclusions")  # the cache holds two: the first query is dropped
    emb.embed_query("closing parentheses in Python code")
    assert len(calls) == 4
