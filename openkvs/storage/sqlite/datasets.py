"""Dataset items in SQLite (the interface and its guarantees: storage/datasets.py).

Items live in ``dataset_items``, clustered by (store_id, idx): reading a batch from any offset, in either direction,
is one range scan of the primary key. A push is one write transaction of the writer thread, so pushes take turns
and indexes stay dense. A snapshot is a read transaction on a connection of its own (WAL keeps the pages it sees
until it ends, whatever is pushed or deleted meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..base import NotFound
from ..datasets import (
    BATCH_BYTES,
    BLOCK,
    DatasetInfo,
    DatasetStorage,
    ItemSnapshot,
    MergePaths,
    Push,
    add_field_stats,
    blocks_of,
    merge_fields,
    range_batches,
)
from .clock import now_ms
from .connections import Database, translate
from .onthread import run_to_end

T = TypeVar("T")

# The tables of datasets: one constant so the migration list of tables.py names it once. No ';' inside comments
# here (the statements are split on it).
DATASET_TABLES = """
CREATE TABLE IF NOT EXISTS dataset_items (
    store_id  TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (store_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset_counts (
    store_id     TEXT PRIMARY KEY REFERENCES stores(id) ON DELETE CASCADE,
    item_count   INTEGER NOT NULL,
    clean_count  INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    fields       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset_paths (
    store_id  TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    block     INTEGER NOT NULL,
    paths     TEXT NOT NULL,
    PRIMARY KEY (store_id, block)
) WITHOUT ROWID;
"""
# (a migration of its own: version 5 databases have the tables above without it)
FIELD_STATS_COLUMN = "ALTER TABLE dataset_counts ADD COLUMN field_stats TEXT"


def _to_info(row: Any) -> DatasetInfo:
    return DatasetInfo(row[0], row[1], row[2], json.loads(row[3]))


# A push's rows go in by multi-row INSERTs of _ROWS_MAX rows (the rest in ones of 256, 128, ... 1 rows: a few
# statement texts, each prepared once per connection). A push of 1,000 rows stores with about a quarter less CPU
# than one row per step of executemany (bench/push_cpu.py). The store id is bound once per statement and each
# row's index is the first one's plus a constant.
_ROWS_MAX = 512


def _insert_sql(rows: int) -> str:
    values = ", ".join(f"(?1, ?2 + {k}, ?{k + 3})" for k in range(rows))
    return f"INSERT INTO dataset_items(store_id, idx, data) VALUES {values}"


_INSERT_SQL = {1 << b: _insert_sql(1 << b) for b in range(_ROWS_MAX.bit_length())}


def _insert_items(conn: sqlite3.Connection, store_id: str, start: int, items: list[bytes]) -> None:
    """Rows ``start, start + 1, ...`` of the dataset: ``items``, in order."""
    i, n = 0, len(items)
    size = _ROWS_MAX
    while i < n:
        while size > n - i:
            size >>= 1
        conn.execute(_INSERT_SQL[size], (store_id, start + i, *items[i : i + size]))
        i += size


def push_sync(conn: sqlite3.Connection, store_id: str, push: Push, merge: MergePaths) -> int:
    """In the writer's transaction: the items after the last one, the path index and the counters."""
    if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
        raise NotFound(f"dataset {store_id}")
    row = conn.execute(
        "SELECT item_count, clean_count, bytes, fields, field_stats FROM dataset_counts WHERE store_id = ?",
        (store_id,),
    ).fetchone()
    info = _to_info(row) if row is not None else DatasetInfo()
    start = info.item_count
    n = len(push.items)
    if n == 0:
        return start
    field_stats = row[4] if row is not None else None
    if push.field_stats is not None and (row is None or field_stats is not None):  # (else: none kept so far)
        field_stats = json.dumps(add_field_stats(json.loads(field_stats) if field_stats else None, push.field_stats))
    _insert_items(conn, store_id, start, push.items)
    for block, lo, hi in blocks_of(start, n):
        old = conn.execute(
            "SELECT paths FROM dataset_paths WHERE store_id = ? AND block = ?", (store_id, block)
        ).fetchone()
        merged = merge(json.loads(old[0]) if old else [], push.paths[lo:hi])
        conn.execute(
            "INSERT INTO dataset_paths(store_id, block, paths) VALUES (?, ?, ?) "
            "ON CONFLICT(store_id, block) DO UPDATE SET paths = excluded.paths",
            (store_id, block, json.dumps(merged, separators=(",", ":"), ensure_ascii=False)),
        )
    fields = merge_fields(info.fields, push.keys)
    conn.execute(
        "INSERT INTO dataset_counts(store_id, item_count, clean_count, bytes, fields, field_stats) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(store_id) DO UPDATE SET item_count = excluded.item_count, clean_count = excluded.clean_count, "
        "bytes = excluded.bytes, fields = excluded.fields, field_stats = excluded.field_stats",
        (
            store_id,
            start + n,
            info.clean_item_count + push.clean_count,
            info.bytes + sum(map(len, push.items)),
            json.dumps(fields if fields is not None else info.fields, ensure_ascii=False),
            field_stats,
        ),
    )
    conn.execute("UPDATE stores SET modified_at = ? WHERE id = ?", (now_ms(), store_id))
    return start


_RANGE = "FROM dataset_items WHERE store_id = ? AND idx >= ? AND idx < ? ORDER BY idx"
_ITEMS = f"SELECT data {_RANGE} LIMIT ?"
_ITEMS_DESC = f"SELECT data {_RANGE} DESC LIMIT ?"
# A piece ascending is a plain range of the primary key, [lo, lo + count) (indexes are dense): its rows reach the
# aggregate in the key's order (the table's only index, scanned forward), without a subquery's co-routine, which
# copied each row once more (18% fewer instructions per piece, 12% less CPU). Descending they come from a subquery
# with ORDER BY ... DESC LIMIT: run as a co-routine, not flattened, so in its order.
_JOINED = (
    "SELECT count(*), CAST(group_concat(data, ?) AS BLOB) FROM dataset_items "
    "WHERE store_id = ? AND idx >= ? AND idx < ?"
)
_JOINED_DESC = f"SELECT count(*), CAST(group_concat(data, ?) AS BLOB) FROM (SELECT data {_RANGE} DESC LIMIT ?)"


def _read_rows(conn: sqlite3.Connection, sql: str, args: tuple[str, int], lo: int, hi: int) -> list[bytes]:
    """Items of ``[lo, hi)`` by ``sql`` (_ITEMS or _ITEMS_DESC; args: store id, batch), up to BATCH_BYTES."""
    out, size = [], 0
    cur = conn.execute(sql, (args[0], lo, hi, args[1]))
    try:
        for (data,) in cur:
            out.append(data)
            size += len(data)
            if size >= BATCH_BYTES:
                break
    finally:
        cur.close()
    return out


class SQLiteItemSnapshot(ItemSnapshot):
    def __init__(self, conn: sqlite3.Connection, store_id: str, info: DatasetInfo) -> None:
        self._conn = conn
        self._store_id = store_id
        self.info = info
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_to_end(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def items(
        self, start: int, stop: int, *, desc: bool = False, batch: int = BLOCK
    ) -> AsyncIterator[list[bytes]]:
        start = max(start, 0)
        stop = min(stop, self.info.item_count)
        conn, sql = self._conn, _ITEMS_DESC if desc else _ITEMS
        args = (self._store_id, batch)

        async def fetch(lo: int, hi: int) -> list[bytes]:
            return await self._run(_read_rows, conn, sql, args, lo, hi)

        async for rows in range_batches(fetch, start, stop, desc):
            yield rows

    async def joined(
        self,
        start: int,
        stop: int,
        *,
        desc: bool = False,
        batch: int = BLOCK,
        sep: bytes = b"\n",
        size: int = BATCH_BYTES,
    ) -> AsyncIterator[bytes]:
        # SQLite joins a piece itself (group_concat over the ordered range: no object per item), in one statement:
        # the connection's length limit, lowered to the piece's budget for it, bounds the joined value (past it
        # SQLite stops growing it and fails the statement with "string or blob too big"; the piece is then read
        # again with half as many items, down to one item read as a row without the limit). The first count is
        # the budget over the dataset's mean item size; a piece under half the budget doubles the next count.
        start = max(start, 0)
        stop = min(stop, self.info.item_count)
        if start >= stop:
            return
        conn, row_sql = self._conn, _ITEMS_DESC if desc else _ITEMS
        join = _JOINED_DESC if desc else _JOINED
        sid = self._store_id
        size = max(1, min(size, BATCH_BYTES))
        info = self.info
        mean = info.bytes / info.item_count + len(sep) if info.item_count and info.bytes else 1.0
        count = max(1, min(batch, int(size * 0.9 / mean)))
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        # (twice the budget: SQLite's string grows by doubling only while the double stays under the limit, and
        # by each row's length after that, a realloc a row)
        room = min(limit, 2 * size)

        def piece(lo: int, hi: int) -> tuple[int, bytes]:
            """The next piece from the start (or, ``desc``, the end) of ``[lo, hi)``, and how many indexes it covers."""
            nonlocal count
            while count > 1:
                args = (sep, sid, lo, hi, count) if desc else (sep, sid, lo, min(hi, lo + count))
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, room)
                try:
                    n, data = conn.execute(join, args).fetchone()
                except sqlite3.DataError:  # (SQLITE_TOOBIG: the joined value would pass the budget)
                    count //= 2
                    continue
                finally:
                    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
                covered = n if desc or not n else min(hi, lo + count) - lo  # (a row missing: not read again)
                if n and len(data) > size:
                    count = max(1, count // 2)
                elif n and len(data) * 2 < size and n == count:
                    count = min(batch, count * 2)
                return covered, data or b""
            rows = _read_rows(conn, row_sql, (sid, 1), lo, hi)
            if rows and len(rows[0]) * 2 < size:
                count = 2
            return len(rows), rows[0] if rows else b""

        # One worker thread reads the pieces one after the other and hands each to the event loop, reading on while
        # they are used: at most two pieces read that the caller has not taken yet (``ahead``; with one, the thread
        # waited after each piece for the event loop to take it: a wake-up there and one back, 0.2-1 s of waits
        # per 1M-item export here). A trip to a thread per piece instead (two wake-ups, the reads waiting for both)
        # left the reads idle between pieces: ~475 trips in a 1M-item export, 0.2-0.5 s of its ~1 s on this shared
        # VM. The thread is the export's for its whole life (exports and ZIPs at once: at most ``max_downloads``);
        # while it waits for room it looks every second whether the caller gave up or the event loop is gone.
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the end, or a failure (``work`` raises it)
        ahead = threading.Semaphore(2)
        given_up = threading.Event()  # the caller stopped reading

        def hand(data: bytes | None) -> None:
            with contextlib.suppress(RuntimeError):  # (the event loop is gone: nobody to hand it to)
                loop.call_soon_threadsafe(pieces.put_nowait, data)

        def produce() -> None:
            lo, hi = start, stop
            try:
                while lo < hi:
                    while not ahead.acquire(timeout=1.0):
                        if given_up.is_set() or loop.is_closed():
                            return
                    if given_up.is_set():
                        return
                    n, data = piece(lo, hi)
                    if not n:
                        return  # (a damaged table: fewer rows than counted; the caller sees a short read)
                    if desc:
                        hi -= n
                    else:
                        lo += n
                    hand(data)
            finally:
                hand(None)

        work = asyncio.ensure_future(self._run(produce))
        try:
            while (data := await pieces.get()) is not None:
                ahead.release()
                yield data
            await work  # (raises what ended the reads early, if anything did)
        finally:
            given_up.set()
            ahead.release()  # (a thread waiting for room wakes, sees ``given_up`` and ends)
            if not work.done():
                with contextlib.suppress(BaseException):
                    await work

    async def block_paths(self, first: int, last: int) -> list[tuple[int, list[Any]]]:
        def fetch() -> list[tuple[int, list[Any]]]:
            rows = self._conn.execute(
                "SELECT min(block) AS b, paths FROM dataset_paths WHERE store_id = ? AND block >= ? AND block <= ? "
                "GROUP BY paths ORDER BY b",
                (self._store_id, first, last),
            )
            return [(b, json.loads(p)) for b, p in rows]

        return await self._run(fetch)


class SQLiteDatasets(DatasetStorage):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def push(self, store_id: str, push: Push, merge: MergePaths) -> int:
        return await self._db.write(push_sync, store_id, push, merge)

    async def info(self, store_ids: Sequence[str]) -> dict[str, DatasetInfo]:
        ids = list(dict.fromkeys(store_ids))

        def q(conn: sqlite3.Connection) -> dict[str, DatasetInfo]:
            found = {sid: DatasetInfo() for sid in ids}
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                rows = conn.execute(
                    "SELECT store_id, item_count, clean_count, bytes, fields FROM dataset_counts "
                    f"WHERE store_id IN ({','.join('?' * len(part))})",
                    part,
                )
                for r in rows:
                    found[r[0]] = _to_info(r[1:])
            return found

        if len(ids) == 1:
            return await self._db.point_read(q)
        return await self._db.read(q)

    async def field_stats(self, store_id: str) -> tuple[int, dict[str, Any] | None]:
        def q(conn: sqlite3.Connection) -> tuple[int, dict[str, Any] | None]:
            row = conn.execute(
                "SELECT item_count, field_stats FROM dataset_counts WHERE store_id = ?", (store_id,)
            ).fetchone()
            if row is None:
                return 0, None
            return row[0], json.loads(row[1]) if row[1] is not None else None

        # not a point read on the event loop: the statistics are one entry per property of the dataset's schema,
        # which may name 100,000 (megabytes to parse)
        return await self._db.read(q)

    async def keep_field_stats(self, store_id: str, count: int, stats: dict[str, Any]) -> bool:
        def w(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE dataset_counts SET field_stats = ? WHERE store_id = ? AND item_count = ? "
                "AND field_stats IS NULL",
                (json.dumps(stats), store_id, count),
            )
            return cur.rowcount == 1

        return await self._db.write(w)

    @asynccontextmanager
    async def snapshot(self, store_id: str) -> AsyncIterator[ItemSnapshot]:
        conn: sqlite3.Connection | None = None
        snap: SQLiteItemSnapshot | None = None

        def begin(c: sqlite3.Connection) -> DatasetInfo:
            c.execute("BEGIN")
            if c.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
                raise NotFound(f"dataset {store_id}")
            row = c.execute(
                "SELECT item_count, clean_count, bytes, fields FROM dataset_counts WHERE store_id = ?", (store_id,)
            ).fetchone()
            return _to_info(row) if row is not None else DatasetInfo()

        try:
            try:
                conn = await anyio.to_thread.run_sync(lambda: self._db.connect(readonly=True))
                info = await run_to_end(begin, conn)  # (cancelled, it still ends before the close below)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            snap = SQLiteItemSnapshot(conn, store_id, info)
            yield snap
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    # through the snapshot's limiter: a batch read still running (a readahead given up) ends first
                    limiter = snap._limiter if snap is not None else None
                    await run_to_end(conn.close, limiter=limiter)
