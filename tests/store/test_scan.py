"""The in-memory exact vector scan: filters as masks before top-k, agreement with a brute-force
reference and with Chroma, and freshness when another process writes the index."""

from __future__ import annotations

import numpy as np
import pytest
from builders.search import unit

from explainer.runtime import get_index, get_store
from explainer.search.hybrid import SearchFilters, load_scan, search
from explainer.search.index import index_metadata
from store.keyword import SEARCH_SCORER
from store.scan import VectorScan


def _scan(n=500, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    metas = [
        {
            "model": ["a", "b"][i % 2],
            "layer": i % 7,
            "source": ["mlp", "resid"][i % 3 == 0],
            "score": float(rng.uniform(-0.5, 1.0)),
            **({"domains": ["code", "legal"][: i % 3]} if i % 3 else {}),
        }
        for i in range(n)
    ]
    scan = VectorScan()
    ids = [f"e{i}" for i in range(n)]
    scan.put(ids[: n // 2], vecs[: n // 2], metas[: n // 2])  # two batches: the arrays grow
    scan.put(ids[n // 2 :], vecs[n // 2 :], metas[n // 2 :])
    return scan, ids, vecs, metas


def _reference(q, ids, vecs, metas, n, ok):
    sims = vecs @ q
    order = [i for i in np.argsort(-sims, kind="stable") if ok(metas[i])]
    return [ids[i] for i in order[:n]]


@pytest.mark.parametrize(
    "filters, ok",
    [
        ({}, lambda m: True),
        ({"model": "b", "layer": 3}, lambda m: m["model"] == "b" and m["layer"] == 3),
        ({"source": "resid"}, lambda m: m["source"] == "resid"),
        ({"min_score": 0.5, "domain": "legal"}, lambda m: m["score"] >= 0.5 and "legal" in m.get("domains", [])),
        ({"model": "zzz"}, lambda m: False),
        ({"domain": "math"}, lambda m: False),
    ],
)
def test_scan_equals_brute_force_reference(filters, ok):
    scan, ids, vecs, metas = _scan()
    q = vecs[7] * 0.6 + vecs[8] * 0.4
    got = scan.top(q, 20, **filters)
    assert [g[0] for g in got] == _reference(q, ids, vecs, metas, 20, ok)
    for eid, dist, meta in got:
        i = ids.index(eid)
        assert dist == pytest.approx(1 - float(vecs[i] @ q), abs=1e-5) and meta == metas[i]


def test_scan_replaces_and_removes_rows():
    scan, ids, vecs, metas = _scan(50)
    assert len(scan) == 50
    scan.put(["e3"], vecs[10:11], [{**metas[3], "layer": 99}])
    assert len(scan) == 50 and [g[0] for g in scan.top(vecs[10], 1, layer=99)] == ["e3"]
    scan.remove(["e3", "nope"])
    assert len(scan) == 49 and scan.top(vecs[10], 1, layer=99) == []
    assert scan.top(vecs[0], 0) == []


def test_scan_and_chroma_rank_alike(searchable):
    queries = ["fake citations", "Python", "weather words", "legal text"]
    filters = [SearchFilters(), SearchFilters(layer=2), SearchFilters(domain="code", min_score=0.3)]
    index = get_index(searchable)
    for q in queries:
        v = index.embedder.embed([q])[0]
        for f in filters:
            chroma = index.query_vector(v, n=5, engine="chroma", **f.sql())
            scan = index.query_vector(v, n=5, engine="scan", **f.sql())
            assert [c[0] for c in chroma] == [s[0] for s in scan]
            assert [c[1] for c in chroma] == pytest.approx([s[1] for s in scan], abs=1e-4)


def test_scan_sees_what_other_processes_index(searchable):
    """Another process writes Chroma and marks the SQL row indexed; the next search re-reads it."""
    load_scan(searchable)
    index, store = get_index(searchable), get_store(searchable)
    eid = next(e.id for e in store.explanations_for([unit(5).unit_id]))
    expl, score = store.get_explanation(eid), store.get_score(eid, SEARCH_SCORER)
    assert expl is not None and score is not None
    meta = {**index_metadata(expl.unit_id, expl.collection_id, expl.explainer_model, score.value, ["docs"]), "layer": 7}
    text = "sunny skies and thunderstorms"
    # bypass this process's VectorIndex (which would patch the scan itself)
    index.collection.upsert(ids=[eid], documents=[text], embeddings=index.embedder.embed([text]), metadatas=[meta])
    assert search(searchable, "thunderstorms", SearchFilters(layer=7), limit=5) == []  # not yet marked indexed
    store.mark_indexed(eid)
    hits = search(searchable, "thunderstorms", SearchFilters(layer=7), limit=5)
    assert [h["unit_id"] for h in hits] == [unit(5).unit_id] and hits[0]["semantic_rank"] == 1
    index.collection.delete(ids=[eid])  # and a deletion (as `reindex` does for extras)
    store.mark_indexed(eid)
    assert search(searchable, "thunderstorms", SearchFilters(layer=7), limit=5) == []


def test_reindex_keeps_the_loaded_scan_current(searchable):
    from explainer.search.reindex import reindex

    load_scan(searchable)
    index = get_index(searchable)
    index.upsert(["ghost"], ["a ghost explanation"], [{"unit_id": "tiny/layers.1.mlp/99", "layer": 1}])
    assert len(index.scan) == 12
    reindex(searchable)  # deletes the ghost, re-upserts the rest: the scan follows without re-reading
    assert len(index.scan) == 11 and "ghost" not in {e for e, _, _ in index.scan.top(index.scan.mat[0], 20)}
    assert index.scan.token == get_store(searchable).index_token()
