"""Hybrid search: semantic (Chroma + MiniLM) and keyword (FTS5 / PostgreSQL) rankings fused by RRF,
filters inside both queries, hit contents, pagination, limits, and the keyword index's sync."""

from __future__ import annotations

import json

import pytest
from builders.search import UNITS, unit, write_units

from explainer.errors import InputError
from explainer.runtime import get_index, get_store
from explainer.search.hybrid import DEPTH, SearchFilters, load_scan, rrf_fuse, search, search_page
from store.keyword import SEARCH_SCORER, UNSCORED, query_terms
from workers.cli import main


def ids(hits):
    return [h["unit_id"] for h in hits]


@pytest.fixture(params=["chroma", "scan"])
def engines(searchable, request):
    """The searchable deployment, ranked by Chroma's filtered query and the SQL full-text index, or by
    the in-memory exact vector scan and BM25 keyword ranking (what the HTTP API uses)."""
    store = get_store(searchable)
    if request.param == "scan":
        assert load_scan(searchable) == 11
        assert store.keyword_scan is not None and len(store.keyword_scan) == 11  # the ok explanations
    else:
        assert store.keyword_scan is None
    return searchable


def test_rrf_fuse_rewards_agreement_and_keeps_order_on_ties():
    fused = rrf_fuse([["a", "b", "c"], ["b", "c"]], k=60)
    assert [x for x, _ in fused] == ["b", "c", "a"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert rrf_fuse([["x", "y"], []]) == [("x", 1 / 61), ("y", 1 / 62)]
    assert [x for x, _ in rrf_fuse([["p"], ["q"]])] == ["p", "q"]  # tie: the earlier ranking wins


def test_semantic_ranking_finds_meaning_without_shared_words(engines):
    hits = search(engines, "made-up bibliography entries for scholarly articles", limit=3)
    assert ids(hits)[0] == unit(0).unit_id
    assert hits[0]["semantic_rank"] == 1 and hits[0]["keyword_rank"] is None


def test_keyword_ranking_finds_rare_words_and_stems(engines):
    hits = search(engines, "xylophone", limit=3)
    assert ids(hits)[0] == unit(11).unit_id and hits[0]["keyword_rank"] == 1
    # porter stemming: "citation" matches "citations", "warranties" matches "warranty"
    store = get_store(engines)
    got = [eid for eid, _ in store.keyword_search("citation", limit=5)]
    assert len(got) == 1 and store.get_explanation(got[0]).unit_id == unit(0).unit_id
    got = [eid for eid, _ in store.keyword_search("warranties", limit=5)]
    assert [store.get_explanation(e).unit_id for e in got] == [unit(2).unit_id]


def test_both_rankings_agreeing_beat_either_alone(engines):
    hits = search(engines, "Python function definitions", limit=5)
    assert ids(hits)[0] == unit(1).unit_id
    assert hits[0]["semantic_rank"] is not None and hits[0]["keyword_rank"] is not None


@pytest.mark.parametrize(
    "filters, allowed",
    [
        (SearchFilters(layer=2), {3, 4, 5, 6, 7}),
        (SearchFilters(source="resid"), {6, 7}),
        (SearchFilters(model="other"), {8}),
        (SearchFilters(min_score=0.45), {0, 1, 2, 8}),
        (SearchFilters(domain="legal"), {2, 4}),
        (SearchFilters(layer=1, min_score=0.5, domain="code"), {1, 8}),
    ],
)
def test_filters_restrict_every_hit(engines, filters, allowed):
    for query in ("fabricated citations", "Python", "weather"):
        hits = search(engines, query, filters, limit=20)
        assert {h["unit_id"] for h in hits} == {unit(i).unit_id for i in allowed}


def test_filters_are_applied_inside_each_ranking_not_after(engines):
    """With a page of 1, a post-filter would return nothing (the global best is filtered out);
    filtering inside the queries returns the best *allowed* explanation."""
    store, index = get_store(engines), get_index(engines)
    kw = store.keyword_search("python function definitions import", limit=1, model="other")
    assert [store.get_explanation(e).unit_id for e, _ in kw] == [unit(8).unit_id]
    vec = index.embedder.embed(["fabricated academic citations"])[0]
    sem = index.query_vector(vec, n=1, **SearchFilters(domain="legal").sql())
    assert len(sem) == 1 and sem[0][2]["unit_id"] in {unit(2).unit_id, unit(4).unit_id}
    hits = search(engines, "fabricated academic citations", SearchFilters(layer=2), limit=1)
    assert len(hits) == 1 and hits[0]["layer"] == 2


def test_unscored_and_failed_explanations(engines):
    hits = search(engines, "negation words such as not and never", limit=3)
    assert hits[0]["unit_id"] == unit(9).unit_id and hits[0]["score"] is None
    assert unit(10).unit_id not in ids(search(engines, "x y z", limit=20))  # failed: not indexed
    assert unit(9).unit_id not in ids(search(engines, "negation", SearchFilters(min_score=-1.0), limit=20))


def test_hit_shows_unit_explanation_score_interval_and_highlighted_example(engines):
    h = search(engines, "fake references to journal papers", limit=1)[0]
    assert h["unit_id"] == unit(0).unit_id and h["rank"] == 1
    assert h["explanation"] == unit(0).explanation
    assert h["score"] == {
        "scorer": SEARCH_SCORER,
        "value": 0.62,
        "ci95": [pytest.approx(0.52), pytest.approx(0.72)],
        "per_domain": {"docs": pytest.approx(0.67)},
        "meaning": "good: the explanation predicts well when this unit fires",
        "scorer_discrimination": h["score"]["scorer_discrimination"],
    }
    assert h["top_example"] == "as shown by Smith «et» «al.» ( 2019 ) in Nature"
    levels = {t["text"].strip(): t["level"] for t in h["top_example_tokens"]}
    assert levels["et"] == 10 and levels["Smith"] == 0
    assert (h["model"], h["hookpoint"], h["layer"], h["source"]) == ("tiny", "layers.1.mlp", 1, "mlp")
    assert 0 < h["similarity"] <= 1 and h["rrf"] > 0


def test_pages_do_not_overlap_and_end(engines):
    first = search_page(engines, "words", limit=4)
    second = search_page(engines, "words", limit=4, offset=4)
    assert first["next_offset"] == 4 and len(first["hits"]) == 4
    assert not set(ids(first["hits"])) & set(ids(second["hits"]))
    assert [h["rank"] for h in second["hits"]] == [5, 6, 7, 8]
    everything = search_page(engines, "words", limit=50)
    assert everything["next_offset"] is None and len(everything["hits"]) == 11  # the ok explanations of UNITS
    assert ids(everything["hits"])[:8] == ids(first["hits"]) + ids(second["hits"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(query="   "), "empty"),
        (dict(query="x" * 501), "longer than 500"),
        (dict(query="x", limit=0), "limit must be between 1 and 50"),
        (dict(query="x", limit=51), "limit must be between 1 and 50"),
        (dict(query="x", limit=50, offset=DEPTH), "offset \\+ limit"),
        (dict(query="x", filters=SearchFilters(source="attn")), "source must be one of"),
        (dict(query="x", filters=SearchFilters(min_score=1.5)), "min-score must be between"),
        (dict(query="x", filters=SearchFilters(domain="le,gal")), "invalid domain"),
        (dict(query="x", filters=SearchFilters(model="a" * 300)), "invalid model"),
        (dict(query="x", filters=SearchFilters(layer=-3)), "layer must be between"),
    ],
)
def test_bad_queries_and_filters_are_input_errors(settings, kwargs, message):
    with pytest.raises(InputError, match=message):
        search_page(settings, **kwargs)


def test_query_terms_drop_stopwords_and_syntax():
    assert query_terms('fires on "fabricated" citations AND NOT (xy* OR y) 7') == [
        "fabricated",
        "citations",
        "not",
        "xy",
        "7",
    ]
    assert query_terms("the of and") == []
    assert len(query_terms(" ".join(f"w{i}" for i in range(40)))) == 16


def test_keyword_index_follows_saves(settings):
    write_units(settings, UNITS[:2], index=False)
    store = get_store(settings)
    hit = store.keyword_search("citations", limit=5)
    eid = hit[0][0]
    from store import keyword

    row = keyword.all_rows(store)[eid]
    assert (row["layer"], row["source"], row["domains"], row["score"]) == (1, "mlp", ",docs,", 0.62)
    store.save_score(explanation_id=eid, scorer=SEARCH_SCORER, simulator_model="fake", status="failed", error="boom")
    assert keyword.all_rows(store)[eid]["score"] == UNSCORED
    assert store.keyword_search("citations", limit=5, min_score=-1.0) == []
    e = store.get_explanation(eid)
    common = {
        k: getattr(e, k)
        for k in ("unit_id", "collection_id", "explainer_model", "prompt_name", "prompt_version", "prompt_hash")
    }
    store.save_explanation(status="ok", text="dates in letters", **common)  # same key, new text
    assert store.keyword_search("citations", limit=5) == [] and store.keyword_search("letters", limit=5)[0][0] == eid
    store.save_explanation(status="failed", error="ParseError", **common)
    assert eid not in keyword.all_rows(store) and store.keyword_search("letters", limit=5) == []


def test_loaded_keyword_ranking_follows_every_writer(settings):
    """Once loaded, the in-memory keyword ranking answers as the SQL full-text index does after every
    kind of write — a score, a new text, a failed rewrite, a reindex — with no indexing in between."""
    from explainer.search.reindex import reindex

    write_units(settings, UNITS[:4], index=False)
    store = get_store(settings)
    store.load_keyword_scan()

    def same(*queries, **filters):
        for q in queries:
            mine = store.keyword_search(q, limit=10, **filters)
            sql = store.keyword_search(q, limit=10, engine="sql", **filters)
            assert [e for e, _ in mine] == [e for e, _ in sql], (q, filters)
            assert [r for _, r in mine] == pytest.approx([r for _, r in sql], rel=1e-9)

    same("citations python warranty", "function definitions", min_score=0.5)
    eid = store.keyword_search("citations", limit=5, engine="sql")[0][0]
    store.save_score(explanation_id=eid, scorer=SEARCH_SCORER, simulator_model="fake", status="ok", value=0.1)
    same("citations", min_score=0.5)
    assert store.keyword_search("citations", limit=5, min_score=0.5) == []
    e = store.get_explanation(eid)
    common = {
        k: getattr(e, k)
        for k in ("unit_id", "collection_id", "explainer_model", "prompt_name", "prompt_version", "prompt_hash")
    }
    store.save_explanation(status="ok", text="marimba players in letters", **common)
    same("marimba", "citations")
    assert [h for h, _ in store.keyword_search("marimba", limit=5)] == [eid]
    store.save_explanation(status="failed", error="ParseError", **common)
    same("marimba", "letters warranty")
    assert store.keyword_search("marimba", limit=5) == []
    reindex(settings)
    same("citations python warranty", "parentheses brackets")


@pytest.mark.postgres
def test_keyword_search_on_postgres(settings, postgres_url, monkeypatch):
    from explainer.settings import load_settings

    monkeypatch.setenv("EXPLAINER_DATABASE_URL", postgres_url)
    pg = load_settings()
    write_units(pg, index=False)
    store = get_store(pg)
    try:
        got = store.keyword_search("python import statement", limit=5)
        uids = [store.get_explanation(e).unit_id for e, _ in got]
        assert uids[0] == unit(8).unit_id and unit(1).unit_id in uids
        only = store.keyword_search("python import statement", limit=5, model="tiny", domain="code", min_score=0.5)
        assert [store.get_explanation(e).unit_id for e, _ in only] == [unit(1).unit_id]
        assert store.keyword_search("warranties", limit=5, layer=1)  # english stemming
        assert store.keyword_search("warranties", limit=5, layer=2) == []
        assert store.rebuild_keyword_index() == 11
        # the in-memory ranking (BM25 over the same rows) follows the PostgreSQL change log
        scan = store.load_keyword_scan()
        assert len(scan) == 11 and scan.seq > 0
        got = store.keyword_search("python import statement", limit=5)
        assert [store.get_explanation(e).unit_id for e, _ in got][0] == unit(8).unit_id
        eid = got[0][0]
        store.save_score(explanation_id=eid, scorer=SEARCH_SCORER, simulator_model="f", status="failed", error="x")
        assert eid not in {e for e, _ in store.keyword_search("python import statement", limit=5, min_score=-1.0)}
    finally:
        store.engine.dispose()


def test_search_scorer_is_the_pipeline_default():
    from explainer.score.registry import DEFAULT_SCORERS

    assert SEARCH_SCORER == DEFAULT_SCORERS[0], "store.keyword.SEARCH_SCORER must follow DEFAULT_SCORERS[0]"


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def test_cli_search_with_filters_json_and_text(searchable, capsys):
    code, out, _ = _cli(capsys, "search", "copyright years", "--domain", "legal", "--layer", "2", "--json")
    hits = json.loads(out)
    assert code == 0 and ids(hits) == [unit(4).unit_id]
    code, out, _ = _cli(capsys, "search", "fabricated citations", "--limit", "2")
    assert code == 0 and out.startswith(" 1. tiny/layers.1.mlp/0  score=+0.620 [+0.52, +0.72]")
    assert "e.g. as shown by Smith «et» «al.»" in out
    code, _, err = _cli(capsys, "search", "x", "--limit", "500")
    assert code == 2 and "limit must be between" in err
    code, _, err = _cli(capsys, "search", "x", "--domain", "no,such")
    assert code == 2 and "invalid domain" in err


@pytest.mark.parametrize(
    "hookpoint, fields",
    [
        ("layers.15.mlp", (15, "mlp")),
        ("layers.3", (3, "resid")),
        ("layers.2.mlp_in", (2, "mlp_in")),
        ("layers.2.mlp_out", (2, "mlp_out")),
        ("layers.7.attn_out", (7, "attn_out")),
        ("layers.12.sae-res-jb-1a2b3c", (12, "sae")),
        ("layers.4.mlp_in.sae-tc-0f0f0f", (4, "sae")),
        ("layers.9.dir-emotions-abcdef", (9, "directions")),
        ("embed", (-1, "resid")),
    ],
)
def test_hookpoint_fields_name_the_kind_of_unit(hookpoint, fields):
    """SAE features and directions are filterable as their own sources, not as residual dimensions."""
    from store.keyword import SOURCES, hookpoint_fields

    assert hookpoint_fields(hookpoint) == fields
    assert fields[1] in SOURCES
