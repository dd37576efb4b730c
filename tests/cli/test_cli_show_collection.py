"""`show` says which collection of a unit it shows, names the others, and `--collection` (an id or a
prefix) picks one."""

from __future__ import annotations

import json

from builders.search import collection_id, record_of, unit

from explainer.runtime import get_store
from workers.cli import main


def test_show_names_and_picks_the_collection(searchable, capsys):
    store = get_store(searchable)
    u = unit(1)
    first = collection_id(u)
    second = "ab" * 32
    store.start_collection(second, u.model, u.hookpoint, "other corpus", "1" * 16, {"window": 8})
    store.finish_collection(second, [record_of(u)], 500)

    assert main(["show", u.unit_id]) == 0  # by default the latest collection it was explained in
    out = capsys.readouterr().out
    assert f"collection {first}" in out and f"2 collections hold this unit; others: {second[:12]}" in out

    assert main(["show", u.unit_id, "--collection", second[:10], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["collection_id"] == second and shown["other_collections"] == [first]
    assert shown["status"] == "pending" and shown["explanation"] is None  # not explained in that one

    assert main(["show", u.unit_id, "--collection", "ffff"]) == 2
    err = capsys.readouterr().err
    assert f"unit {u.unit_id} is in no collection 'ffff'" in err and first[:12] in err
