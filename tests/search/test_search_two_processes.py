"""Two real processes share one embedded Chroma directory: the test process has its in-memory
scan loaded (as ``explainer serve`` does), another process indexes new explanations; every
search afterwards answers and finds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from builders.search import collection_id, unit

from explainer.runtime import get_index
from explainer.search.hybrid import SearchFilters, load_scan, search

ROOT = Path(__file__).resolve().parents[2]


def _index_in_other_process(settings, texts: list[str]) -> list[str]:
    """Save ``texts`` as new explanations of unit 0 and index them from a fresh Python process (its own
    Chroma client on the same directory), as ``explainer label`` run in another shell does; their ids."""
    code = textwrap.dedent(
        """
        import json, sys
        from explainer.runtime import get_index, get_store
        from explainer.search.index import index_metadata
        from explainer.settings import load_settings

        settings = load_settings()
        index, store = get_index(settings), get_store(settings)
        unit_id, collection_id = sys.argv[1], sys.argv[2]
        texts = json.loads(sys.argv[3])
        eids = []
        for i, text in enumerate(texts):
            eids.append(store.save_explanation(
                unit_id=unit_id, collection_id=collection_id, explainer_model=f"other-llm-{i}",
                prompt_name="explain", prompt_version="1", prompt_hash="b" * 64,
                status="ok", text=text, window_ids=["top-0"]))
        meta = {**index_metadata(unit_id, collection_id, "other-llm", 0.5, ["docs"]), "layer": 9}
        index.upsert(eids, texts, [meta] * len(eids))
        for eid in eids:
            store.mark_indexed(eid)
        print(json.dumps(eids))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLAINER_DATA_DIR": str(settings.data_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code, unit(0).unit_id, collection_id(unit(0)), json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_search_finds_what_another_process_indexed(searchable):
    load_scan(searchable)
    assert search(searchable, "citations", limit=3)  # the scan is loaded and in use
    texts = ["sunny skies and thunderstorms"] + [f"weather report number {i} with hail" for i in range(300)]
    eids = _index_in_other_process(searchable, texts)
    for _ in range(2):  # the first search re-reads what changed; the next ones answer too
        hits = search(searchable, "thunderstorms", SearchFilters(layer=9), limit=5)
        assert hits and hits[0]["explanation_id"] == eids[0]
    assert len(get_index(searchable).scan) >= len(eids)
