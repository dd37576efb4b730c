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

from explainer.runtime import get_index, get_store
from explainer.search.hybrid import SearchFilters, load_scan, search

ROOT = Path(__file__).resolve().parents[2]


def _index_in_other_process(settings, texts: list[str], batches: int = 1) -> list[str]:
    """Save ``texts`` as new explanations of unit 0 and index them from a fresh Python process (its own
    Chroma client on the same directory), as ``explainer label`` run in another shell does, in
    ``batches`` upserts a moment apart; their ids."""
    code = textwrap.dedent(
        """
        import json, sys, time
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
        step = -(-len(eids) // int(sys.argv[4]))
        for s in range(0, len(eids), step):
            index.upsert(eids[s : s + step], texts[s : s + step], [meta] * len(eids[s : s + step]))
            for eid in eids[s : s + step]:
                store.mark_indexed(eid)
            time.sleep(0.2)
        print(json.dumps(eids))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLAINER_DATA_DIR": str(settings.data_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code, unit(0).unit_id, collection_id(unit(0)), json.dumps(texts), str(batches)],
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
    store = get_store(searchable)  # the in-memory keyword ranking re-read the new rows too
    assert store.keyword_scan is not None and len(store.keyword_scan) >= len(eids)
    assert store.keyword_search("thunderstorms", limit=3)[0][0] == eids[0]


def test_a_served_search_answers_while_another_process_indexes(searchable, tmp_path):
    """``explainer serve`` (its scan loaded) is searched over HTTP again and again while another
    process indexes several batches: every answer is a 200, and the new explanations are found."""
    import threading
    import time

    import httpx
    from conftest import free_port

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EXPLAINER_DATA_DIR": str(searchable.data_dir),
        "EXPLAINER_API_READ_KEYS": "k",
    }
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", "--port", str(port), "--torch-threads", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url, headers = f"http://127.0.0.1:{port}/api/v1/search", {"X-API-Key": "k"}
    statuses: list[int] = []
    stop = threading.Event()

    def search_loop() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                statuses.append(  # several threads: the server answers them side by side
                    client.get(url, params={"q": "weather with hail", "layer": 9}, headers=headers).status_code
                )

    try:
        deadline = time.monotonic() + 60
        while True:  # started, the scan loaded
            try:
                if httpx.get(url, params={"q": "citations"}, headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.3)
        searchers = [threading.Thread(target=search_loop) for _ in range(3)]
        for t in searchers:
            t.start()
        try:  # while the searches go on
            texts = [f"weather report {i} with hail and thunder" for i in range(160)]
            eids = _index_in_other_process(searchable, texts, batches=8)
        finally:
            stop.set()
            for t in searchers:
                t.join(timeout=60)
        errors = [ln for ln in (tmp_path / "serve.log").read_text().splitlines() if "Error" in ln][-5:]
        assert len(statuses) >= 4 and set(statuses) == {200}, (sorted(set(statuses)), errors)
        got = httpx.get(
            url, params={"q": "weather report with hail", "layer": 9, "limit": 50}, headers=headers, timeout=30
        )
        assert got.status_code == 200, got.text
        found = {h["explanation_id"] for h in got.json()["hits"]}
        assert len(found & set(eids)) >= 40, (len(found & set(eids)), len(eids))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
