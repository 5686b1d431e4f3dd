"""``openkvs check`` verifies every store's record count (the one kept with each write) against its records, and
``openkvs check --fix`` sets the wrong ones, exactly, while writers keep writing: SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from openkvs.storage.base import KeySelection, Storage
from openkvs.storage.sqlite import SQLiteStorage
from tests.clirun import Ran, openkvs_here
from tests.conftest import postgres_reachable, unavailable
from tests.storage.conftest import Body

pytestmark = pytest.mark.anyio

DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def openkvs(*args: str) -> Ran:
    return openkvs_here(*args)  # in this process: the command's output and exit code are what is tested


class Backend:
    """An open storage, the command line's flags for it, and raw SQL on its database."""

    def __init__(self, storage: Storage, args: list[str], sql: Callable[[str], Any], fix: Callable[[], Any]):
        self.storage, self.args, self.sql, self.fix = storage, args, sql, fix


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        from openkvs.storage.sqlite.check import fix_counts

        data = tmp_path / "data"

        def sql(statement: str) -> None:
            conn = sqlite3.connect(data / "openkvs.sqlite3", timeout=30)
            try:
                conn.execute(statement)
                conn.commit()
            finally:
                conn.close()

        async with SQLiteStorage(data, background=False) as st:
            yield Backend(st, ["--data-dir", str(data)], sql, lambda: fix_counts(data))
        return
    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncpg

    from openkvs.storage.postgres import PostgresStorage
    from openkvs.storage.postgres.check import fix_counts as pg_fix

    schema = "t_" + secrets.token_hex(6)

    def pg_sql(statement: str) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(DSN, server_settings={"search_path": f'"{schema}"'})
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        anyio.run(go)

    st = PostgresStorage(DSN, namespace=schema)
    await st.open()
    try:
        yield Backend(st, ["--database-url", DSN, "--database-schema", schema], pg_sql,
                      lambda: anyio.run(pg_fix, DSN, schema))
    finally:
        await st.aclose()
        await PostgresStorage(DSN, namespace=schema).drop()


async def records(storage: Storage, store_id: str) -> int:
    return len((await storage.list_keys(store_id, KeySelection(), None, 1000)).items)


async def count(storage: Storage, store_id: str) -> int:
    store = await storage.get_store(store_id)
    assert store is not None
    return store.stats.record_count


async def test_check_finds_a_wrong_count_and_fix_sets_it(backend: Backend) -> None:
    st = backend.storage
    user = await st.create_user("alice")
    right = await st.create_store(user.id, "right", None, "k" * 32)
    wrong = await st.create_store(user.id, "wrong", None, "k" * 32)
    for store in (right, wrong):
        for key in ("a", "b", "c"):
            await st.put_record(store.id, key, Body(b"x"), "text/plain", None)
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 0 and "record counts agree" in out.stdout, out.stdout + out.stderr

    await anyio.to_thread.run_sync(backend.sql, f"UPDATE stores SET record_count = 99 WHERE id = '{wrong.id}'")
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines() == [f"store {wrong.id}: its record count says 99, it holds 3 records "
                                       "(openkvs check --fix)"]
    assert "1 problem found" in out.stderr and "Traceback" not in out.stderr

    out = await anyio.to_thread.run_sync(lambda: openkvs("check", "--fix", *backend.args))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == f"fixed: store {wrong.id}: record count 99 -> 3"
    assert out.stdout.splitlines()[-1].startswith("ok: ")
    assert await count(st, wrong.id) == await count(st, right.id) == 3


async def test_fix_is_exact_while_writers_write(backend: Backend) -> None:
    """Writers keep adding and deleting records while the count is broken and then fixed: once they stop, the
    count is the records' (a fix that counted outside the writers' lock would be off by the writes in between)."""
    st = backend.storage
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "busy", None, "k" * 32)
    stop = anyio.Event()
    fixed: list[str] = []

    async def writer(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"w{i}-{n % 40}"
            if n % 3 == 0:
                await st.delete_record(store.id, key)
            else:
                await st.put_record(store.id, key, Body(b"v" * n), "text/plain", None)
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(writer, i)
        with anyio.fail_after(120):  # the writers under way, however loaded the machine
            while await records(st, store.id) < 10:
                await anyio.sleep(0.05)
        for _ in range(3):
            await anyio.to_thread.run_sync(
                backend.sql, f"UPDATE stores SET record_count = record_count + 1000 WHERE id = '{store.id}'"
            )
            fixed += await anyio.to_thread.run_sync(backend.fix)
            await anyio.sleep(0.1)
        stop.set()
    assert len(fixed) == 3 and all(f"store {store.id}: record count " in line for line in fixed), fixed
    assert await count(st, store.id) == await records(st, store.id) > 0


async def test_check_finds_wrong_zip_totals_and_fix_sets_them(backend: Backend) -> None:
    """The other totals each store keeps for its ZIP download (storage/totals.py): a wrong one is found, named, and
    set by --fix; then the archive's size is right again."""
    st = backend.storage
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "zipped", None, "k" * 32)
    for key, data in (("a", b"x"), ("bé", b"y" * 3000)):
        await st.put_record(store.id, key, Body(data), "text/plain", None)
    await anyio.to_thread.run_sync(
        backend.sql, f"UPDATE stores SET key_bytes = key_bytes + 5, large_count = 7 WHERE id = '{store.id}'"
    )
    async with st.snapshot(store.id, KeySelection()) as snap:
        assert (snap.totals.key_bytes, snap.totals.decoded_bytes) == (9, 3001)  # what the archive is sized by
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        f"store {store.id}: its ZIP totals (key bytes, decoded bytes, ZIP64 entries, large records) say "
        "[9, 3001, 0, 7], its records give [4, 3001, 0, 1] (openkvs check --fix)"
    ]
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", "--fix", *backend.args))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == f"fixed: store {store.id}: ZIP totals [9, 3001, 0, 7] -> [4, 3001, 0, 1]"
    assert "record counts agree, and the stores' ZIP totals" in out.stdout.splitlines()[-1]
    async with st.snapshot(store.id, KeySelection()) as snap:
        assert (snap.totals.count, snap.totals.key_bytes, snap.totals.decoded_bytes) == (2, 4, 3001)


async def test_a_download_sized_by_understated_totals_fails_instead_of_ending_short(backend: Backend) -> None:
    """ZIP totals that say less than the records hold (a damaged database) size the archive short: the download
    fails past its first bytes (the server aborts the connection) instead of ending at the announced length with
    a body that looks whole; after check --fix it is the whole archive again."""
    import io
    import zipfile

    from openkvs.api.download import _archive_bytes, _archive_size
    from openkvs.zipwriter import ArchiveDataError

    st = backend.storage
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "zipped", None, "k" * 32)
    for i in range(20):
        await st.put_record(store.id, f"r{i:02d}", Body(b"%d" % i * 50), "text/plain", None)
    await anyio.to_thread.run_sync(backend.sql, f"UPDATE stores SET key_bytes = key_bytes - 3 WHERE id = '{store.id}'")

    async def download() -> bytes:
        async with st.snapshot(store.id, KeySelection()) as snap:
            size = await _archive_size(snap)
            return b"".join([c async for c in _archive_bytes(snap, 0, size, total=size)])

    with pytest.raises(ArchiveDataError, match="longer than"):
        await download()
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", "--fix", *backend.args))
    assert out.returncode == 0, out.stdout + out.stderr
    with zipfile.ZipFile(io.BytesIO(await download())) as z:
        assert z.testzip() is None
        assert [(i.filename, z.read(i)) for i in z.infolist()] == [(f"r{i:02d}", b"%d" % i * 50) for i in range(20)]


async def test_check_finds_a_dataset_whose_rows_lost_items(backend: Backend) -> None:
    from tests.storage.test_datasets import make_push, new_dataset, union

    st = backend.storage
    sid = await new_dataset(st)
    for p in range(3):  # 900 items: several packed rows
        await st.datasets.push(sid, make_push([{"p": p, "i": i, "s": "x" * 40} for i in range(300)]), union)
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 0 and "the items of 1 dataset agree" in out.stdout, out.stdout + out.stderr

    # a row in the middle gone (a hand's DELETE, a damaged page): items missing, the counts no longer theirs
    await anyio.to_thread.run_sync(backend.sql, f"DELETE FROM dataset_items WHERE store_id = '{sid}' AND idx = "
                                   f"(SELECT min(idx) FROM dataset_items WHERE store_id = '{sid}' AND idx >= 450)")
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"dataset {sid}: its items' indexes are not 0 to "), lines
    assert lines[1].startswith(f"dataset {sid}: its counts say 900 items, its rows hold "), lines
    assert lines[2].startswith(f"dataset {sid}: its counts say "), lines
    assert "Traceback" not in out.stderr


async def test_check_counts_records_in_a_bucket_apart(backend: Backend) -> None:
    """A record whose bytes are an object in a --blob-store bucket has no chunks and no file to check: the summary
    says how many there are and that openkvs blobs fsck checks them, and does not count them as checked (PostgreSQL
    said "chunks of 2 records add up" of one record with chunks and one in the bucket)."""
    st = backend.storage
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "s", None, "k" * 32)
    for key in ("here", "there"):
        await st.put_record(store.id, key, Body(b"x" * 10), "text/plain", None)
    if backend.args[0] == "--data-dir":  # as a node with --blob-store writes it: path s3:<blob id>, no inline bytes
        await anyio.to_thread.run_sync(backend.sql, "UPDATE records SET path = 's3:1', data_id = NULL WHERE key = 'there'")
    else:  # chunk_size 0 (IN_BUCKET), no chunks
        await anyio.to_thread.run_sync(
            backend.sql, "DELETE FROM blob_chunks WHERE blob_id = (SELECT blob_id FROM records WHERE key = 'there');"
            " UPDATE records SET chunk_size = 0 WHERE key = 'there'")
    out = await anyio.to_thread.run_sync(lambda: openkvs("check", *backend.args))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 record in a bucket (openkvs blobs fsck checks them)" in out.stdout, out.stdout
    assert "2 records" not in out.stdout
    assert ("1 inline record checked" if backend.args[0] == "--data-dir" else "chunks of 1 record add up") in out.stdout
