"""The batcher behind the index worker: calls that arrive together run as one batch, a lone call
runs at once, and a batch's error reaches every caller in it."""

from __future__ import annotations

import threading

import pytest

from workers.batching import Batcher


def test_calls_arriving_during_a_batch_run_together_in_the_next():
    release, started = threading.Event(), threading.Event()
    seen: list[tuple[str, list[int]]] = []

    def run(key: str, items: list[int]) -> None:
        seen.append((key, items))
        started.set()
        release.wait(10)

    b: Batcher[str, int] = Batcher(run)
    first = b.submit("a", 0)
    assert started.wait(10)  # the lone call ran at once, without waiting for company
    futures = [b.submit("a" if i % 2 else "b", i) for i in range(1, 21)]  # queued while the first batch runs
    release.set()
    for f in [first, *futures]:
        f.result(10)
    assert seen[0] == ("a", [0])
    assert sorted(seen[1:]) == [("a", list(range(1, 21, 2))), ("b", list(range(2, 21, 2)))]
    assert (b.batches, b.items) == (3, 21)


def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_runs():
    gate = threading.Event()

    def run(key: str, items: list[int]) -> None:
        gate.wait(10)
        if key == "bad":
            raise RuntimeError(f"cannot index {items}")

    b: Batcher[str, int] = Batcher(run)
    hold = b.submit("ok", 0)
    bad = [b.submit("bad", i) for i in (1, 2)]
    gate.set()
    hold.result(10)
    for f in bad:
        with pytest.raises(RuntimeError, match=r"cannot index \[1, 2\]"):
            f.result(10)
    assert b.submit("ok", 3).result(10) is None  # the batcher lives on


def test_max_size_bounds_a_batch():
    gate = threading.Event()
    sizes: list[int] = []

    def run(key: str, items: list[int]) -> None:
        gate.wait(10)
        sizes.append(len(items))

    b: Batcher[str, int] = Batcher(run, max_size=4)
    futures = [b.submit("k", i) for i in range(11)]
    gate.set()
    for f in futures:
        f.result(10)
    assert max(sizes) <= 4 and sum(sizes) == 11
    with pytest.raises(ValueError):
        Batcher(run, max_size=0)


def test_with_a_wait_calls_arriving_soon_after_share_the_first_batch():
    seen: list[list[int]] = []
    b: Batcher[str, int] = Batcher(lambda key, items: seen.append(items), wait_s=lambda: 0.5)
    first = b.submit("k", 0)
    rest = [b.submit("k", i) for i in range(1, 5)]  # well within the half second the batcher waits
    for f in [first, *rest]:
        f.result(10)
    assert seen == [[0, 1, 2, 3, 4]]
