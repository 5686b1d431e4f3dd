"""A SQLite snapshot: one read transaction on a connection of its own, open for the snapshot's life, that hands
out a store's records in key order and in batches (inline bytes included) for the ZIP download; batches of kept
headers also on a second connection, in turns with the first (see ``SQLiteSnapshot._turns``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import sqlite3
import struct
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from openkvs.zipwriter import (
    CENTRAL_LEAD,
    CENTRAL_MID,
    CentralBlock,
    Columns,
    LocalBlock,
    central_from_heads,
    kept_headers_fit,
)

from ..base import KeySelection, NotFound, RecordMeta, Snapshot, SnapshotTotals, StorageDamaged
from ..batch import RowBatch, ZipRow
from ..totals import SMALL_RECORD_MAX
from .blobs import DataRow, inline_chunks, read_held, stored_at
from .connections import REMAP_BYTES, remap, set_map, translate
from .onthread import run_to_end
from .tables import RECORD_COLS, RECORD_TOTALS, STORE_TOTALS, from_ms, selection_sql

T = TypeVar("T")
S = TypeVar("S")  # where a batch starts (_turns)
B = TypeVar("B")  # a batch made whole (_turns)

PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of inline records
SNAPSHOT_MMAP_MIN_AVG = 4096  # a snapshot maps the database when its inline records average this size or more


# Archives from kept headers (records.zip_head, see tables.py): rows per batch, at most. A batch is one statement
# whose one result row is the batch's bytes, concatenated by SQLite: no Python object per record, and the GIL
# released once per batch (so the batch is read in a worker thread while the event loop sends the one before).
KEPT_ROWS = 4096
assert PREFETCH_BYTES // SMALL_RECORD_MAX >= KEPT_ROWS  # a store without large records: full batches (begin_snapshot)
assert SMALL_RECORD_MAX < SNAPSHOT_MMAP_MIN_AVG  # ... and no map
SECOND_CACHE_KIB = 2000  # the second connection's page cache (see _open_second): it scans, it reads nothing twice
_MID26 = operator.itemgetter(slice(4, 30))  # of a local header: what its central header repeats after CENTRAL_LEAD
_TAIL = operator.itemgetter(slice(30, None))  # of a local header: its name and time stamp, the central's last bytes
_U32 = struct.Struct("<I").pack

_DATA = operator.itemgetter(9)  # a records() row's inline bytes (None for a file)
_FAST_MS_MAX = 4_102_444_800_000  # 2100-01-01: below it a float of seconds still rounds to the exact millisecond


def _snapshot_dt(ms: int) -> datetime:
    """``from_ms(ms)``, about twice as fast. Exact below 2100: a float of seconds there is off by under 0.3 µs, so
    rounding to microseconds gives the millisecond back (also checked on a million random values)."""
    if 0 <= ms < _FAST_MS_MAX:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return from_ms(ms)


def _seconds(ms: Sequence[int]) -> list[int]:
    """Milliseconds to whole seconds (floored), for a column at once."""
    return list(map(operator.floordiv, ms, itertools.repeat(1000)))


def begin_snapshot(
    blob_dir: Path,
    conn: sqlite3.Connection,
    store_id: str,
    selection: KeySelection,
    connect: Callable[[], sqlite3.Connection] | None = None,
) -> SQLiteSnapshot:
    """In a worker thread, on the snapshot's own connection: begin its read transaction, and take the totals of
    what it selects from the store row (the whole store) or count them (a key selection). ``blob_dir``: where the
    records' files are; ``connect``: a new read-only connection, for a second one (see SQLiteSnapshot._turns)."""
    conn.execute("BEGIN")
    row = conn.execute(
        f"SELECT generation, {STORE_TOTALS}, totals_generation = generation FROM stores WHERE id = ?", (store_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"store {store_id}")
    cond, params = selection_sql(selection)
    where = f"FROM records WHERE store_id = ? AND {cond}"
    inline = (
        "COALESCE(SUM(path IS NULL), 0), COALESCE(SUM(CASE WHEN path IS NULL THEN size END), 0), "
        "COALESCE(MAX(CASE WHEN path IS NULL THEN size END), 0)"
    )
    if selection.whole and row[6]:  # the store's totals, kept with every write, read in this transaction (no scan)
        count, key_bytes, decoded, big, large = row[1:6]
        # the inline records' number, bytes and biggest size decide the map and the batch size: with no record
        # above SMALL_RECORD_MAX the answer is known (no map, full batches), else the records are counted
        inline_count, inline_bytes, inline_max = (
            conn.execute(f"SELECT {inline} {where}", [store_id, *params]).fetchone() if large else (0, 0, 0)
        )
    else:
        count, key_bytes, decoded, big, _, inline_count, inline_bytes, inline_max = conn.execute(
            f"SELECT {RECORD_TOTALS}, {inline} {where}", [store_id, *params]
        ).fetchone()
    mapped = bool(inline_count) and inline_bytes >= SNAPSHOT_MMAP_MIN_AVG * inline_count
    if mapped:
        # Records this big live in chains of overflow pages, which SQLite otherwise reads one pread (and
        # one copy into its page cache) per page: mapped, the same 2,000 x 64 KiB read 3.4x faster. Only
        # snapshots of such records map, on this connection of their own (see connections.py, REMAP_BYTES).
        set_map(conn, True)
    snap = SQLiteSnapshot(
        blob_dir, conn, store_id, cond, params, row[0], SnapshotTotals(count, key_bytes, decoded, big), mapped
    )
    snap.connect = connect
    if not mapped and kept_headers_fit(count, key_bytes, decoded, big):
        # batches of kept headers and inline bytes read whole, sized to hold about PREFETCH_BYTES at most
        snap.kept_rows = max(16, min(KEPT_ROWS, PREFETCH_BYTES // max(inline_max, 1)))
    return snap


class SQLiteSnapshot(Snapshot):
    """One read transaction on a dedicated connection, open for the snapshot's life; for an archive of kept headers also
    a second one, at the same store generation (``_turns``)."""

    def __init__(
        self,
        blob_dir: Path,
        conn: sqlite3.Connection,
        store_id: str,
        cond: str,
        params: list[Any],
        generation: int,
        totals: SnapshotTotals,
        mapped: bool = False,
    ) -> None:
        self._blob_dir = blob_dir
        self._mapped = mapped
        self._mapped_bytes = 0  # inline bytes read through the map since it was last dropped
        self._conn = conn
        self._store_id = store_id
        self._cond = cond
        self._params = params
        self.generation = generation
        self.totals = totals
        self.limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection
        self.kept_rows = 0  # rows per batch of kept_local/kept_central; 0: this snapshot has none (see begin)
        self.connect: Callable[[], sqlite3.Connection] | None = None  # a new read-only connection (_open_second)
        self._second: sqlite3.Connection | None = None  # the second connection, once open (see _turns)
        self._second_limiter = anyio.CapacityLimiter(1)
        self._second_tried = False
        # each batch's start key and local offset, from a whole pass of kept_local that gave only LocalBlocks:
        # kept_central reads the same batches on both connections
        self._plan: list[tuple[str | None, int]] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_to_end(fn, *args, limiter=self.limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        """Inline records come with their bytes (a batch stops early at PREFETCH_BYTES of them), which saves a
        round trip per record when an archive holds many small ones; ``held_bytes`` hands them out."""
        return self._batches(after, batch, with_data=True)

    def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[ZipRow]]:
        """The same records as ``records``, in the same order, as (key, decoded_size, crc32, modified_at) named
        tuples and nothing else: what an archive's central directory needs, without the bytes and cheaper per
        row than a RecordMeta. Not for ``read_blob``."""
        return self._batches(after, batch, with_data=False)

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        """The record's decoded bytes if its batch brought them along (identity-encoded inline records), else
        None. Synchronous and cheap: the ZIP writer copies these without a ``read_blob`` per record."""
        blob = record.blob
        return blob if type(blob) is bytes and record.content_encoding is None else None

    def kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock] | None:
        """All the records, as ``records()`` gives them, but a batch of inline, identity-encoded records whose
        header is kept (records.zip_head) comes as a ``LocalBlock``: their local headers and bytes in one piece,
        joined by SQLite. None if the snapshot can't (its archive would pass 4 GiB, or its records are big)."""
        return self._kept_local() if self.kept_rows else None

    def kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock] | None:
        """All the records, as ``zip_entries()`` gives them, but a batch whose headers are all kept comes as a
        ``CentralBlock``: its central headers made by SQLite. None when ``kept_local`` is."""
        return self._kept_central() if self.kept_rows else None

    # -- kept headers, read on two connections in turns --------------------------------------------------------
    #
    # A whole archive of small records is read by SQLite statements one after another while the event loop only
    # sends: their time is the download's. A second read-only connection takes every other batch, so that two
    # cores work. Its read transaction sees the records this one does if the store's generation is the same in
    # both: every write or delete of a record moves it in the same transaction (tables.STORE_CHANGED); what
    # moves none changes no byte of the archive (a record's bytes moved between inline, file and bucket, a header
    # filled in). The second connection gives only blocks made whole from kept headers: any other batch is read
    # on this connection, and the rest after it too.

    async def _open_second(self) -> bool:
        """Whether the second connection is open, its read transaction at this snapshot's store generation (it is
        opened at the first call, for a store of more than one batch)."""
        if self._second is not None:
            return True
        if self.connect is None or self._second_tried or self.totals.count <= self.kept_rows:
            return False
        self._second_tried = True
        connect = self.connect

        def open_second() -> None:
            conn = connect()
            try:
                conn.execute(f"PRAGMA cache_size = -{SECOND_CACHE_KIB}")
                conn.execute("BEGIN")
                row = conn.execute("SELECT generation FROM stores WHERE id = ?", (self._store_id,)).fetchone()
            except BaseException:
                conn.close()
                raise
            if row is None or row[0] != self.generation:  # written since this snapshot began: not the same
                conn.close()
                return
            self._second = conn  # (set in the thread: a cancelled caller still leaves it to close())

        await self._run_on(self._second_limiter, open_second)
        return self._second is not None

    async def close(self) -> None:
        """Close the connections, each once its running statement (if any) ends."""
        try:
            if self._second is not None:
                await run_to_end(self._second.close, limiter=self._second_limiter)
        finally:
            await run_to_end(self._conn.close, limiter=self.limiter)

    async def _turns(
        self,
        start: S,
        following: Callable[[sqlite3.Connection, S], S | None] | Sequence[S],
        work: Callable[[sqlite3.Connection, S, S | None], B | None],
    ) -> AsyncGenerator[tuple[S, B | None], None]:
        """(start, block) of each batch from ``start`` on, in order: batch i read by ``work(conn, its start, the
        next batch's start)`` on connection i % 2 (this one, the second), two at once. The next batch's start
        (None: no batch follows) is ``following(conn, start)``, a key-only scan run on the same connection
        before ``work``, or the next in ``following`` given as a list. Ends after the last batch, or after the
        first that ``work`` can't give whole (None): the caller goes on from its start its own way."""
        second = self._second
        assert second is not None
        conns = ((self._conn, self.limiter), (second, self._second_limiter))
        planned = iter(following) if isinstance(following, Sequence) else None
        if planned is not None:
            next(planned)  # (the first is ``start``)
        pending: deque[tuple[S, asyncio.Future[B | None]]] = deque()
        at: S | None = start  # (None may be a start too: after no key, the first batch)
        i = 0
        try:
            while True:
                while len(pending) < 2 and (at is not None or i == 0):
                    conn, limiter = conns[i % 2]
                    i += 1
                    this: S = at  # type: ignore[assignment]
                    if planned is not None:
                        at = next(planned, None)
                    else:
                        assert callable(following)
                        at = await self._run_on(limiter, following, conn, this)
                    pending.append((this, asyncio.ensure_future(self._run_on(limiter, work, conn, this, at))))
                if not pending:
                    return
                this, future = pending.popleft()
                block = await future
                yield this, block
                if block is None:
                    return
        finally:
            for _, future in pending:  # given up: each waits for its thread (run_to_end)
                future.cancel()
                with contextlib.suppress(BaseException):
                    await future

    async def _run_on(self, limiter: anyio.CapacityLimiter, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_to_end(fn, *args, limiter=limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _bounds(self, last: str | None, end: str | None, col: str = "key") -> tuple[str, list[Any]]:
        """WHERE of the store's selected records after ``last`` up to ``end`` (each None: unbounded), and its
        parameters."""
        where = f"store_id = ? AND {self._cond}" if col == "key" else f"r.store_id = ? AND {self._cond}"
        args = [self._store_id, *self._params]
        if last is not None:
            where += f" AND {col} > ?"
            args.append(last)
        if end is not None:
            where += f" AND {col} <= ?"
            args.append(end)
        return where, args

    def _batch_end(self, conn: sqlite3.Connection, last: str | None) -> str | None:
        """The last key of the batch of ``kept_rows`` after ``last`` (where the next one starts), by a key-only
        scan; None when fewer are left (the batch is the last)."""
        where, args = self._bounds(last, None, "r.key")
        row = conn.execute(
            f"SELECT r.key FROM records r WHERE {where} ORDER BY r.key LIMIT 1 OFFSET ?", [*args, self.kept_rows - 1]
        ).fetchone()
        return None if row is None else row[0]

    async def _kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock]:
        n = self.kept_rows
        full = self._fetcher(n, with_data=True)
        # A batch is the records after one key up to another (its last: _batch_end), one statement whose rows
        # SQLite visits in key order, the primary key's. group_concat(d, h) puts each row's header before its
        # bytes (a row's separator is its own h, written before its value from the second row on), so SQLite
        # makes no h || d value per row; the first row's header comes from a scalar subquery, and the last
        # row's too, to check that the batch ends with it. ``d`` is NULL where a record can't come this way:
        # then count(d) falls short and the stretch is read as records. (No ORDER BY, LIMIT or max(key) in the
        # aggregate's query: each cost a tenth to a third of it, measured in instructions.)
        sql = (
            "SELECT (SELECT r.zip_head FROM records r WHERE {w} ORDER BY r.key LIMIT 1),"
            " (SELECT r.zip_head FROM records r WHERE {w} ORDER BY r.key DESC LIMIT 1),"
            " CAST(group_concat(d, h) AS BLOB), count(*), count(d) FROM ("
            " SELECT r.zip_head AS h, CASE WHEN r.content_encoding IS NULL AND r.path IS NULL"
            " AND length(r.zip_head) = 39 + length(CAST(r.key AS BLOB))"
            " AND length(d.data) = r.decoded_size THEN d.data END AS d"
            " FROM records r LEFT JOIN record_data d ON d.id = r.data_id WHERE {w})"
        )

        def block(conn: sqlite3.Connection, last: str | None, end: str | None) -> tuple[LocalBlock | None, int]:
            # (the batch after ``last`` up to ``end`` whole, or None if it can't come so; its rows)
            where, args = self._bounds(last, end, "r.key")
            first, final, data, count, whole = conn.execute(sql.format(w=where), args * 3).fetchone()
            if not count or whole != count or first is None or final is None:
                return None, count
            out = first + data if data is not None else first
            size = int.from_bytes(final[22:26], "little")  # the last record's, from its header
            if out[len(out) - size - len(final) : len(out) - size] != final:  # (not in key order)
                return None, count
            return LocalBlock(count, out), count

        def fetch(last: str | None) -> tuple[Sequence[Any] | LocalBlock | None, str | None]:
            # (the batch, the key to go on after: None at the end)
            end = self._batch_end(self._conn, last)
            found, count = block(self._conn, last, end)
            if not count:
                return None, None
            if found is not None:
                return found, end
            records, more = full(last)  # a file, an encoded record, a header not kept: this stretch as records
            return records, (records.last_key if records is not None and more else None)

        def in_turn(conn: sqlite3.Connection, last: str | None, end: str | None) -> LocalBlock | None:
            found, count = block(conn, last, end)
            return found if count == n or end is None else None

        # each batch's start key and local offset, for kept_central, while every batch comes as a LocalBlock
        starts: list[tuple[str | None, int]] = []
        plan: list[tuple[str | None, int]] | None = starts
        offset = 0
        last: str | None = None
        if await self._open_second():
            async with contextlib.aclosing(self._turns(last, self._batch_end, in_turn)) as turns:
                async for start, found in turns:
                    last = start
                    if found is None:
                        break  # this batch and the rest on this connection
                    starts.append((start, offset))
                    offset += len(found.data)
                    yield found
                else:
                    self._plan = starts
                    return
        while True:
            start = last
            batch, last = await self._run(fetch, last)
            if batch is not None:
                if isinstance(batch, LocalBlock) and plan is not None:
                    plan.append((start, offset))
                    offset += len(batch.data)
                else:
                    plan = None
                yield batch
            if last is None:
                self._plan = plan
                return

    async def _kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock]:
        n = self.kept_rows
        full = self._fetcher(n, with_data=False)
        # Each central header is made from the kept local header and its offset (see zipwriter.CENTRAL_LEAD) by
        # map and join, without a Python statement per record: SQLite's window functions, which would make the
        # offsets in SQL, cost twice as much (measured: 3.4 us a record against 1.3).
        sql = (
            "SELECT zip_head, length(zip_head) + decoded_size, length(zip_head) - length(CAST(key AS BLOB)) "
            "FROM records WHERE {w} ORDER BY key"
        )
        # First try the batch's kept headers as one value, laid out by zipwriter.central_from_heads when they are
        # all of one length (names of one length: keys like k00000001), the batch's last key to check they came
        # in key order (as _kept_local's); after a batch that is not of one length, the rows.
        joined = (
            "SELECT CAST(group_concat(zip_head, '') AS BLOB), count(*), count(zip_head),"
            " (SELECT key FROM records WHERE {w} ORDER BY key DESC LIMIT 1) FROM records WHERE {w}"
        )
        uniform = True

        def central(
            conn: sqlite3.Connection, last: str | None, end: str | None, base: int
        ) -> tuple[CentralBlock | None, int]:
            # (the batch after ``last`` up to ``end``, its first local header at ``base``, made whole from its
            # kept headers or None if they are not all kept; its rows)
            nonlocal uniform
            where, args = self._bounds(last, end)
            if uniform:
                heads, count, kept, final = conn.execute(joined.format(w=where), args * 2).fetchone()
                if not count:
                    return None, 0
                block = central_from_heads(heads, count, base) if kept == count else None
                if block is not None and heads[len(heads) - len(heads) // count + 30 : -9] == final.encode():
                    return block, count
                if kept == count and block is None:  # kept, but not all of one length: the rows from now on
                    uniform = False
                del heads
            rows = conn.execute(sql.format(w=where), args).fetchall()
            if not rows:
                return None, 0
            heads, spans, fixed = zip(*rows, strict=True)
            del rows
            if fixed.count(39) != len(heads):  # a header not kept, or one with ZIP64 sizes (not 39 + name)
                return None, len(heads)
            offsets = list(itertools.accumulate(spans, initial=base))
            data = b"".join(itertools.chain.from_iterable(zip(
                itertools.repeat(CENTRAL_LEAD), map(_MID26, heads), itertools.repeat(CENTRAL_MID),
                map(_U32, offsets), map(_TAIL, heads),
            )))
            return CentralBlock(len(heads), data, base, offsets[-1]), len(heads)

        def fetch(last: str | None, base: int) -> tuple[Sequence[Any] | CentralBlock | None, str | None, int]:
            # (the batch, the key to go on after: None at the end, the local offset after the batch)
            end = self._batch_end(self._conn, last)
            block, count = central(self._conn, last, end, base)
            if not count:
                return None, None, base
            if block is not None:
                return block, end, block.local_end
            found, more = full(last)
            if found is None:
                return None, None, base
            cols = found.columns
            assert cols is not None
            span = 39 * len(cols.names) + sum(map(len, cols.names)) + sum(cols.sizes)
            return found, (found.last_key if more else None), base + span

        def in_turn(
            conn: sqlite3.Connection, at: tuple[str | None, int], then: tuple[str | None, int] | None
        ) -> CentralBlock | None:
            # the batch kept_local gave at ``at`` (its start key, its local offset) up to where the next one
            # starts (``then``), whole, if it ends at that one's offset
            block, count = central(conn, at[0], None if then is None else then[0], at[1])
            if block is None or then is not None and (count != n or block.local_end != then[1]):
                return None
            return block

        last: str | None = None
        base = 0  # the local offset of the batch's first entry
        plan = self._plan
        if plan is not None and len(plan) > 1 and await self._open_second():
            async with contextlib.aclosing(self._turns(plan[0], plan, in_turn)) as turns:
                async for at, found in turns:
                    if found is None:
                        last, base = at  # this batch and the rest on this connection
                        break
                    yield found
                else:
                    return
        while True:
            batch, last, base = await self._run(fetch, last, base)
            if batch is not None:
                yield batch
            if last is None:
                return

    async def _batches(self, after: str | None, batch: int, with_data: bool) -> AsyncIterator[Sequence[Any]]:
        fetch = self._fetcher(batch, with_data)
        last = after
        while True:
            found, more = await self._run(fetch, last)
            if found is not None:
                yield found
            if not more or found is None:
                return
            last = found.last_key

    def _fetcher(self, batch: int, with_data: bool) -> Callable[[str | None], tuple[RowBatch[Any] | None, bool]]:
        """A function that reads (in a worker thread) the batch of up to ``batch`` records after a key: records
        with their inline bytes (``with_data``), else ZipRows."""
        blob_dir = self._blob_dir
        # Blob handles in a snapshot's records: the bytes themselves (inline, fetched with the batch), BlobFile, or
        # DataRow (inline, not fetched). Only this snapshot's read_blob understands the first and the last.
        if with_data:
            sql = f"SELECT {RECORD_COLS}, d.data FROM records r LEFT JOIN record_data d ON d.id = r.data_id "
        else:
            sql = "SELECT key, decoded_size, crc32, modified_at FROM records r "
        sql += f"WHERE r.store_id = ? AND {self._cond}"
        base = [self._store_id, *self._params]
        dates: dict[int, datetime] = {}  # rows written together often share a timestamp

        def when(ms: int) -> datetime:
            dt = dates.get(ms)
            if dt is None:
                if len(dates) > 4096:
                    dates.clear()
                dt = dates[ms] = _snapshot_dt(ms)
            return dt

        def record(row: tuple[Any, ...]) -> RecordMeta:
            key, size, decoded, crc, ms, ctype, cenc, data_id, path, data = row
            if path is not None:
                blob: Any = stored_at(blob_dir, path, size)
            elif data is not None:
                blob = data
            else:
                blob = DataRow(data_id)
            return RecordMeta(key, ctype, cenc, size, decoded, crc, when(ms), blob)

        def zip_row(row: tuple[Any, ...]) -> ZipRow:
            return ZipRow(row[0], row[1], row[2], when(row[3]))

        def fetch(last: str | None) -> tuple[RowBatch[Any] | None, bool]:
            # Returns (batch, more may follow). No Python per row here: the rows stay tuples (made into records
            # only if iterated) and the ZIP writer's columns are cut from them whole.
            if last is None:
                cur = self._conn.execute(sql + " ORDER BY key LIMIT ?", [*base, batch])
            else:
                cur = self._conn.execute(sql + " AND key > ? ORDER BY key LIMIT ?", [*base, last, batch])
            held = 0
            capped = False
            try:
                if with_data:
                    rows: list[Any] = []
                    while part := cur.fetchmany(64):  # a batch stops at about PREFETCH_BYTES of inline bytes
                        rows += part
                        held += sum(map(len, filter(None, map(_DATA, part))))
                        if held >= PREFETCH_BYTES:
                            capped = True
                            break
                else:
                    rows = cur.fetchall()
            finally:
                cur.close()
                if self._mapped:
                    self._mapped_bytes += held
                    if self._mapped_bytes >= REMAP_BYTES:
                        remap(self._conn)
                        self._mapped_bytes = 0
            if not rows:
                return None, False
            cols = list(zip(*rows, strict=True))
            if with_data:
                keys, decoded, crcs, ms, encodings, data = cols[0], cols[2], cols[3], cols[4], cols[6], cols[9]
                # the bytes go in the columns only if every record's are here, as they are (identity-encoded)
                whole = encodings.count(None) == len(rows) and None not in data
                columns = Columns(list(map(str.encode, keys)), decoded, crcs, _seconds(ms), data if whole else None)
                return RowBatch(rows, record, columns, keys[-1]), capped or len(rows) == batch
            columns = Columns(list(map(str.encode, cols[0])), cols[1], cols[2], _seconds(cols[3]), None)
            return RowBatch(rows, zip_row, columns, cols[0][-1]), len(rows) == batch

        return fetch

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = record.blob
        if type(blob) is bytes:
            for chunk in inline_chunks(blob, start, end):
                yield chunk
        elif isinstance(blob, DataRow):

            def fetch() -> bytes:
                row = self._conn.execute("SELECT data FROM record_data WHERE id = ?", (blob.data_id,)).fetchone()
                if row is None:
                    raise StorageDamaged(f"the data of record {record.key!r} (record_data {blob.data_id}) is missing")
                return bytes(row[0])

            data = await self._run(fetch)
            for chunk in inline_chunks(data, start, end):
                yield chunk
        else:  # a file, or an Inline record from the storage's get_record
            async for chunk in read_held(record, start, end, "snapshot"):
                yield chunk
