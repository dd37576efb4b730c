"""Keep the search indexes in line with the SQL store, the source of truth.

:func:`reindex` rebuilds the keyword index and the vector index (Chroma) from SQL;
:func:`check` lists every difference: explanations missing from an index, entries an index
holds that SQL does not (or no longer as an ok explanation), and entries whose text or filter
metadata are stale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from explainer.runtime import get_index, get_store
from explainer.search.index import expected_metadata
from explainer.settings import Settings

__all__ = ["reindex", "check", "expected_metadata"]

SAMPLE = 20
"""Ids listed per kind of difference (the counts are always complete)."""


def reindex(settings: Settings, batch: int = 256) -> dict[str, Any]:
    """Rebuild both search indexes from SQL: re-embed and upsert every ok explanation, delete
    index entries SQL does not back. Search keeps working meanwhile (entries are replaced,
    not dropped first)."""
    from store.keyword import iter_docs

    store, index = get_store(settings), get_index(settings)
    t0 = time.perf_counter()
    n_keyword = store.rebuild_keyword_index()
    t_keyword = time.perf_counter() - t0
    seen: set[str] = set()
    buf: list[Any] = []

    def flush() -> None:
        if buf:
            index.upsert([d.explanation_id for d in buf], [d.text for d in buf], [expected_metadata(d) for d in buf])
            store.mark_indexed_many([d.explanation_id for d in buf])
            buf.clear()

    for doc in iter_docs(store):
        seen.add(doc.explanation_id)
        buf.append(doc)
        if len(buf) >= batch:
            flush()
    flush()
    extra = sorted(index.ids() - seen)
    index.delete(extra)
    if index.scan is not None:  # our writes patched the loaded scan: nothing to re-read from Chroma
        index.scan.token = store.index_token()
    return {
        "indexed": len(seen),
        "deleted": len(extra),
        "keyword_docs": n_keyword,
        "keyword_seconds": round(t_keyword, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, abs_tol=1e-6)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _diff(ids: Iterable[str]) -> dict[str, Any]:
    ids = sorted(ids)
    return {"count": len(ids), "ids": ids[:SAMPLE]}


def check(settings: Settings) -> dict[str, Any]:
    """Every difference between SQL and the two search indexes; ``in_sync`` is true when none."""
    from store.keyword import all_rows, iter_docs

    store, index = get_store(settings), get_index(settings)
    expected = {d.explanation_id: d for d in iter_docs(store)}
    vectors = {eid: (doc, meta) for eid, doc, meta in index.entries()}
    keyword = all_rows(store)
    both = expected.keys() & vectors.keys()
    stale_text = {e for e in both if vectors[e][0] != expected[e].text}
    stale_meta = {e for e in both - stale_text if not _same(vectors[e][1], expected_metadata(expected[e]))}
    kw_both = expected.keys() & keyword.keys()
    kw_stale = {e for e in kw_both if not _same({k: keyword[e][k] for k in expected[e].row()}, expected[e].row())}
    out: dict[str, Any] = {
        "sql_explanations": len(expected),
        "vector_entries": len(vectors),
        "keyword_docs": len(keyword),
        "vector": {
            "missing": _diff(expected.keys() - vectors.keys()),
            "extra": _diff(vectors.keys() - expected.keys()),
            "stale_text": _diff(stale_text),
            "stale_metadata": _diff(stale_meta),
        },
        "keyword": {
            "missing": _diff(expected.keys() - keyword.keys()),
            "extra": _diff(keyword.keys() - expected.keys()),
            "stale": _diff(kw_stale),
        },
    }
    out["in_sync"] = all(d["count"] == 0 for part in ("vector", "keyword") for d in out[part].values())
    return out
