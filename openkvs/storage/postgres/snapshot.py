"""A PostgreSQL snapshot: one REPEATABLE READ READ ONLY transaction on a connection of its own that hands out a
store's records in key order, in batches that carry the bytes of one-chunk records, for the ZIP download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from openkvs.zipwriter import Columns

from ..base import KeySelection, NotFound, RecordMeta, Snapshot, SnapshotTotals, StorageUnavailable
from ..batch import RowBatch, ZipRow
from ..bucket.prefetch import Prefetch
from .chunks import READ_PIECE, PgBlob, blob_range, iter_chunks, settle
from .connections import CONNECTION_ERRORS, discard, unavailable
from .tables import IN_BUCKET, RECORD_COLS, selection_sql, to_record

# reads bytes [start, end) of a blob that is an object in the bucket (PostgresStorage._bucket_read)
BucketRead = Callable[[PgBlob, int, int], AsyncIterator[bytes]]

# Bytes of chunks per query when a snapshot streams a big record (the ZIP download). Measured (20 x 50 MiB through
# the storage API, 3 runs each, MiB/s): 1 MiB 428-472, 2 MiB 448-549, 4 MiB 608-625, 8 MiB 634-720. With the
# prefetch two queries' rows are held at once; 4 MiB keeps that near a batch of small records (PREFETCH_BYTES).
SNAPSHOT_QUERY_BYTES = 4 * 1024 * 1024
PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of one-chunk records
BIG = 0xFFFFFFFF


class PgSnapshot(Snapshot):
    """One REPEATABLE READ READ ONLY transaction on a dedicated connection (see ``open_snapshot``)."""

    def __init__(
        self, conn: asyncpg.Connection, store_id: str, selection: KeySelection, bucket_read: BucketRead | None = None
    ) -> None:
        self._conn = conn
        self._bucket_read = bucket_read
        self._prefetch = Prefetch(bucket_read) if bucket_read is not None else None
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._closed = False  # set (under the lock) when the transaction ends: a late prefetch must not run
        self._store_id = store_id
        self._selection = selection
        self.generation = 0
        self.totals = SnapshotTotals(0, 0, 0, 0)

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("snapshot closed")
            try:
                return await self._conn.fetch(sql, *args)
            except CONNECTION_ERRORS as exc:
                raise unavailable(exc) from exc

    async def _close(self) -> None:
        """Wait for a query in flight (a prefetch nobody awaits any more) and refuse later ones."""
        async with self._lock:
            self._closed = True

    async def _load(self) -> None:
        rows = await self._fetch("SELECT generation FROM stores WHERE id = $1", (self._store_id,))
        if not rows:
            raise NotFound(f"store {self._store_id} not found")
        self.generation = rows[0]["generation"]
        args: list[Any] = [self._store_id]
        cond = selection_sql(self._selection, args)
        if cond is None:
            return
        rows = await self._fetch(
            f"""SELECT count(*) AS n, coalesce(sum(octet_length(key)), 0) AS kb,
                    coalesce(sum(decoded_size), 0) AS db, count(*) FILTER (WHERE decoded_size >= {BIG}) AS big
                FROM records WHERE store_id = $1 AND {cond}""",
            args,
        )
        r = rows[0]
        self.totals = SnapshotTotals(
            count=r["n"], key_bytes=int(r["kb"]), decoded_bytes=int(r["db"]), big_count=r["big"]
        )

    def _where(self, last: str | None) -> tuple[str, list[Any]] | None:
        """The WHERE conditions of a batch of the selection's records after the key ``last`` (None: from the
        first) and their parameters ($1 the store); None if the selection selects nothing."""
        args: list[Any] = [self._store_id]
        cond = selection_sql(self._selection, args)
        if cond is None:
            return None
        where = f"store_id = $1 AND {cond}"
        if last is not None:
            args.append(last)
            where += f" AND key > ${len(args)}"
        return where, args

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        if record.content_encoding is None and isinstance(blob, PgBlob) and blob.data is not None:
            return blob.data
        return None

    async def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        # Records of one chunk come with their bytes (read in the same query), so read_blob needs no query for
        # them: one round trip per batch instead of one per record. A batch stops after the record that brings
        # its inline bytes to PREFETCH_BYTES; bigger records are streamed by read_blob chunk by chunk. The next
        # batch is fetched while the caller works through this one (at most two batches are held).
        if self._where(None) is None:
            return

        def query(last: str | None) -> asyncio.Task[list[asyncpg.Record]]:
            found = self._where(last)
            assert found is not None  # checked above
            where, args = found
            args.append(batch)
            n_batch = len(args)
            args.append(PREFETCH_BYTES)
            # the window runs over the LIMITed rows only; the chunk is a per-row subquery (an index lookup each)
            sql = f"""WITH lim AS (
                    SELECT {RECORD_COLS}, (size > 0 AND size <= chunk_size) AS one
                    FROM records WHERE {where} ORDER BY key LIMIT ${n_batch}
                ), m AS (
                    SELECT lim.*, count(*) OVER () AS n, coalesce(sum(CASE WHEN one THEN size ELSE 0 END)
                        OVER (ORDER BY key ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                    FROM lim
                )
                SELECT m.*, CASE WHEN m.one THEN
                    (SELECT c.data FROM blob_chunks c WHERE c.blob_id = m.blob_id AND c.seq = 0)
                    WHEN m.size = 0 THEN ''::bytea END AS data,
                    floor(extract(epoch FROM m.modified_at))::bigint AS sec
                FROM m WHERE m.before < ${len(args)} ORDER BY m.key"""
            return asyncio.ensure_future(self._fetch(sql, args))

        pending: asyncio.Task[list[asyncpg.Record]] | None = query(after)
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if not (len(rows) == rows[0]["n"] < batch):  # more may follow
                    pending = query(rows[-1]["key"])
                cols = list(zip(*rows, strict=True))
                keys, encodings, sizes, data = cols[0], cols[2], cols[4], cols[12]
                whole = encodings.count(None) == len(rows) and None not in data
                if not whole:
                    for r in rows:
                        if r["one"] and r["data"] is None:
                            raise NotFound(f"blob {r['blob_id']} is gone")
                # the ZIP writer lays the batch out from these; records are made only if someone iterates it
                columns = Columns(list(map(str.encode, keys)), sizes, cols[5], cols[13], data if whole else None)
                found = RowBatch(rows, _record, columns, keys[-1])
                in_bucket = IN_BUCKET in cols[8]  # chunk_size
                del rows, cols, data
                if self._prefetch is not None and in_bucket:  # (making the batch's records for this)
                    self._prefetch.plan(
                        [(m.blob.blob_id, m.blob, m.size) for m in found
                         if m.blob.chunk_size == IN_BUCKET and m.blob.data is None]
                    )
                yield found
        finally:
            await settle(pending)

    async def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[ZipRow]]:
        """The same records as ``records``, without their bytes (the central directory needs none), the next
        batch fetched while this one is used."""
        if self._where(None) is None:
            return

        def query(last: str | None) -> asyncio.Task[list[asyncpg.Record]]:
            found = self._where(last)
            assert found is not None  # checked above
            where, args = found
            args.append(batch)
            sql = f"""SELECT key, decoded_size, crc32, modified_at, floor(extract(epoch FROM modified_at))::bigint
                FROM records WHERE {where} ORDER BY key LIMIT ${len(args)}"""
            return asyncio.ensure_future(self._fetch(sql, args))

        pending: asyncio.Task[list[asyncpg.Record]] | None = query(after)
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if len(rows) == batch:
                    pending = query(rows[-1][0])
                keys, sizes, crcs, _, seconds = zip(*rows, strict=True)
                columns = Columns(list(map(str.encode, keys)), sizes, crcs, seconds, None)
                yield RowBatch(rows, _zip_row, columns, keys[-1])
        finally:
            await settle(pending)

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob, start, end = blob_range(record, start, end)
        if blob.chunk_size == IN_BUCKET and blob.data is None and self._bucket_read is not None:
            whole = await self._prefetch.take(blob.blob_id) if self._prefetch is not None else None
            if whole is not None:
                for i in range(start, end, READ_PIECE):
                    yield whole[i : min(i + READ_PIECE, end)]
                return
            async for piece in self._bucket_read(blob, start, end):
                yield piece
            return
        async for piece in iter_chunks(self._fetch, blob, start, end, SNAPSHOT_QUERY_BYTES):
            yield piece


def _record(row: asyncpg.Record) -> RecordMeta:
    return to_record(row, row["data"])


def _zip_row(row: asyncpg.Record) -> ZipRow:
    return ZipRow(row[0], row[1], row[2], row[3])


@asynccontextmanager
async def open_snapshot(
    pool: asyncpg.Pool, store_id: str, selection: KeySelection, bucket_read: BucketRead | None = None
) -> AsyncIterator[PgSnapshot]:
    """A snapshot on a connection of ``pool`` (the snapshot pool), its transaction rolled back and the connection
    released (or discarded, after a connection failure) at the end."""
    try:
        conn = await pool.acquire()
    except CONNECTION_ERRORS as exc:
        raise unavailable(exc) from exc
    try:
        try:
            tr = conn.transaction(isolation="repeatable_read", readonly=True)
            await tr.start()
            # A batch's query looks costly to the planner (a subquery per record for its chunk), whose JIT then
            # compiles it anew for every batch: 174 ms of a 665 ms batch of 4,096 records, measured under load.
            await conn.execute("SET LOCAL jit = off")
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        snap = PgSnapshot(conn, store_id, selection, bucket_read)
        try:
            await snap._load()
            yield snap
        except (StorageUnavailable, *CONNECTION_ERRORS):  # type: ignore[misc]  # mypy can't read a * in except
            discard(conn)
            raise
        finally:
            with anyio.move_on_after(5, shield=True):
                try:
                    await snap._close()
                    if snap._prefetch is not None:
                        await snap._prefetch.close()
                    await tr.rollback()
                except Exception:
                    pass
    finally:
        with anyio.move_on_after(10, shield=True):
            try:
                await pool.release(conn)
            except Exception:
                discard(conn)
