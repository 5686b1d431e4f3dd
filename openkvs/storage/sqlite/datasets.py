"""Dataset items in SQLite (the interface and its guarantees: storage/datasets.py).

Items live in ``dataset_items``, several to a row (packed rows: storage/datasets.py, ITEMS_PER_ROW), clustered by
(store_id, idx) where ``idx`` is the row's last item: reading a batch from any offset, in either direction, is one
range scan of the primary key, its first and last rows trimmed. A push is one write transaction of the writer
thread, so pushes take turns and indexes stay dense. A snapshot is a read transaction on a connection of its own
(WAL keeps the pages it sees until it ends, whatever is pushed or deleted meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
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
    Piece,
    Push,
    add_field_stats,
    blocks_of,
    distinct,
    items_missing,
    merge_fields,
    packed_rows,
    range_batches,
    row_part,
)
from .clock import now_ms
from .connections import REMAP_BYTES, Database, remap, set_map, translate
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
# (version 11) how many items a row of dataset_items holds: ``idx`` is its last item's index, ``data`` their stored
# bytes joined by a newline (storage/datasets.py, ITEMS_PER_ROW). Rows written before hold one item each: the
# column's default, so the upgrade rewrites nothing.
PACKED_ROWS_COLUMN = "ALTER TABLE dataset_items ADD COLUMN n INTEGER NOT NULL DEFAULT 1"


def _to_info(row: Any) -> DatasetInfo:
    return DatasetInfo(row[0], row[1], row[2], json.loads(row[3]))


def _insert_items(conn: sqlite3.Connection, store_id: str, start: int, items: list[bytes]) -> int:
    """Items ``start, start + 1, ...`` of the dataset: ``items``, in order, in packed rows; returns their bytes."""
    rows = packed_rows(items)
    last = start - 1
    params = []
    for n, data in rows:
        last += n
        params.append((store_id, last, n, data))
    conn.executemany(_INSERT, params)
    return sum(len(data) for _, data in rows) - (len(items) - len(rows))  # (less the newlines between items)


_INSERT = "INSERT INTO dataset_items(store_id, idx, n, data) VALUES (?, ?, ?, ?)"


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
    stored = _insert_items(conn, store_id, start, push.items)
    for block, lo, hi in blocks_of(start, n):
        old = conn.execute(
            "SELECT paths FROM dataset_paths WHERE store_id = ? AND block = ?", (store_id, block)
        ).fetchone()
        merged = merge(json.loads(old[0]) if old else [], distinct(push.paths[lo:hi]))
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
            info.bytes + stored,
            json.dumps(fields if fields is not None else info.fields, ensure_ascii=False),
            field_stats,
        ),
    )
    conn.execute("UPDATE stores SET modified_at = ? WHERE id = ?", (now_ms(), store_id))
    return start


# A range's rows, [lo, hi) (parameters: store id, lo, hi - 1): those from the first that ends at or after lo to the
# one holding hi - 1 (the first that ends at or after it, found by the subquery, evaluated once), ascending or
# descending. Both ends are bounds of the primary key: the scan stops at them without reading a row past them (a row
# stepped onto is read whole, its bytes included). A row holds the items ``idx - n + 1 .. idx`` (see
# storage/datasets.py, ITEMS_PER_ROW).
_RANGE = (
    "SELECT idx, n, data FROM dataset_items WHERE store_id = ?1 AND idx >= ?2 AND idx <= "
    "(SELECT idx FROM dataset_items WHERE store_id = ?1 AND idx >= ?3 ORDER BY idx LIMIT 1) ORDER BY idx"
)
_ROWS, _ROWS_DESC = _RANGE, _RANGE + " DESC"


def _parts(
    conn: sqlite3.Connection, store_id: str, lo: int, hi: int, desc: bool
) -> Generator[tuple[int, bytes], None, None]:
    """The items of ``[lo, hi)`` row by row, in order (``desc``: from ``hi - 1`` down, each row's items reversed
    too): (how many, their bytes joined by b"\\n"). Ends early where the table holds fewer items than that (a
    damaged table; the callers raise ``items_missing``), at a row missing in the middle too: the items given are
    always the first ones of the range (``desc``: the last ones), so a caller that goes on from where they end
    (``_mapped_parts``) never reads any twice. Close it to end its statement."""
    cur = conn.execute(_ROWS_DESC if desc else _ROWS, (store_id, lo, hi - 1))
    try:
        for last, n, data in cur:
            first = last - n + 1
            if first >= hi or last < lo:
                return
            a, b = max(first, lo), min(last + 1, hi)
            if (b != hi) if desc else (a != lo):
                return  # (a row missing before this one: a damaged table)
            if desc:
                hi = a
            else:
                lo = b
            part = row_part(data, first, last, a, b) if n > 1 else data
            if desc and b - a > 1:
                part = b"\n".join(reversed(part.split(b"\n")))
            yield b - a, part
    finally:
        cur.close()


def _mapped_parts(
    conn: sqlite3.Connection, store_id: str, lo: int, hi: int, desc: bool
) -> Generator[tuple[int, bytes], None, None]:
    """What ``_parts`` gives, read through a map of the database file (connections.py, REMAP_BYTES) in statements
    of about REMAP_BYTES each, the map made again between them and dropped at the end. A packed row (up to
    ROW_BYTES) spans overflow pages, each otherwise a pread of its own: the storage read of the bench's 1M-item jsonl
    export (rows of ~57 KB) took 0.44-0.56 s of CPU unmapped, 0.22-0.35 s mapped."""
    set_map(conn, True)
    try:
        while lo < hi:
            read = 0
            with contextlib.closing(_parts(conn, store_id, lo, hi, desc)) as parts:
                for count, part in parts:
                    if desc:
                        hi -= count
                    else:
                        lo += count
                    read += len(part)
                    yield count, part
                    if read >= REMAP_BYTES:
                        break
                else:  # (the statement ran out)
                    if lo < hi:
                        raise items_missing(store_id, lo, hi)
                    return
            remap(conn)  # (the statement is closed: no page of the map in use)
    finally:
        set_map(conn, False)


def _read_items(conn: sqlite3.Connection, store_id: str, lo: int, hi: int, desc: bool, batch: int) -> list[bytes]:
    """The items of ``[lo, hi)`` from its start (``desc``: from its end), at most ``batch`` and about
    BATCH_BYTES."""
    out: list[bytes] = []
    size = 0
    with contextlib.closing(_parts(conn, store_id, lo, hi, desc)) as parts:
        for count, part in parts:
            room = batch - len(out)
            out += part.split(b"\n", room)[:room] if count > 1 else [part]
            size += len(part)
            if len(out) >= batch or size >= BATCH_BYTES:
                break
    return out


def _pieces(
    rows: Iterator[tuple[int, bytes]], sep: bytes, batch: int, size: int, buffers: bool = False
) -> Generator[Piece, None, None]:
    """``rows`` (what _parts gives) as pieces of the items joined by ``sep``, each as many as fit in ``batch`` items
    and ``size`` bytes (a single item past that alone): every piece but the last is full, its next item would pass
    one of the two. Whole rows go through untouched with b"\\n"; a row is cut between items where a piece ends, by
    byte offsets into it (its items found with find/rfind/count, views of it joined: one copy of the bytes, where
    splitting the row into items and joining them again was a third of a jsonl export's storage read). ``buffers``
    (with b"\\n"): a piece of several rows is the list of them and the b"\\n" between, not joined (Piece)."""
    pending: list[bytes | memoryview] = []  # the piece so far: rows (or runs of a row's items), each joined by b"\n"
    count = length = 0  # its items and its length once joined by ``sep``
    grow = len(sep) - 1  # what each b"\n" between items becomes

    def emit() -> Piece:
        nonlocal pending, count, length
        if buffers and sep == b"\n" and len(pending) > 1:
            out: list[bytes | memoryview] = [sep] * (2 * len(pending) - 1)
            out[::2] = pending
            pending, count, length = [], 0, 0
            return out
        data = b"\n".join(pending) if len(pending) > 1 else bytes(pending[0])  # (bytes(a bytes object): itself)
        pending, count, length = [], 0, 0
        return data if sep == b"\n" else data.replace(b"\n", sep)

    for n, part in rows:
        at = 0  # where the row's first item not taken yet starts
        while n:
            take = min(n, batch - count)
            end = len(part) if take == n else _item_end(part, at, take)
            extra = end - at + (take - 1) * grow + (len(sep) if pending else 0)
            if length + extra > size:  # as many of these items as fit (an empty piece takes the first whatever size)
                take, end = _fit(part, at, end, sep, size - length - (len(sep) if pending else 0), not pending)
                if not take:
                    yield emit()
                    continue
                extra = end - at + (take - 1) * grow + (len(sep) if pending else 0)
            pending.append(part if at == 0 and end == len(part) else memoryview(part)[at:end])
            count, length = count + take, length + extra
            at, n = end + 1, n - take
            if n or count == batch or length >= size:
                yield emit()
    if pending:
        yield emit()


def _item_end(part: bytes, at: int, k: int) -> int:
    """Where the ``k``-th item of ``part`` from offset ``at`` ends (its b"\\n", or the end of ``part``)."""
    end = at - 1
    for _ in range(k):
        end = part.find(b"\n", end + 1)
    return len(part) if end < 0 else end


def _fit(part: bytes, at: int, end: int, sep: bytes, room: int, first: bool) -> tuple[int, int]:
    """(how many, where they end) of the items of ``part[at:end]`` that fit in ``room`` bytes once joined by
    ``sep``: at least one when ``first`` (a piece's first item goes whatever its size)."""
    if sep == b"\n":  # the items that fit end at the last b"\n" within room
        cut = part.rfind(b"\n", at, at + room + 1) if room >= 0 else -1
        if cut >= 0:
            return part.count(b"\n", at, cut) + 1, cut
    else:
        used, fit, pos = -len(sep), 0, at
        while pos < end:
            nl = part.find(b"\n", pos, end)
            stop = end if nl < 0 else nl
            if used + len(sep) + stop - pos > room:
                break
            used, fit, pos = used + len(sep) + stop - pos, fit + 1, stop + 1
        if fit:
            return fit, pos - 1
    if not first:
        return 0, at
    nl = part.find(b"\n", at, end)
    return 1, end if nl < 0 else nl


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
        conn, sid = self._conn, self._store_id

        async def fetch(lo: int, hi: int) -> list[bytes]:
            return await self._run(_read_items, conn, sid, lo, hi, desc, batch)

        async for rows in range_batches(fetch, start, stop, desc, sid):
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
        buffers: bool = False,
    ) -> AsyncIterator[Piece]:
        # One statement over the whole range, its rows joined into pieces in Python: a row of ITEMS_PER_ROW items
        # is one object, passed through whole (jsonl: b"\n" between items as stored) or with its newlines replaced
        # by ``sep`` (one pass over its bytes), and cut between items only at a piece's end.
        start = max(start, 0)
        stop = min(stop, self.info.item_count)
        if start >= stop:
            return
        conn, sid = self._conn, self._store_id
        size = max(1, min(size, BATCH_BYTES))

        # One worker thread reads the pieces one after the other and hands each to the event loop, reading on while
        # they are used: at most two pieces read that the caller has not taken yet (``ahead``; with one, the thread
        # waited after each piece for the event loop to take it: a wake-up there and one back, 0.2-1 s of waits
        # per 1M-item export here). A trip to a thread per piece instead (two wake-ups, the reads waiting for both)
        # left the reads idle between pieces: ~475 trips in a 1M-item export, 0.2-0.5 s of its ~1 s on this shared
        # VM. The thread is the export's for its whole life (exports and ZIPs at once: at most ``max_downloads``);
        # while it waits for room it looks every second whether the caller gave up or the event loop is gone.
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Piece | None] = asyncio.Queue()  # None: the end, or a failure (``work`` raises it)
        ahead = threading.Semaphore(2)
        given_up = threading.Event()  # the caller stopped reading

        def hand(data: Piece | None) -> None:
            with contextlib.suppress(RuntimeError):  # (the event loop is gone: nobody to hand it to)
                loop.call_soon_threadsafe(pieces.put_nowait, data)

        def produce() -> None:
            rows = _mapped_parts(conn, sid, start, stop, desc)
            read = _pieces(rows, sep, batch, size, buffers)
            try:
                while True:
                    while not ahead.acquire(timeout=1.0):
                        if given_up.is_set() or loop.is_closed():
                            return
                    if given_up.is_set():
                        return
                    data = next(read, None)
                    if data is None:
                        return  # (all read: _mapped_parts raises where rows are missing)
                    hand(data)
            finally:
                read.close()
                rows.close()  # (the statement ends here, on the thread that stepped it)
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

    async def info(self, store_ids: Sequence[str], *, fields: bool = True) -> dict[str, DatasetInfo]:
        ids = list(dict.fromkeys(store_ids))
        cols = "store_id, item_count, clean_count, bytes, " + ("fields" if fields else "'[]'")

        def q(conn: sqlite3.Connection) -> dict[str, DatasetInfo]:
            found = {sid: DatasetInfo() for sid in ids}
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                rows = conn.execute(
                    f"SELECT {cols} FROM dataset_counts WHERE store_id IN ({','.join('?' * len(part))})",
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
                conn = await anyio.to_thread.run_sync(self._db.snapshot_connection)
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
                    await run_to_end(self._db.end_snapshot, conn, limiter=limiter)
