"""An import is all or nothing: a store failure part-way (a score row, the indexing) leaves the
store, its keyword rows and the vector index as they were before it, a re-imported explanation
included."""

from __future__ import annotations

import pytest
from builders.formats import CID, MINE, neuronpedia_line
from builders.search import write_units

from explainer.formats.exchange import import_explanations
from explainer.runtime import get_index, get_store
from store import keyword


def _state(settings):
    """Everything an import writes: rows of every table, keyword rows, the explanations' stored rows,
    the score rows and the vector index's ids."""
    from sqlalchemy import select

    from store.schema import explanations, scores

    store = get_store(settings)
    with store.engine.connect() as conn:
        rows = [
            sorted((dict(r) for r in conn.execute(select(t)).mappings()), key=lambda r: r["id"])
            for t in (explanations, scores)
        ]
    return store.count_rows(), keyword.all_rows(store), rows, get_index(settings).ids()


def _dump(tmp_path, *indexes):
    f = tmp_path / f"np-{'-'.join(map(str, indexes))}.jsonl"
    f.write_text("".join(neuronpedia_line(i, f"imported label of unit {i}", score=0.1 * (i + 1)) for i in indexes))
    return f


def test_a_score_write_failing_part_way_leaves_nothing_of_the_import(settings, tmp_path, monkeypatch):
    write_units(settings, MINE, index=False)
    store = get_store(settings)
    before = _state(settings)
    real, calls = store.save_score, []

    def fail_on_second(**kw):  # the first explanation and its score are written, then the store fails
        calls.append(kw["explanation_id"])
        if len(calls) == 2:
            raise OSError("database is locked")
        return real(**kw)

    monkeypatch.setattr(store, "save_score", fail_on_second)
    with pytest.raises(OSError, match="database is locked"):
        import_explanations(settings, "neuronpedia", _dump(tmp_path, 0, 1, 2), CID)
    assert len(calls) == 2
    assert _state(settings) == before


def test_an_indexing_failure_undoes_rows_keyword_rows_and_vectors_and_keeps_an_earlier_import(
    settings, tmp_path, monkeypatch
):
    write_units(settings, MINE, index=False)
    store = get_store(settings)
    (first,) = import_explanations(settings, "neuronpedia", _dump(tmp_path, 0), CID)["explanation_ids"]
    assert first in get_index(settings).ids() and store.get_explanation(first).indexed_at is not None
    before = _state(settings)
    real, calls = store.mark_indexed_many, []

    def fail_on_second(ids):  # vectors of the second explanation are written, then the store fails
        calls.append(ids)
        if len(calls) == 2:
            raise OSError("disk I/O error")
        return real(ids)

    monkeypatch.setattr(store, "mark_indexed_many", fail_on_second)
    with pytest.raises(OSError, match="disk I/O error"):  # unit 0's line again (a re-import), then 1 and 2
        import_explanations(settings, "neuronpedia", _dump(tmp_path, 0, 1, 2), CID)
    assert len(calls) == 2
    after = _state(settings)
    assert after == before  # unit 0's earlier import as it was (rows, indexed_at, keyword row, vector)
    assert first in after[3] and len(after[3]) == 1
