"""A SQLite snapshot: one read transaction on a connection of its own, open for the snapshot's life, that hands
out a store's records in key order and in batches (inline bytes included) for the ZIP download."""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from openkvs.zipwriter import Columns

from ..base import KeySelection, NotFound, RecordMeta, Snapshot, SnapshotTotals, StorageDamaged
from ..batch import RowBatch, ZipRow
from .blobs import DataRow, inline_chunks, read_held, stored_at
from .connections import translate
from .tables import RECORD_COLS, from_ms, selection_sql

T = TypeVar("T")

PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of inline records
SNAPSHOT_MMAP_MIN_AVG = 4096  # a snapshot maps the database when its inline records average this size or more
SNAPSHOT_MMAP_BYTES = 1 << 30  # up to this much of the database file (SQLite caps it at its own limit)
SNAPSHOT_REMAP_BYTES = 48 * 1024 * 1024  # drop the map after reading about this much through it (see _remap)


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


def begin_snapshot(blob_dir: Path, conn: sqlite3.Connection, store_id: str, selection: KeySelection) -> SQLiteSnapshot:
    """In a worker thread, on the snapshot's own connection: begin its read transaction, count what it
    selects. ``blob_dir``: where the records' files are."""
    conn.execute("BEGIN")
    row = conn.execute("SELECT generation FROM stores WHERE id = ?", (store_id,)).fetchone()
    if row is None:
        raise NotFound(f"store {store_id}")
    cond, params = selection_sql(selection)
    count, key_bytes, decoded, big, inline_count, inline_bytes = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB))), 0), COALESCE(SUM(decoded_size), 0), "
        "COALESCE(SUM(decoded_size >= 4294967295), 0), "
        "COALESCE(SUM(path IS NULL), 0), COALESCE(SUM(CASE WHEN path IS NULL THEN size END), 0) "
        f"FROM records WHERE store_id = ? AND {cond}",
        [store_id, *params],
    ).fetchone()
    mapped = bool(inline_count) and inline_bytes >= SNAPSHOT_MMAP_MIN_AVG * inline_count
    if mapped:
        # Records this big live in chains of overflow pages, which SQLite otherwise reads one pread (and
        # one copy into its page cache) per page: mapped, the same 2,000 x 64 KiB read 3.4x faster. Only
        # snapshots of such records map, on this connection of their own (see also _remap).
        conn.execute(f"PRAGMA mmap_size = {SNAPSHOT_MMAP_BYTES}")
    return SQLiteSnapshot(
        blob_dir, conn, store_id, cond, params, row[0], SnapshotTotals(count, key_bytes, decoded, big), mapped
    )


class SQLiteSnapshot(Snapshot):
    """One read transaction on a dedicated connection, open for the snapshot's life."""

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
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection

    def _remap(self) -> None:
        """Drop the mapping after a batch and map again: every page the batch touched stays resident while
        mapped, and counts in the process's RSS (a 125 MiB archive of 64 KiB records: +133 MiB; with this,
        +10 MiB, at the same speed). Between statements no page of the map is in use, and the read
        transaction, so the snapshot, stays as it is."""
        self._conn.execute("PRAGMA mmap_size = 0")
        self._conn.execute(f"PRAGMA mmap_size = {SNAPSHOT_MMAP_BYTES}")
        self._mapped_bytes = 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def _run_here(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` on the event loop's thread, for statements that only read rows already close at hand (metadata,
        small inline records): handing them to a worker thread costs more than the statement, since SQLite
        releases and takes back the GIL for every row and each of those is a thread switch while the event loop
        wants the GIL too (measured: a fifth of an archive's instructions went to that)."""
        async with self._limiter:
            try:
                return fn(*args)
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

    async def _batches(self, after: str | None, batch: int, with_data: bool) -> AsyncIterator[Sequence[Any]]:
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
                    if self._mapped_bytes >= SNAPSHOT_REMAP_BYTES:
                        self._remap()
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

        # Unless a batch may hold megabytes of record bytes (a mapped snapshot: records of 4 KiB or more on
        # average), it is read on the event loop's thread: at most ``batch`` rows of metadata and small records.
        run = self._run if with_data and self._mapped else self._run_here
        last = after
        while True:
            found, more = await run(fetch, last)
            if found is not None:
                yield found
            if not more or found is None:
                return
            last = found.last_key

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
