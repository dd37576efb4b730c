"""A transaction PostgreSQL aborts for a deadlock is run again (store.transactions.retry_deadlocks): two real
transactions lock two rows in opposite orders; the one that waited first is the victim, and its
second run commits."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.postgres


def test_a_transaction_aborted_for_a_deadlock_is_run_again_and_commits(postgres_url):
    from store.sql import SQLStore
    from store.transactions import retry_deadlocks

    engine = SQLStore(postgres_url).engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE pair (id int PRIMARY KEY, v int)"))
        conn.execute(text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    a_holds_1, b_holds_2, a_waits = threading.Event(), threading.Event(), threading.Event()
    runs: list[int] = []

    def a(conn) -> str:  # takes row 1, then row 2 (waits on b first, so it is the deadlock's victim)
        runs.append(1)
        conn.execute(text("UPDATE pair SET v = v + 1 WHERE id = 1"))
        a_holds_1.set()
        b_holds_2.wait(10)
        a_waits.set()
        conn.execute(text("UPDATE pair SET v = v + 1 WHERE id = 2"))
        return "a committed"

    def b() -> None:  # takes row 2, then row 1 once a waits for row 2
        with engine.begin() as conn:
            a_holds_1.wait(10)
            conn.execute(text("UPDATE pair SET v = v + 10 WHERE id = 2"))
            b_holds_2.set()
            a_waits.wait(10)
            conn.execute(text("SELECT pg_sleep(0.5)"))
            conn.execute(text("UPDATE pair SET v = v + 10 WHERE id = 1"))

    other = threading.Thread(target=b)
    other.start()
    assert retry_deadlocks(engine, a) == "a committed"
    other.join(30)
    assert len(runs) == 2  # aborted once, then committed
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, v FROM pair")).all()) == {1: 11, 2: 11}
