"""PostgreSQL's group commit of small record writes (storage/postgres/groups.py): concurrent writes of a store share
transactions (told apart by the ``xmin`` of the rows they wrote), every write is stored with the store's totals
right, a write PostgreSQL refuses fails alone, writes of one key in a burst end with the last one, and writes to
a store that is gone are told so."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import pytest

from openkvs.storage.base import NotFound
from openkvs.storage.postgres import PostgresStorage

from .conftest import Body

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pg() -> AsyncIterator[tuple[PostgresStorage, asyncpg.Connection]]:
    schema = "t_" + secrets.token_hex(6)
    storage = PostgresStorage(DSN, namespace=schema)
    try:
        await storage.open()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable in CI ({DSN}): {exc!r}")
        pytest.skip(f"PostgreSQL unreachable ({DSN}): {exc!r}")
    conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    try:
        yield storage, conn
    finally:
        await conn.close()
        await storage.aclose()
        await storage.drop()


async def test_concurrent_writes_share_transactions(pg) -> None:
    storage, conn = pg
    user = await storage.create_user("u")
    store = await storage.create_store(user.id, "s", None, "k" * 32)
    n = 64
    await asyncio.gather(
        *(storage.put_record(store.id, f"k{i:03d}", Body(b"x" * (i + 1)), "text/plain", None) for i in range(n))
    )
    # every row a transaction writes has that transaction's id as its xmin
    transactions = await conn.fetchval("SELECT count(DISTINCT xmin::text) FROM records WHERE store_id = $1", store.id)
    assert 1 <= transactions < n, f"{n} concurrent writes took {transactions} transactions"
    for i in range(n):
        rec = await storage.get_record(store.id, f"k{i:03d}")
        assert rec is not None and rec.size == i + 1
        assert b"".join([p async for p in storage.read_blob(rec)]) == b"x" * (i + 1)
    found = await storage.get_store(store.id)
    assert found is not None
    assert found.stats.storage_bytes == sum(range(1, n + 1))
    assert found.generation >= n  # one step per write, as when each was alone
    assert await conn.fetchval("SELECT count(*) FROM blob_chunks") == n
    assert await conn.fetchval("SELECT count(*) FROM garbage") == 0


async def test_overwrites_in_a_burst_end_with_the_last_write(pg) -> None:
    storage, conn = pg
    user = await storage.create_user("u")
    store = await storage.create_store(user.id, "s", None, "k" * 32)
    keys = [f"shared-{i}" for i in range(4)]
    writes = [(keys[i % 4], f"{i:04d}".encode() * (i + 1)) for i in range(40)]
    # the writes start in this order, so those of one key arrive (and commit) in it
    await asyncio.gather(*(storage.put_record(store.id, k, Body(b), "text/plain", None) for k, b in writes))
    last = {k: b for k, b in writes}
    for key, body in last.items():
        rec = await storage.get_record(store.id, key)
        assert rec is not None
        assert b"".join([p async for p in storage.read_blob(rec)]) == body
    found = await storage.get_store(store.id)
    assert found is not None and found.stats.storage_bytes == sum(map(len, last.values()))
    # each replaced blob is garbage (GC frees it after the grace period), none is lost or kept by two
    assert await conn.fetchval("SELECT count(*) FROM garbage") == len(writes) - len(keys)
    orphans = await conn.fetchval(
        """SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.blob_id = c.blob_id)
           AND NOT EXISTS (SELECT 1 FROM garbage g WHERE g.blob_id = c.blob_id)"""
    )
    assert orphans == 0


async def test_a_refused_write_fails_alone(pg) -> None:
    storage, _ = pg
    user = await storage.create_user("u")
    store = await storage.create_store(user.id, "s", None, "k" * 32)
    outcomes: dict[str, str] = {}

    async def put(i: int) -> None:
        content_type = "text/\x00plain" if i % 9 == 4 else "text/plain"  # PostgreSQL's text takes no NUL
        try:
            await storage.put_record(store.id, f"k{i:02d}", Body(b"data"), content_type, None)
            outcomes[f"k{i:02d}"] = "stored"
        except Exception as exc:
            outcomes[f"k{i:02d}"] = type(exc).__name__

    await asyncio.gather(*(put(i) for i in range(40)))
    for i in range(40):
        key = f"k{i:02d}"
        rec = await storage.get_record(store.id, key)
        if i % 9 == 4:
            assert outcomes[key] != "stored" and rec is None, key
        else:
            assert outcomes[key] == "stored", (key, outcomes[key])
            assert rec is not None and rec.size == 4
    found = await storage.get_store(store.id)
    assert found is not None and found.stats.storage_bytes == 4 * sum(1 for i in range(40) if i % 9 != 4)


async def test_writes_to_a_deleted_store_are_not_found(pg) -> None:
    storage, conn = pg
    user = await storage.create_user("u")
    keep = await storage.create_store(user.id, "keep", None, "k" * 32)
    gone = await storage.create_store(user.id, "gone", None, "k" * 32)
    assert await storage.delete_store(gone.id)
    outcomes: dict[str, str] = {}

    async def put(store_id: str, key: str) -> None:
        try:
            await storage.put_record(store_id, key, Body(b"data"), "text/plain", None)
            outcomes[key] = "stored"
        except NotFound:
            outcomes[key] = "not found"

    await asyncio.gather(*(put(gone.id if i % 2 else keep.id, f"k{i:02d}") for i in range(40)))
    assert all(outcomes[f"k{i:02d}"] == ("not found" if i % 2 else "stored") for i in range(40)), outcomes
    # the gone store's writes left no bytes behind
    assert await conn.fetchval("SELECT count(*) FROM blob_chunks") == 20


async def test_identical_look_ups_in_a_burst_are_asked_once(pg, monkeypatch) -> None:
    storage, _ = pg
    user = await storage.create_user("u")
    store = await storage.create_store(user.id, "s", None, "k" * 32)
    queries = 0
    real = storage._fetchrow

    async def counting(*args):  # passes every query through, counting them
        nonlocal queries
        queries += 1
        return await real(*args)

    monkeypatch.setattr(storage, "_fetchrow", counting)
    found = await asyncio.gather(*(storage.look_up_store(user.id, store_id=store.id) for _ in range(32)))
    assert all(f is not None and f.store.id == store.id and f.grant is None for f in found)
    assert 1 <= queries < 32, f"32 identical look-ups took {queries} queries"


async def test_a_look_up_in_a_burst_sees_what_was_committed_before_it_asked(pg) -> None:
    """Another node commits while an identical look-up is in flight (its answer, read before that commit, not yet
    taken in: this event loop is busy running psql): a look-up asked after that commit must not be answered with
    the one in flight."""
    storage, _ = pg
    user = await storage.create_user("u")
    store = await storage.create_store(user.id, "s", None, "k" * 32)
    await asyncio.gather(*(storage.look_up_store(user.id, store_id=store.id) for _ in range(8)))  # connections up
    for i in range(5):
        in_flight = asyncio.create_task(storage.look_up_store(user.id, store_id=store.id))
        await asyncio.sleep(0)  # it sends its query
        subprocess.run(  # the other node's write, committed while this loop waits
            ["psql", DSN, "-qc", f"UPDATE {storage.namespace}.stores SET title = 'title {i}' WHERE id = '{store.id}'"],
            check=True, timeout=60,
        )
        found = await storage.look_up_store(user.id, store_id=store.id)
        assert found is not None and found.store.title == f"title {i}", (i, found and found.store.title)
        await in_flight
