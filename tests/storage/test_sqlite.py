"""What only the SQLite backend has: a data_dir shared by several processes, files for large records, garbage
collection of those files, crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from openkvs.storage.base import KeySelection, StorageDamaged, StorageUnavailable
from openkvs.storage.ids import ALPHABET, new_id
from openkvs.storage.sqlite import SQLiteStorage

from .conftest import Body, chunked

pytestmark = pytest.mark.anyio

INLINE = 1024


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def blob_files(data_dir: Path) -> set[str]:
    root = data_dir / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def read_all(src, record, start=0, end=None) -> bytes:
    return b"".join([c async for c in src.read_blob(record, start, end)])


async def put(st: SQLiteStorage, store_id: str, key: str, data: bytes):
    return await st.put_record(store_id, key, Body(chunked(data, 4096)), "application/octet-stream", None)


@pytest.fixture
async def st(tmp_path: Path):
    async with SQLiteStorage(tmp_path / "d", inline_max=INLINE, background=False) as s:
        yield s


def test_ids() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 17 and set(i) <= set(ALPHABET) for i in ids)
    # every character of the alphabet turns up (a CSPRNG over the whole alphabet, not hex)
    assert set("".join(ids)) == set(ALPHABET)


async def test_layout(st: SQLiteStorage, tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert (d / "openkvs.sqlite3").is_file() and (d / "blobs").is_dir() and (d / "tmp").is_dir()
    conn = sqlite3.connect(d / "openkvs.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.close()
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "s", None, "k")
    await put(st, store.id, "small", b"x" * INLINE)
    assert blob_files(d) == set()
    await put(st, store.id, "big", b"x" * (INLINE + 1))
    (name,) = blob_files(d)
    assert len(name.split("/")) == 3  # two-level fan-out


async def test_two_instances_share_one_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    async with SQLiteStorage(d, inline_max=INLINE) as a, SQLiteStorage(d, inline_max=INLINE) as b:
        user = await a.create_user("alice")
        assert (await b.get_user_by_name("alice")) == user
        await b.add_token(user.id, "h")
        assert (await a.user_by_token("h")) == user

        store = await a.create_store(user.id, "s", None, "k")
        big = os.urandom(INLINE * 5)
        await put(a, store.id, "k1", b"from a")
        await put(b, store.id, "k2", big)
        assert await read_all(b, await b.get_record(store.id, "k1")) == b"from a"
        assert await read_all(a, await a.get_record(store.id, "k2")) == big
        assert [i.key for i in (await a.list_keys(store.id, KeySelection(), None, 10)).items] == ["k1", "k2"]
        assert (await b.get_store(store.id)).stats.storage_bytes == 6 + len(big)

        # get-or-create racing across "processes": one store
        results = []

        async def one(s: SQLiteStorage) -> None:
            results.append(await s.get_or_create_store(user.id, "raced", None, "k"))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, a if i % 2 else b)
        assert len({s.id for s, _ in results}) == 1 and sum(c for _, c in results) == 1

        # concurrent writers to one key from both: every write lands, the last one wins, bytes add up
        async def writer(s: SQLiteStorage, tag: bytes) -> None:
            for i in range(20):
                await put(s, store.id, f"w-{tag.decode()}-{i}", tag * (i * 100))

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, a, b"a")
            tg.start_soon(writer, b, b"b")
        page = await a.list_keys(store.id, KeySelection(prefix="w-"), None, 100)
        assert len(page.items) == 40
        assert (await a.get_store(store.id)).stats.storage_bytes == 6 + len(big) + 2 * sum(i * 100 for i in range(20))

        # a snapshot in one process protects its files from the garbage collector of the other
        async with a.snapshot(store.id, KeySelection(exact="k2")) as snap:
            await b.delete_record(store.id, "k2")
            await b.collect_garbage(now=later(200))  # past the grace period, lease (5 min) still live
            assert sum([len(x) async for x in snap.records()]) == 1
            async for recs in snap.records():
                assert await read_all(snap, recs[0]) == big
        assert await b.collect_garbage(now=later(120)) == 1

        # stats flushed by either process add up
        a.count_access(store.id, reads=2)
        b.count_access(store.id, reads=3)
        await a.flush_stats()
        await b.flush_stats()
        assert (await a.get_store(store.id)).stats.read_count == 5


async def test_gc_reclaims_after_grace_and_snapshot(st: SQLiteStorage, tmp_path: Path) -> None:
    d = tmp_path / "d"
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "s", None, "k")
    await put(st, store.id, "a", os.urandom(INLINE * 2))
    await put(st, store.id, "b", os.urandom(INLINE * 2))
    first = blob_files(d)
    assert len(first) == 2
    meta_a = await st.get_record(store.id, "a")

    await put(st, store.id, "a", os.urandom(INLINE * 3))  # replaces a file
    await put(st, store.id, "b", b"now inline")  # file -> inline
    assert len(blob_files(d)) == 3

    # within the grace period nothing goes; a reader of the old "a" still gets its bytes
    assert await st.collect_garbage(now=later(st.gc_grace_seconds - 5)) == 0
    assert blob_files(d) >= first
    assert len(await read_all(st, meta_a)) == INLINE * 2

    # an open snapshot holds back garbage made after it began, even past the grace period
    async with st.snapshot(store.id, KeySelection()) as snap:
        await st.delete_record(store.id, "a")
        # the two replaced before the snapshot began go; the one deleted during it stays
        assert await st.collect_garbage(now=later(st.gc_grace_seconds + 5)) == 2
        assert len(blob_files(d)) == 1
        contents = {}
        async for recs in snap.records():
            for r in recs:
                contents[r.key] = await read_all(snap, r)
        assert sorted(contents) == ["a", "b"] and len(contents["a"]) == INLINE * 3
    assert await st.collect_garbage(now=later(st.gc_grace_seconds + 5)) == 1
    assert blob_files(d) == set()
    with pytest.raises(StorageDamaged):  # its file is gone: damage as far as a reader is concerned
        await read_all(st, meta_a)

    # deleting a store makes all its files garbage
    for i in range(5):
        await put(st, store.id, f"f{i}", os.urandom(INLINE + 1 + i))
    assert len(blob_files(d)) == 5
    await st.delete_store(store.id)
    assert await st.collect_garbage(now=later(st.gc_grace_seconds + 1)) == 5
    assert blob_files(d) == set()


async def test_expired_lease_of_a_crashed_process_is_ignored(st: SQLiteStorage, tmp_path: Path) -> None:
    user = await st.create_user("alice")
    store = await st.create_store(user.id, "s", None, "k")
    await put(st, store.id, "a", os.urandom(INLINE * 2))
    # a lease left behind by a process that died while a download was open
    conn = sqlite3.connect(st.db_path)
    conn.execute("INSERT INTO leases(id, watermark, expires_at) VALUES ('dead', 0, ?)",
                 (int(time.time() * 1000) + 300_000,))
    conn.commit()
    conn.close()
    await st.delete_record(store.id, "a")
    assert await st.collect_garbage(now=later(st.gc_grace_seconds + 1)) == 0  # still live: respected
    assert await st.collect_garbage(now=later(600)) == 1  # expired: ignored
    assert blob_files(tmp_path / "d") == set()


async def test_open_sweeps_tmp_files_of_dead_writers(tmp_path: Path) -> None:
    d = tmp_path / "d"
    async with SQLiteStorage(d):
        pass
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        tmp = d / "tmp"
        in_progress = tmp / f"{live.pid}-aaaa.part"  # another live process's upload
        crashed = tmp / f"{dead.pid}-bbbb.part"  # its writer is gone
        stale = tmp / f"{live.pid}-cccc.part"  # live pid, but untouched for two hours: the pid was reused
        for p in (in_progress, crashed, stale):
            p.write_bytes(b"x")
        two_hours_ago = time.time() - 7200
        os.utime(stale, (two_hours_ago, two_hours_ago))
        async with SQLiteStorage(d):
            assert in_progress.exists()
            assert not crashed.exists()
            assert not stale.exists()
    finally:
        live.kill()
        live.wait()


async def test_locked_database_is_unavailable(tmp_path: Path) -> None:
    d = tmp_path / "d"
    async with SQLiteStorage(d, busy_timeout=0.2) as st:
        user = await st.create_user("alice")
        blocker = sqlite3.connect(st.db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            t0 = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await st.create_store(user.id, "s", None, "k")
            assert time.monotonic() - t0 < 5
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await st.create_store(user.id, "s", None, "k")).name == "s"


async def test_stats_flushed_in_background_and_at_close(tmp_path: Path) -> None:
    d = tmp_path / "d"
    async with SQLiteStorage(d, stats_interval=0.05) as st:
        user = await st.create_user("alice")
        store = await st.create_store(user.id, "s", None, "k")
        st.count_access(store.id, reads=1)
        with anyio.fail_after(5):
            while (await st.get_store(store.id)).stats.read_count != 1:
                await anyio.sleep(0.02)
        st.count_access(store.id, writes=7)
    async with SQLiteStorage(d) as st:
        assert (await st.get_store(store.id)).stats.write_count == 7


CHILD = textwrap.dedent(
    """
    import asyncio, hashlib, os, sys
    sys.path.insert(0, {root!r})
    from openkvs.storage.sqlite import SQLiteStorage
    from tests.storage.conftest import Body, chunked

    async def main():
        async with SQLiteStorage({data!r}, inline_max={inline}) as st:
            user = await st.create_user("crash")
            store = await st.create_store(user.id, "s", None, "k")
            print("STORE", store.id, flush=True)
            i = 0
            while True:
                size = (i * 7919) % ({inline} * 6)
                data = os.urandom(size)
                key = "k%d" % (i % 50)
                print("WILL", key, hashlib.sha256(data).hexdigest(), flush=True)
                await st.put_record(store.id, key, Body(chunked(data, 4096)), "x/y", None)
                print("PUT", key, hashlib.sha256(data).hexdigest(), flush=True)
                i += 1

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    d = tmp_path / "d"
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=root, data=str(d), inline=INLINE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, str] = {}  # key -> digest of its last write that put_record returned from
    in_flight: tuple[str, str] | None = None  # the write started last (it may or may not have committed)
    store_id = None
    puts = 0

    def take(line: str) -> None:
        nonlocal store_id, in_flight, puts
        parts = line.split()
        if len(parts) == 2 and parts[0] == "STORE":
            store_id = parts[1]
        elif len(parts) == 3 and parts[0] == "WILL":
            in_flight = (parts[1], parts[2])
        elif len(parts) == 3 and parts[0] == "PUT":
            acked[parts[1]] = parts[2]
            puts += 1

    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while puts < 120:
            line = proc.stdout.readline()
            assert line, "child died"
            take(line)
            assert time.monotonic() < deadline
        time.sleep(0.05)  # let it get into the middle of something
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # what it printed before dying
            take(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # a crash mid-upload may leave a temp file; make it look old, as after a long outage
    for p in (d / "tmp").iterdir():
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    async with SQLiteStorage(d, inline_max=INLINE, background=False) as st:
        assert list((d / "tmp").iterdir()) == []
        for key, digest in acked.items():
            rec = await st.get_record(store_id, key)
            assert rec is not None, key
            data = await read_all(st, rec)
            # the last acknowledged write of the key, or the one in flight if it committed before the kill
            allowed = {digest} | ({in_flight[1]} if in_flight and in_flight[0] == key else set())
            assert hashlib.sha256(data).hexdigest() in allowed, f"record {key} lost its acknowledged bytes"
        # every file in blobs/ is referenced by a record or queued as garbage: nothing leaks
        conn = sqlite3.connect(d / "openkvs.sqlite3")
        known = {r[0] for r in conn.execute("SELECT path FROM records WHERE path IS NOT NULL")}
        known |= {r[0] for r in conn.execute("SELECT path FROM garbage")}
        conn.close()
        assert blob_files(d) <= known
        # and the store's byte count matches its records
        page = await st.list_keys(store_id, KeySelection(), None, 1000)
        assert (await st.get_store(store_id)).stats.storage_bytes == sum(i.size for i in page.items)
        # the queued garbage is reclaimed eventually (pending files of the crashed commit included)
        await st.collect_garbage(now=later(2 * 86400))
        conn = sqlite3.connect(d / "openkvs.sqlite3")
        referenced = {r[0] for r in conn.execute("SELECT path FROM records WHERE path IS NOT NULL")}
        assert conn.execute("SELECT COUNT(*) FROM garbage").fetchone()[0] == 0
        conn.close()
        assert blob_files(d) == referenced


@pytest.mark.parametrize("size, remap_every", [(100, None), (16 * 1024, None), (16 * 1024, 1)])
async def test_snapshot_reads_the_same_bytes_while_the_database_grows_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, remap_every: int | None
) -> None:
    """A snapshot of larger inline records reads through a memory map of the database file (see
    SNAPSHOT_MMAP_MIN_AVG), dropped and made again every REMAP_BYTES (here also after every batch).
    Writers meanwhile rewrite every record with twice the bytes and checkpoints run (copying into the database
    file what the open snapshot allows): the snapshot must still read exactly the bytes it started with."""
    from openkvs.storage.sqlite import snapshot as snapshot_module

    remaps = []
    if remap_every is not None:
        monkeypatch.setattr(snapshot_module, "REMAP_BYTES", remap_every)
        remap = snapshot_module.remap
        monkeypatch.setattr(snapshot_module, "remap", lambda conn: (remaps.append(1), remap(conn)))
    async with SQLiteStorage(tmp_path / "d", background=False) as s:
        user = await s.create_user("alice")
        store = await s.create_store(user.id, "s", None, "k")
        original = {f"k{i:04d}": os.urandom(size) for i in range(300)}
        for k, v in original.items():
            await put(s, store.id, k, v)
        mapped = {}
        async with s.snapshot(store.id, KeySelection()) as snap:
            mapped["at start"] = snap._conn.execute("PRAGMA mmap_size").fetchone()[0]
            got: dict[str, bytes] = {}
            async for batch in snap.records(batch=50):
                for r in batch:
                    got[r.key] = await read_all(snap, r)
                # rewrite everything, bigger, and push it into the main database file
                for k in list(original)[: len(got)]:
                    await put(s, store.id, k, os.urandom(size * 2))
                with sqlite3.connect(s.db_path) as other:
                    other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert got == original
        assert (mapped["at start"] > 0) == (size >= 4096)
        assert (len(remaps) >= 6) == (remap_every is not None)  # 300 records in batches of 50
