"""Each store's record count (``Store.stats.record_count``), kept in the transaction of every record write and
delete, on every backend (SQLite, PostgreSQL, PostgreSQL with record bytes in a bucket): it follows new keys,
overwrites, deletes, failed uploads and concurrent writers of the same keys, and always equals the records listed.
The upgrade of a database of the previous version counts the records already there; ``openkvs check`` finds a
wrong count and ``--fix`` sets it, while writers keep writing."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from pathlib import Path

import anyio
import pytest

from openkvs.storage.base import KeySelection, NotFound, Storage
from openkvs.storage.sqlite import SQLiteStorage

from .conftest import (
    UNDO_PACKED_ROWS_SQLITE,
    UNDO_TOTALS_PG,
    UNDO_TOTALS_SQLITE,
    Body,
    BodyAborted,
    chunked,
    two_pg_nodes,
)

pytestmark = pytest.mark.anyio

KiB = 1024
# Above SQLite's inline_max (a file), the bucket's 16 KiB (an object), and PostgreSQL's 1 MiB chunk (several chunks).
BIG = 1024 * KiB + 100


async def listed(storage: Storage, store_id: str) -> list[str]:
    """Every key of the store, page by page: what a client counts."""
    keys: list[str] = []
    start = None
    while True:
        page = await storage.list_keys(store_id, KeySelection(), start, 1000)
        keys += [i.key for i in page.items]
        if not page.is_truncated:
            return keys
        start = keys[-1]


async def count(storage: Storage, store_id: str) -> int:
    store = await storage.get_store(store_id)
    assert store is not None
    return store.stats.record_count


async def test_the_count_follows_every_kind_of_write(storage: Storage) -> None:
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "counted", None, "k" * 32)
    other = await storage.create_store(user.id, "other", None, "k" * 32)
    assert store.stats.record_count == 0
    steps = [
        ("put", "a", b"small"),  # a new key
        ("put", "a", b"replaced"),  # an overwrite: no change
        ("put", "big", os.urandom(BIG)),  # a new key, big: file, chunks or object
        ("put", "big", b"now small"),  # big -> small
        ("put", "a", os.urandom(BIG)),  # small -> big
        ("put", "empty", b""),  # an empty record is a record
        ("delete", "a", None),
        ("delete", "a", None),  # already gone: no change
        ("delete", "never", None),
    ]
    expected: set[str] = set()
    for op, key, data in steps:
        if op == "put":
            assert data is not None
            await storage.put_record(store.id, key, Body(chunked(data)), "application/octet-stream", None)
            expected.add(key)
        else:
            assert await storage.delete_record(store.id, key) == (key in expected)
            expected.discard(key)
        assert await count(storage, store.id) == len(expected), (op, key)
    assert sorted(await listed(storage, store.id)) == sorted(expected)

    # An upload that fails (the client goes away) changes nothing: neither for a new key nor for an overwrite,
    # small or big.
    for key in ("new-one", "big", "new-big"):
        for after in (3, 17):  # 192 KiB in, or the whole 1 MiB + 100 bytes read and then the failure
            with pytest.raises(BodyAborted):
                await storage.put_record(store.id, key, Body(chunked(os.urandom(BIG)), fail_after=after), "x/y", None)
        with pytest.raises(BodyAborted):
            await storage.put_record(store.id, key, Body([b"x"], fail_after=1), "x/y", None)
    assert await count(storage, store.id) == len(expected) == 2

    # Every way a store is read carries the same count: by ID, by name, in a listing, in an access look-up.
    by_name = await storage.get_store_by_name(user.id, "counted")
    assert by_name is not None and by_name.stats.record_count == 2
    _, page = await storage.list_stores(user.id, offset=0, limit=10, desc=False, unnamed=True, ownership=None)
    assert {s.name: s.stats.record_count for s in page} == {"counted": 2, "other": 0}
    found = await storage.look_up_store(user.id, store_id=store.id, key="big")
    assert found is not None and found.store.stats.record_count == 2
    found = await storage.look_up_store(user.id, owner_id=user.id, name="counted")
    assert found is not None and found.store.stats.record_count == 2

    # A write to a store that is gone counts nowhere; the other store never moved.
    assert await storage.delete_store(store.id)
    with pytest.raises(NotFound):
        await storage.put_record(store.id, "late", Body(b"x"), "x/y", None)
    assert await storage.get_store(store.id) is None
    assert await count(storage, other.id) == 0


async def test_concurrent_writers_of_the_same_keys_keep_it_exact(storage: Storage) -> None:
    """Writers racing on a few keys (new, overwrite, delete, small and big): the count is the records listed.
    On SQLite they share group commits; on PostgreSQL they run on separate connections."""
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "race", None, "k" * 32)
    rng = random.Random(11)
    plans = [[(rng.choice(["put", "put", "delete"]), f"k{rng.randrange(6)}", rng.random() < 0.15) for _ in range(25)]
             for _ in range(12)]

    async def writer(plan: list[tuple[str, str, bool]]) -> None:
        for op, key, big in plan:
            if op == "put":
                data = os.urandom(BIG if big else rng.randrange(0, 200))
                await storage.put_record(store.id, key, Body(chunked(data)), "x/y", None)
            else:
                await storage.delete_record(store.id, key)

    async with anyio.create_task_group() as tg:
        for plan in plans:
            tg.start_soon(writer, plan)
    assert await count(storage, store.id) == len(await listed(storage, store.id))


async def test_a_failed_write_in_a_group_commit_leaves_the_count_exact(tmp_path: Path) -> None:
    """SQLite runs concurrent writes in one transaction, each in a savepoint: a write that fails there (its store
    was deleted) rolls back its own count change only."""
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        user = await st.create_user("u")
        keep = await st.create_store(user.id, "keep", None, "k" * 32)
        gone = await st.create_store(user.id, "gone", None, "k" * 32)
        assert await st.delete_store(gone.id)

        async def put(store_id: str, key: str) -> None:
            try:
                await st.put_record(store_id, key, Body(b"data"), "text/plain", None)
            except NotFound:
                pass

        async def delete(key: str) -> None:
            await st.delete_record(keep.id, key)

        async with anyio.create_task_group() as tg:
            for i in range(60):
                if i % 7 == 3:
                    tg.start_soon(put, gone.id, f"k{i % 20:02d}")
                elif i % 5 == 0:
                    tg.start_soon(delete, f"k{i % 20:02d}")
                else:
                    tg.start_soon(put, keep.id, f"k{i % 20:02d}")
        assert await count(st, keep.id) == len(await listed(st, keep.id)) > 0


# -- the upgrade that adds the count ------------------------------------------------------------------------------


async def test_sqlite_upgrade_counts_the_records_already_stored(tmp_path: Path) -> None:
    """A database of the version before the count (the same tables without ``stores.record_count``), holding
    stores of 0, 1 and 130 records (inline and in files) and a dataset: the upgrade counts each."""
    import sqlite3

    from openkvs.storage.sqlite.tables import TABLES_VERSION

    data = tmp_path / "data"
    sizes = {"none": 0, "one": 1, "many": 130}
    async with SQLiteStorage(data, background=False) as st:
        user = await st.create_user("u")
        ids = {}
        for name, n in sizes.items():
            store = await st.create_store(user.id, name, None, "k" * 32)
            ids[name] = store.id
            for i in range(n):
                body = os.urandom(100 * KiB if i % 10 == 0 else 10)
                await st.put_record(store.id, f"r{i:03d}", Body(body), "x/y", None)
        await st.delete_record(ids["many"], "r000")
        await st.create_store(user.id, "items", None, "k" * 32, kind="dataset")
    conn = sqlite3.connect(data / "openkvs.sqlite3")
    conn.execute("ALTER TABLE stores DROP COLUMN record_count")
    # nor what versions 7 (uploads), 8 (field statistics), 9 (kept ZIP headers), 10 (ZIP totals) and 11 (packed
    # dataset rows) add
    conn.execute("DROP TABLE uploads")
    conn.execute("ALTER TABLE dataset_counts DROP COLUMN field_stats")
    conn.executescript(
        "DROP TRIGGER records_zip_head_stale; DROP INDEX records_no_zip_head; ALTER TABLE records DROP COLUMN zip_head;"
        + UNDO_TOTALS_SQLITE
        + UNDO_PACKED_ROWS_SQLITE
    )
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()

    async with SQLiteStorage(data, background=False) as st:
        assert await st.tables_version() == (TABLES_VERSION, TABLES_VERSION)
        counts = {name: await count(st, sid) for name, sid in ids.items()}
        assert counts == {"none": 0, "one": 1, "many": 129}
        await st.put_record(ids["one"], "another", Body(b"x"), "x/y", None)  # and it is kept from then on
        assert await count(st, ids["one"]) == 2


@pytest.mark.postgres
async def test_postgres_upgrade_counts_the_records_already_stored() -> None:
    """A schema of the version before the count, holding stores of 0, 1 and 40 records (one chunk and several):
    the migration counts each, and concurrent migrations (several nodes starting) agree."""
    pg = pytest.importorskip("openkvs.storage.postgres")
    from tests.conftest import postgres_reachable, unavailable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncpg

    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "t_" + secrets.token_hex(6)
    sizes = {"none": 0, "one": 1, "many": 40}
    ids = {}
    st = pg.PostgresStorage(dsn, namespace=schema)
    await st.open()
    try:
        user = await st.create_user("u")
        for name, n in sizes.items():
            store = await st.create_store(user.id, name, None, "k" * 32)
            ids[name] = store.id
            for i in range(n):
                await st.put_record(store.id, f"r{i:03d}", Body(chunked(os.urandom(BIG if i == 0 else 10))), "x", None)
        await st.aclose()
        conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
        try:
            # version 6: before the record count (7), the datasets' field statistics (8) and the ZIP totals (10)
            await conn.execute("ALTER TABLE stores DROP COLUMN record_count")
            await conn.execute("ALTER TABLE dataset_counts DROP COLUMN field_stats")
            await conn.execute(UNDO_TOTALS_PG)  # and the ZIP totals (10)
            await conn.execute("UPDATE schema_version SET version = 6")
        finally:
            await conn.close()
        nodes = [pg.PostgresStorage(dsn, namespace=schema) for _ in range(3)]
        assert await asyncio.gather(*(n.migrate() for n in nodes)) == [pg.TABLES_VERSION] * 3
        await st.open()
        assert {name: await count(st, sid) for name, sid in ids.items()} == {"none": 0, "one": 1, "many": 40}
    finally:
        await st.aclose()
        await pg.PostgresStorage(dsn, namespace=schema).drop()



# -- PostgreSQL: several nodes on one schema -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("bucket", [False, True], ids=["postgres", "postgres+s3"])
async def test_two_nodes_writing_the_same_keys_keep_it_exact(bucket: bool) -> None:
    """Two nodes (two storages, two connection pools) on one schema, 16 writers putting (small, one chunk, many
    chunks or an object in the bucket) and deleting 8 keys of one store: the count equals ``count(*)``."""
    import asyncpg

    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    async with two_pg_nodes(bucket) as (a, b, schema):
        user = await a.create_user("alice")
        store = await a.create_store(user.id, "shared", None, "k" * 32)
        rng = random.Random(5)

        async def writer(i: int) -> None:
            s = a if i % 2 else b
            for _ in range(20):
                key = f"k{rng.randrange(8)}"
                if rng.random() < 0.35:
                    await s.delete_record(store.id, key)
                else:
                    size = rng.choice([0, 10, 300, 20 * KiB, BIG])
                    await s.put_record(store.id, key, Body(chunked(os.urandom(size))), "x/y", None)

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(writer, i)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
        try:
            real = await conn.fetchval("SELECT count(*) FROM records WHERE store_id = $1", store.id)
        finally:
            await conn.close()
        assert await count(a, store.id) == await count(b, store.id) == real
