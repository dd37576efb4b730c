"""Workers that start together on a fresh database each create the schema: real processes, released
at the same moment, on SQLite and on PostgreSQL; every one must open the store."""

from __future__ import annotations

import multiprocessing as mp

import pytest

PROCESSES = 4


def _open(url: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:
    from store.sql import SQLStore

    barrier.wait(timeout=60)
    try:
        SQLStore(url)
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def _race(url: str) -> list[str]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return out


@pytest.mark.parametrize("attempt", range(3))
def test_processes_opening_a_fresh_sqlite_store_together_all_succeed(tmp_path, attempt):
    url = f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}"
    assert _race(url) == ["ok"] * PROCESSES


@pytest.mark.postgres
def test_processes_opening_a_fresh_postgres_store_together_all_succeed(postgres_url):
    assert _race(postgres_url) == ["ok"] * PROCESSES
