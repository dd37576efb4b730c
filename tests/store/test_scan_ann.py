"""The approximate index of the in-memory scan (FAISS IVF): the filter applied inside the search,
rows written or rewritten after it was built, removed rows, and agreement with the exact scan."""

from __future__ import annotations

import numpy as np

from store import scan as scan_module
from store.scan import VectorScan

N, DIM = 60_000, 384


def _clustered(n: int, seed: int) -> np.ndarray:
    """Vectors around 600 fixed centres (cosine about 0.9 to theirs), as explanations of similar units
    are; queries drawn the same way look for such neighbours."""
    centers = np.random.default_rng(0).standard_normal((600, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    v = centers[rng.integers(0, 600, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * 0.5
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _world() -> tuple[VectorScan, np.ndarray]:
    vecs = _clustered(N, 0)
    scan = VectorScan(DIM)
    metas = [{"model": "ab"[i % 2], "layer": i % 30, "source": "mlp", "score": (i % 10) / 10} for i in range(N)]
    scan.put([f"e{i}" for i in range(N)], vecs, metas)
    assert scan.build_ann(min_rows=1)
    return scan, vecs


def _recall(fast: list, exact: list) -> float:
    ref = {i for i, _, _ in exact[:10]}
    return len(ref & {i for i, _, _ in fast[:10]}) / len(ref)


def test_broad_filters_go_through_the_index_and_agree_with_the_exact_scan(monkeypatch):
    scan, vecs = _world()
    used = []
    real = VectorScan._top_ann
    monkeypatch.setattr(VectorScan, "_top_ann", lambda self, *a: used.append(1) or real(self, *a))
    queries = _clustered(40, 1)
    recalls = []
    for q in queries:
        for filters in ({}, {"model": "a"}, {"min_score": 0.5}):
            fast = scan.top(q, 10, **filters)
            exact = scan._top_exact(q, 10, scan.mask(**filters))
            assert all(scan.metas[scan.row[i]]["model"] == "a" for i, _, _ in fast) or filters.get("model") != "a"
            assert all(scan.metas[scan.row[i]]["score"] >= 0.5 for i, _, _ in fast) or "min_score" not in filters
            recalls.append(_recall(fast, exact))
    assert len(used) == 120  # every one of these queries passes more than EXACT_BELOW rows
    assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_selective_filters_are_scanned_exactly():
    scan, _ = _world()
    q = _clustered(1, 2)[0]
    hits = scan.top(q, 10, model="a", layer=4)  # 1,000 rows pass: fewer than EXACT_BELOW
    assert hits == scan._top_exact(q, 10, scan.mask(model="a", layer=4))


def test_rows_written_rewritten_or_removed_after_the_build_are_seen_as_they_are_now(monkeypatch):
    monkeypatch.setattr(scan_module, "EXACT_BELOW", 10)
    scan, vecs = _world()
    q = _clustered(1, 3)[0]
    scan.put(["new"], q[None], [{"model": "a", "layer": 1, "source": "mlp", "score": 0.9}])  # after the build
    assert scan.top(q, 1)[0][0] == "new"
    far = -q  # rewrite the row nearest to q so that it is now the farthest
    nearest = scan.top(q, 2)[1][0]
    scan.put([nearest], far[None], [scan.metas[scan.row[nearest]]])
    assert nearest not in {i for i, _, _ in scan.top(q, 50)}
    assert scan.top(far, 1)[0][0] == nearest  # found at its new place, scanned exactly
    scan.remove(["new"])
    assert "new" not in {i for i, _, _ in scan.top(q, 50)}


def test_the_index_is_rebuilt_when_a_fifth_of_the_rows_are_new():
    scan, _ = _world()
    first = scan.ann
    more = _clustered(N // 5 + 1, 4)
    scan.put([f"n{i}" for i in range(len(more))], more, [{"model": "a", "layer": 0, "score": 0.0}] * len(more))
    scan.top(more[0], 5)
    assert scan.ann is not first and scan.ann_rows == len(scan.ids)


def test_small_scans_build_no_index():
    scan = VectorScan(DIM)
    scan.put(["a"], _clustered(1, 5), [{}])
    assert not scan.build_ann() and scan.ann is None
