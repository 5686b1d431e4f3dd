"""ZIP archives from headers the storage keeps (Snapshot.kept_local / kept_central: batches of small records laid
out by the database, zipwriter.LocalBlock / CentralBlock) are byte for byte what the old, entry-by-entry writer made
(tests/zip_reference.py): small, empty, gzip-encoded and big records (files on SQLite, chunks or bucket objects on
PostgreSQL) mixed, times set in the database to edges (before 1980, 2038, after 2107), whole archives and random
ranges. Both backends keep each record's header from write time (records.zip_head; PostgreSQL's own tests:
test_zip_kept_pg.py). On SQLite a time changed behind its back, or a database from before version 9, is read the
slower way until the headers are filled in, with the same bytes; PostgreSQL makes a changed row's header again in
a trigger."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import sqlite3
import threading
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openkvs.api.download import _archive_bytes, _archive_size
from openkvs.storage.base import KeySelection, Storage
from openkvs.storage.postgres import PgSnapshot
from openkvs.storage.sqlite import TABLES_VERSION, SQLiteStorage
from openkvs.storage.sqlite.snapshot import SQLiteSnapshot
from openkvs.zipwriter import CentralBlock, LocalBlock, local_header
from tests import zip_reference

from .conftest import DEFAULT_PG_URL, UNDO_PACKED_ROWS_SQLITE, UNDO_TOTALS_SQLITE, Body

pytestmark = pytest.mark.anyio

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EDGE_MS = [1, 315_532_799_999, 315_532_800_000, 1_700_000_000_000, 1_700_000_000_999, 0x7FFFFFFF * 1000 + 5,
           4_354_819_200_000, 4_400_000_000_123]


class GzBody:
    """A gzip-encoded body: yields the stored (compressed) bytes, counts and checksums the decoded ones."""

    def __init__(self, data: bytes) -> None:
        self.stored = gzip.compress(data)
        self.decoded_size = len(data)
        self.crc32 = zlib.crc32(data)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.stored


@dataclass
class Rec:
    key: str
    data: bytes  # decoded
    ms: int | None = None  # set in the database, or None: as written

    @property
    def decoded_size(self) -> int:
        return len(self.data)

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data)


async def put_many(storage: Storage, store_id: str, puts: list[tuple[str, Any]]) -> None:
    """Records (key, Body or GzBody) written by eight writers at once: the same records whatever the order (an
    archive is in key order), and PostgreSQL commits them together instead of one after another."""

    async def write(part: list[tuple[str, Any]]) -> None:
        for key, body in part:
            await storage.put_record(store_id, key, body, "application/octet-stream",
                                     "gzip" if isinstance(body, GzBody) else None)

    await asyncio.gather(*(write(puts[i::8]) for i in range(8)))


async def fill(storage: Storage, rnd: random.Random, n: int) -> tuple[str, list[Rec]]:
    user = await storage.create_user(f"u{rnd.randrange(1 << 30)}")
    store = await storage.create_store(user.id, "s", None, "k")
    keys = sorted({"k" + "".join(rnd.choice("abcXYZ09-_.é😀") for _ in range(rnd.randint(1, 20))) for _ in range(n)},
                  key=str.encode)
    recs, puts = [], []
    for key in keys:
        kind = rnd.random()
        data = (rnd.randbytes(rnd.choice([0, 0, 3])) if kind < 0.05
                else rnd.randbytes(70 * 1024) if kind < 0.07  # a file on SQLite, an object with a bucket
                else rnd.randbytes(rnd.randint(1, 300)))
        puts.append((key, GzBody(data) if rnd.random() < 0.03 else Body(data)))
        recs.append(Rec(key, data))
    await put_many(storage, store.id, puts)
    return store.id, recs


async def set_times(storage: Storage, store_id: str, recs: list[Rec], rnd: random.Random) -> None:
    """Some records' times set in the database, as no API can."""
    for r in rnd.sample(recs, len(recs) // 5):
        r.ms = rnd.choice(EDGE_MS)
    rows = [(r.ms, store_id, r.key) for r in recs if r.ms is not None]
    if isinstance(storage, SQLiteStorage):
        conn = sqlite3.connect(storage.db_path, timeout=30)
        with conn:
            conn.executemany("UPDATE records SET modified_at = ? WHERE store_id = ? AND key = ?", rows)
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(os.environ.get("OPENKVS_TEST_DATABASE_URL", DEFAULT_PG_URL))
        try:
            await conn.execute(f'SET search_path = "{storage.namespace}"')  # type: ignore[attr-defined]
            await conn.executemany(
                "UPDATE records SET modified_at = 'epoch'::timestamptz + $1 * interval '1 millisecond' "
                "WHERE store_id = $2 AND key = $3",
                rows,
            )
        finally:
            await conn.close()


async def times(storage: Storage, store_id: str, recs: list[Rec]) -> list[tuple[Any, bytes]]:
    """The records as the reference writer takes them: with the times the store holds."""
    async with storage.snapshot(store_id, KeySelection()) as snap:
        got = {e.key: e.modified_at async for batch in snap.zip_entries() for e in batch}

    @dataclass
    class Entry:
        key: str
        decoded_size: int
        crc32: int
        modified_at: datetime

    return [(Entry(r.key, r.decoded_size, r.crc32, got[r.key]), r.data) for r in recs]


async def check_archive(storage: Storage, store_id: str, want: bytes, rnd: random.Random) -> dict[str, int]:
    """The archive and random ranges of it equal ``want``; returns how many batches of each kind the snapshot's
    kept_local and kept_central gave."""
    kinds: dict[str, int] = {}
    async with storage.snapshot(store_id, KeySelection()) as snap:
        inner = getattr(snap, "_snap", snap)  # with a bucket: the SQLite snapshot inside its ObjectSnapshot
        if isinstance(inner, SQLiteSnapshot | PgSnapshot):
            inner.kept_rows = min(inner.kept_rows, rnd.choice([5, 37]))  # many batches
        size = await _archive_size(snap)
        assert size == len(want)
        assert b"".join([c async for c in _archive_bytes(snap, 0, size)]) == want
        for _ in range(12):
            a = rnd.randrange(size)
            b = rnd.randrange(a, size + 1)
            assert b"".join([c async for c in _archive_bytes(snap, a, b)]) == want[a:b], (a, b)
        for source in (snap.kept_local(), snap.kept_central()):
            if source is None:
                continue
            async for batch in source:
                name = type(batch).__name__ if isinstance(batch, LocalBlock | CentralBlock) else "records"
                kinds[name] = kinds.get(name, 0) + 1
    return kinds


@pytest.mark.parametrize("seed", [1, 2])
async def test_kept_headers_give_the_old_writers_bytes(
    storage: Storage, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed == 2:  # batches cut short by the bytes they hold, after a record or two
        from openkvs.storage.postgres import snapshot as pg_snapshot
        from openkvs.storage.sqlite import snapshot as sqlite_snapshot

        monkeypatch.setattr(sqlite_snapshot, "PREFETCH_BYTES", 500)
        monkeypatch.setattr(pg_snapshot, "PREFETCH_BYTES", 500)
    rnd = random.Random(seed)
    store_id, recs = await fill(storage, rnd, 400)
    await set_times(storage, store_id, recs, rnd)
    want = zip_reference.build_archive(await times(storage, store_id, recs))
    kinds = await check_archive(storage, store_id, want, rnd)
    if not isinstance(storage, SQLiteStorage):  # PostgreSQL: the headers of changed times made again at once
        assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
        assert "records" in kinds, kinds  # (records: big ones, encoded ones)
        return
    # the rows whose time changed were read without their headers
    assert kinds.get("LocalBlock", 0) > 0 and kinds.get("records", 0) > 0, kinds
    assert kinds.get("CentralBlock", 0) < sum(kinds.values()) // 2, kinds
    await storage.fill_zip_heads()
    kinds = await check_archive(storage, store_id, want, rnd)
    assert kinds.get("LocalBlock", 0) > 0, kinds
    assert kinds.get("CentralBlock", 0) > 0 and "records" in kinds, kinds  # (records: files, encoded ones)


async def test_a_database_from_before_version_9_gets_its_headers(tmp_path: Path) -> None:
    rnd = random.Random(5)
    d = tmp_path / "d"
    async with SQLiteStorage(d, background=False) as st:
        store_id, recs = await fill(st, rnd, 300)
    conn = sqlite3.connect(d / "openkvs.sqlite3", isolation_level=None)
    conn.executescript(
        "DROP TRIGGER records_zip_head_stale; DROP INDEX records_no_zip_head;"
        "ALTER TABLE records DROP COLUMN zip_head; PRAGMA user_version = 8;" + UNDO_TOTALS_SQLITE + UNDO_PACKED_ROWS_SQLITE
    )
    conn.close()
    async with SQLiteStorage(d, background=False) as st:
        want = zip_reference.build_archive(await times(st, store_id, recs))
        kinds = await check_archive(st, store_id, want, rnd)
        assert set(kinds) == {"records"}, kinds  # no header kept yet: the slower way, the same bytes
        await st.migrate()
        kinds = await check_archive(st, store_id, want, rnd)
        assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
    conn = sqlite3.connect(d / "openkvs.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == TABLES_VERSION
    for key, size, crc, ms, head in conn.execute("SELECT key, decoded_size, crc32, modified_at, zip_head FROM records"):
        assert head == local_header(key, size, crc, ms // 1000)
    conn.close()


async def test_headers_are_filled_in_the_background(tmp_path: Path) -> None:
    d = tmp_path / "d"
    async with SQLiteStorage(d, background=False) as st:
        await fill(st, random.Random(6), 50)
    conn = sqlite3.connect(d / "openkvs.sqlite3", isolation_level=None)
    conn.execute("UPDATE records SET modified_at = modified_at + 1000")  # every header stale: the trigger
    assert conn.execute("SELECT count(*) FROM records WHERE zip_head IS NULL").fetchone()[0] == 50
    async with SQLiteStorage(d):
        for _ in range(600):
            if conn.execute("SELECT count(*) FROM records WHERE zip_head IS NULL").fetchone()[0] == 0:
                break
            await asyncio.sleep(0.1)
        assert conn.execute("SELECT count(*) FROM records WHERE zip_head IS NULL").fetchone()[0] == 0
    conn.close()


async def test_sqlite_snapshot_reads_off_the_event_loop_thread(tmp_path: Path) -> None:
    """A download's batches are read in worker threads: the event loop's thread stays free for other requests
    while SQLite works (every statement of the snapshot's connections, its own and the second one that reads
    every other batch, is traced with its thread)."""
    rnd = random.Random(8)
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        store_id, recs = await fill(st, rnd, 200)
        want = zip_reference.build_archive(await times(st, store_id, recs))
        threads: set[int] = set()
        connections: list[sqlite3.Connection] = []
        real = st._db.connect

        def traced(*, readonly: bool, **kw: Any) -> sqlite3.Connection:
            conn = real(readonly=readonly, **kw)
            if readonly:
                conn.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
                connections.append(conn)
            return conn

        st._db.connect = traced  # type: ignore[method-assign]
        async with st.snapshot(store_id, KeySelection()) as snap:
            snap.kept_rows = 16
            size = await _archive_size(snap)
            assert b"".join([c async for c in _archive_bytes(snap, 0, size)]) == want
            async for _ in snap.records():
                pass
        assert len(connections) == 2 and threads and threading.get_ident() not in threads


async def test_check_finds_a_kept_header_that_does_not_match(tmp_path: Path) -> None:
    from openkvs.storage.sqlite.check import check

    d = tmp_path / "d"
    async with SQLiteStorage(d, background=False) as st:
        store_id, recs = await fill(st, random.Random(9), 20)
    problems, summary = check(d)
    assert problems == [] and "20 kept ZIP headers" in summary, (problems, summary)
    conn = sqlite3.connect(d / "openkvs.sqlite3", isolation_level=None)
    conn.execute("UPDATE records SET zip_head = zeroblob(length(zip_head)) WHERE key = ?", (recs[3].key,))
    conn.close()
    problems, _ = check(d)
    assert len(problems) == 1 and recs[3].key in problems[0] and "kept ZIP header" in problems[0], problems
