"""Each store's ZIP totals (storage/totals.py: key bytes, decoded bytes, ZIP64 entries, large records), kept in the
transaction of every record write and delete on every backend, are what a snapshot of the whole store sizes its
archive by: they follow new keys, overwrites, records with a Content-Encoding, deletes, failed uploads and
concurrent writers (two PostgreSQL nodes too), the archive is the reference writer's byte for byte with its size
exact, and ``openkvs check`` finds every total right. The upgrade to version 10 counts the records already there."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from openkvs.storage.base import KeySelection, NotFound, SnapshotTotals, Storage
from openkvs.storage.sqlite import SQLiteStorage
from tests import zip_reference

from .conftest import (
    DEFAULT_PG_URL,
    UNDO_PACKED_ROWS_SQLITE,
    UNDO_TOTALS_PG,
    UNDO_TOTALS_SQLITE,
    Body,
    BodyAborted,
    chunked,
    two_pg_nodes,
)
from .test_zip_kept import GzBody, Rec, check_archive, times

pytestmark = pytest.mark.anyio

KiB = 1024
BIG = 1024 * KiB + 100  # a file on SQLite, several chunks on PostgreSQL, an object with a bucket
DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", DEFAULT_PG_URL)


def expected(recs: dict[str, bytes]) -> SnapshotTotals:
    """The totals an archive of these records (key -> decoded bytes) is sized by, counted here."""
    return SnapshotTotals(
        count=len(recs),
        key_bytes=sum(len(k.encode()) for k in recs),
        decoded_bytes=sum(map(len, recs.values())),
        big_count=sum(len(v) >= 0xFFFFFFFF for v in recs.values()),
    )


async def totals(storage: Storage, store_id: str, selection: KeySelection | None = None) -> SnapshotTotals:
    async with storage.snapshot(store_id, selection or KeySelection()) as snap:
        return snap.totals


async def problems(storage: Storage) -> list[str]:
    """What ``openkvs check`` finds in the storage's database (opened on its own, as the command does)."""
    if isinstance(storage, SQLiteStorage):
        from openkvs.storage.sqlite.check import check

        found, summary = await anyio.to_thread.run_sync(check, storage.data_dir)
    else:
        from openkvs.storage.postgres.check import check as pg_check

        found, summary = await pg_check(storage.dsn, storage.namespace)  # type: ignore[attr-defined]
    assert found or "ZIP totals" in summary, summary
    return found


async def test_the_totals_follow_every_kind_of_write(storage: Storage) -> None:
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "totals", None, "k" * 32)
    other = await storage.create_store(user.id, "other", None, "k" * 32)
    await storage.put_record(other.id, "kept", Body(b"x" * 3000), "x/y", None)
    zeros = bytes(100 * KiB)  # gzip makes it ~100 stored bytes: small stored, big decoded
    steps: list[tuple[str, str, bytes | None, bool]] = [
        ("put", "ka", b"small", False),  # a new key
        ("put", "ka", b"replaced, longer", False),  # an overwrite: only the decoded bytes change
        ("put", "ké😀", os.urandom(3000), False),  # a key of multi-byte characters, a large record
        ("put", "kbig", os.urandom(BIG), False),  # big: a file, chunks, an object
        ("put", "kbig", b"now small", False),  # big -> small
        ("put", "ka", os.urandom(BIG), False),  # small -> big
        ("put", "kgz", zeros, True),  # Content-Encoding: gzip, 100 KiB decoded
        ("put", "kgz", b"plain again", False),  # encoded -> identity
        ("put", "kgz2", zeros[:5000], True),
        ("put", "kempty", b"", False),  # an empty record is an entry
        ("delete", "ka", None, False),
        ("delete", "ka", None, False),  # already gone: no change
        ("delete", "knever", None, False),
        ("delete", "ké😀", None, False),
    ]
    recs: dict[str, bytes] = {}
    for op, key, data, gz in steps:
        if op == "put":
            assert data is not None
            body: Any = GzBody(data) if gz else Body(chunked(data))
            await storage.put_record(store.id, key, body, "application/octet-stream", "gzip" if gz else None)
            recs[key] = data
        else:
            assert await storage.delete_record(store.id, key) == (key in recs)
            recs.pop(key, None)
        assert await totals(storage, store.id) == expected(recs), (op, key)
        # the same counted from the records (a key selection that selects them all)
        assert await totals(storage, store.id, KeySelection(prefix="k")) == expected(recs), (op, key)

    # An upload that fails changes nothing, for a new key and an overwrite, small or big.
    for key in ("knew", "kbig", "knew-big"):
        for after in (3, 17):
            with pytest.raises(BodyAborted):
                await storage.put_record(store.id, key, Body(chunked(os.urandom(BIG)), fail_after=after), "x/y", None)
        with pytest.raises(BodyAborted):
            await storage.put_record(store.id, key, Body([b"x"], fail_after=1), "x/y", None)
    assert await totals(storage, store.id) == expected(recs)
    assert await totals(storage, other.id) == expected({"kept": b"x" * 3000})

    # The archive: the reference writer's bytes, its size from the kept totals exact.
    rnd = random.Random(3)
    ordered = [Rec(k, recs[k]) for k in sorted(recs, key=str.encode)]
    want = zip_reference.build_archive(await times(storage, store.id, ordered))
    await check_archive(storage, store.id, want, rnd)
    assert await problems(storage) == []

    # A write to a store that is gone counts nowhere.
    assert await storage.delete_store(store.id)
    with pytest.raises(NotFound):
        await storage.put_record(store.id, "late", Body(b"x"), "x/y", None)
    assert await totals(storage, other.id) == expected({"kept": b"x" * 3000})
    assert await problems(storage) == []


async def test_concurrent_writers_of_the_same_keys_keep_them_exact(storage: Storage) -> None:
    """Writers racing on a few keys (new, overwrite, delete; small, large, big, encoded): the totals are the
    records' and the archive is right. SQLite runs them in group commits, PostgreSQL on separate connections (and
    its small records in groups of one statement)."""
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "race", None, "k" * 32)
    rng = random.Random(11)
    plans = [[(rng.choice(["put", "put", "delete"]), f"k{rng.randrange(6)}", rng.randrange(5)) for _ in range(25)]
             for _ in range(12)]

    async def writer(plan: list[tuple[str, str, int]]) -> None:
        for op, key, kind in plan:
            if op == "delete":
                await storage.delete_record(store.id, key)
            elif kind == 4:
                await storage.put_record(store.id, key, GzBody(bytes(rng.randrange(0, 9000))), "x/y", "gzip")
            else:
                data = os.urandom([rng.randrange(0, 200), rng.randrange(2040, 2060), 5000, BIG][kind])
                await storage.put_record(store.id, key, Body(chunked(data)), "x/y", None)

    async with anyio.create_task_group() as tg:
        for plan in plans:
            tg.start_soon(writer, plan)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        listed = {e.key: e.decoded_size async for batch in snap.zip_entries() for e in batch}
        kept = snap.totals
    assert kept == SnapshotTotals(
        len(listed), sum(len(k.encode()) for k in listed), sum(listed.values()), 0
    )
    assert await problems(storage) == []


async def test_a_delete_by_an_older_openkvs_leaves_them_counted_not_trusted(storage: Storage) -> None:
    """A node still running version 9 on a migrated database deletes a record as it did: the store's generation,
    size and record count move, its ZIP totals don't. The archive is still sized right (the totals are counted, as
    for a key selection); check names the store and --fix makes the totals current again."""
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "mixed", None, "k" * 32)
    recs = {f"k{i}": os.urandom(50 + 1000 * i) for i in range(5)}
    for key, data in recs.items():
        await storage.put_record(store.id, key, Body(data), "x/y", None)
    gone = recs.pop("k3")
    if isinstance(storage, SQLiteStorage):
        conn = sqlite3.connect(storage.db_path, timeout=30)
        with conn:
            conn.execute("DELETE FROM record_data WHERE id = (SELECT data_id FROM records WHERE key = 'k3')")
            conn.execute("DELETE FROM records WHERE store_id = ? AND key = 'k3'", (store.id,))
            conn.execute("UPDATE stores SET generation = generation + 1, storage_bytes = storage_bytes - ?, "
                         "record_count = record_count - 1 WHERE id = ?", (len(gone), store.id))
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(DSN, server_settings={"search_path": f'"{storage.namespace}"'})  # type: ignore[attr-defined]
        try:
            await conn.execute("DELETE FROM records WHERE store_id = $1 AND key = 'k3'", store.id)
            await conn.execute("UPDATE stores SET generation = generation + 1, storage_bytes = storage_bytes - $2, "
                               "record_count = record_count - 1 WHERE id = $1", store.id, len(gone))
        finally:
            await conn.close()
    assert await totals(storage, store.id) == expected(recs)
    ordered = [Rec(k, recs[k]) for k in sorted(recs)]
    await check_archive(storage, store.id, zip_reference.build_archive(await times(storage, store.id, ordered)),
                        random.Random(4))
    found = await problems(storage)
    assert found == [f"store {store.id}: its ZIP totals were left behind by a write of an older openkvs (its "
                     "downloads count them) (openkvs check --fix)"], found
    if isinstance(storage, SQLiteStorage):
        from openkvs.storage.sqlite.check import fix_counts

        fixed = await anyio.to_thread.run_sync(fix_counts, storage.data_dir)
    else:
        from openkvs.storage.postgres.check import fix_counts as pg_fix

        fixed = await pg_fix(DSN, storage.namespace)  # type: ignore[attr-defined]
    assert fixed == [f"store {store.id}: ZIP totals [10, 10250, 0, 3] -> [8, 7200, 0, 2]"], fixed
    assert await problems(storage) == []
    assert await totals(storage, store.id) == expected(recs)


# -- the upgrade that adds them -------------------------------------------------------------------------------------


async def put_mixed(storage: Storage, store_id: str, n: int) -> dict[str, bytes]:
    recs: dict[str, bytes] = {}
    for i in range(n):
        key = f"r{i:03d}" + ("é" * (i % 3))
        data = os.urandom([10, 3000, 70 * KiB][i % 3]) if i % 7 else bytes(20 * KiB)
        body: Any = GzBody(data) if i % 7 == 0 else Body(chunked(data))
        await storage.put_record(store_id, key, body, "x/y", "gzip" if i % 7 == 0 else None)
        recs[key] = data
    return recs


async def test_sqlite_upgrade_counts_the_totals_of_the_records_already_stored(tmp_path: Path) -> None:
    from openkvs.storage.sqlite.tables import TABLES_VERSION

    data = tmp_path / "data"
    async with SQLiteStorage(data, background=False) as st:
        user = await st.create_user("u")
        ids = {name: (await st.create_store(user.id, name, None, "k" * 32)).id for name in ("none", "one", "many")}
        recs = {"none": {}, "one": await put_mixed(st, ids["one"], 1), "many": await put_mixed(st, ids["many"], 60)}
        await st.delete_record(ids["many"], "r001é")
        del recs["many"]["r001é"]
    conn = sqlite3.connect(data / "openkvs.sqlite3")
    # version 9, records and all (no dataset items here: their rows are as version 9 had them)
    conn.executescript(UNDO_TOTALS_SQLITE + UNDO_PACKED_ROWS_SQLITE + "PRAGMA user_version = 9;")
    conn.close()

    async with SQLiteStorage(data, background=False) as st:
        assert await st.tables_version() == (TABLES_VERSION, TABLES_VERSION) == (11, 11)
        for name, sid in ids.items():
            assert await totals(st, sid) == expected(recs[name]), name
        assert await problems(st) == []
        await st.put_record(ids["one"], "another", Body(b"x"), "x/y", None)  # and kept from then on
        assert await totals(st, ids["one"]) == expected(recs["one"] | {"another": b"x"})


@pytest.mark.postgres
async def test_postgres_upgrade_counts_the_totals_and_nodes_migrating_at_once_agree() -> None:
    pg = pytest.importorskip("openkvs.storage.postgres")
    from tests.conftest import postgres_reachable, unavailable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncpg

    schema = "t_" + secrets.token_hex(6)
    st = pg.PostgresStorage(DSN, namespace=schema)
    await st.open()
    try:
        user = await st.create_user("u")
        ids = {name: (await st.create_store(user.id, name, None, "k" * 32)).id for name in ("none", "many")}
        recs = {"none": {}, "many": await put_mixed(st, ids["many"], 40)}
        await st.aclose()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": f'"{schema}"'})
        try:
            await conn.execute(UNDO_TOTALS_PG + "UPDATE schema_version SET version = 9")
        finally:
            await conn.close()
        nodes = [pg.PostgresStorage(DSN, namespace=schema) for _ in range(3)]
        assert await asyncio.gather(*(n.migrate() for n in nodes)) == [pg.TABLES_VERSION] * 3 == [12] * 3
        await st.open()
        for name, sid in ids.items():
            assert await totals(st, sid) == expected(recs[name]), name
        assert await problems(st) == []
        await st.put_record(ids["many"], "another", Body(b"x"), "x/y", None)  # and kept from then on
        await st.delete_record(ids["many"], "r000")
        del recs["many"]["r000"]
        assert await totals(st, ids["many"]) == expected(recs["many"] | {"another": b"x"})
    finally:
        await st.aclose()
        await pg.PostgresStorage(DSN, namespace=schema).drop()


# -- PostgreSQL: two nodes on one schema ---------------------------------------------------------------------------


@pytest.mark.postgres
async def test_two_nodes_writing_the_same_keys_keep_them_exact() -> None:
    """Two nodes (two connection pools) on one schema, 16 writers putting (small, large, many chunks, encoded) and
    deleting 8 keys of one store: each node's snapshot has the records' totals, and check finds them right."""
    async with two_pg_nodes() as (a, b, _):
        user = await a.create_user("alice")
        store = await a.create_store(user.id, "shared", None, "k" * 32)
        rng = random.Random(5)

        async def writer(i: int) -> None:
            s = a if i % 2 else b
            for _ in range(20):
                key = f"k{rng.randrange(8)}é"
                if rng.random() < 0.35:
                    await s.delete_record(store.id, key)
                elif rng.random() < 0.2:
                    await s.put_record(store.id, key, GzBody(bytes(rng.randrange(0, 9000))), "x/y", "gzip")
                else:
                    data = os.urandom(rng.choice([0, 10, 3000, 20 * KiB, BIG]))
                    await s.put_record(store.id, key, Body(chunked(data)), "x/y", None)

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(writer, i)
        async with a.snapshot(store.id, KeySelection()) as snap:
            listed = {e.key: e.decoded_size async for batch in snap.zip_entries() for e in batch}
        want = SnapshotTotals(len(listed), sum(len(k.encode()) for k in listed), sum(listed.values()), 0)
        assert await totals(a, store.id) == await totals(b, store.id) == want
        assert await problems(a) == []
