"""Shard states of sharded collections: repository functions over ``collection_shards``.

A shard's row is written once its batches are done (an upsert on collection, shard count and
shard index, so a shard delivered twice overwrites its own row); the merge reads exactly one row
per shard index and, once the collection's units are written, deletes them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from store.db import now
from store.schema import collection_shards
from store.sql import SQLStore


def save_shard(
    store: SQLStore,
    collection_id: str,
    n_shards: int,
    shard: int,
    batches: tuple[int, int],
    n_tokens: int,
    state: bytes,
    seconds: float | None = None,
) -> None:
    """Store the finished state of shard ``shard`` of ``n_shards`` (batches ``[first, end)``)."""
    store._upsert(
        collection_shards,
        [
            dict(
                collection_id=collection_id,
                n_shards=n_shards,
                shard=shard,
                first_batch=batches[0],
                end_batch=batches[1],
                n_tokens=n_tokens,
                state=state,
                seconds=seconds,
                finished_at=now(),
            )
        ],
        ["collection_id", "n_shards", "shard"],
    )


def done_shards(store: SQLStore, collection_id: str, n_shards: int) -> dict[int, dict[str, Any]]:
    """Shard index → its row without the state (batches, tokens, seconds), for finished shards."""
    c = collection_shards.c
    cols = [col for col in collection_shards.c if col.name != "state"]
    q = select(*cols).where(c.collection_id == collection_id, c.n_shards == n_shards).order_by(c.shard)
    with store.engine.connect() as conn:
        return {r["shard"]: dict(r) for r in conn.execute(q).mappings()}


def shard_state(store: SQLStore, collection_id: str, n_shards: int, shard: int) -> bytes | None:
    c = collection_shards.c
    q = select(c.state).where(c.collection_id == collection_id, c.n_shards == n_shards, c.shard == shard)
    with store.engine.connect() as conn:
        return conn.execute(q).scalar_one_or_none()


def clear_shards(store: SQLStore, collection_id: str) -> int:
    """Delete every shard row of the collection (any shard count); returns how many."""
    with store.engine.begin() as conn:
        res = conn.execute(collection_shards.delete().where(collection_shards.c.collection_id == collection_id))
    return int(res.rowcount or 0)
