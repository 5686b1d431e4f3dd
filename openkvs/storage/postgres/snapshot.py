"""A PostgreSQL snapshot: one REPEATABLE READ READ ONLY transaction on a connection of its own that hands out a
store's records in key order, in batches that carry the bytes of one-chunk records, for the ZIP download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from openkvs.zipwriter import CENTRAL_LEAD, CENTRAL_MID, CentralBlock, Columns, LocalBlock, kept_headers_fit

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


# -- archives laid out by PostgreSQL ----------------------------------------------------------------------------
# A batch of records whose local headers and bytes (or central headers) PostgreSQL builds and concatenates in key
# order: one bytea per batch, no Python object per record (zipwriter.LocalBlock, CentralBlock). The headers are
# the ones zipwriter.local_header makes, computed in SQL from the columns (tests/storage/test_zip_kept.py).

KEPT_ROWS = 4096  # records per batch, at most


def _le16(x: str) -> str:
    """SQL: the int ``x`` (0 .. 65535) as 2 bytes little-endian."""
    return f"substring(int4send((({x} & 255) << 8) | ({x} >> 8)) from 3)"


def _le32(x: str) -> str:
    """SQL: the bigint ``x`` (0 .. 2^32 - 1) as 4 bytes little-endian."""
    return (
        f"substring(int8send((({x} & 255) << 24) | ((({x} >> 8) & 255) << 16) | ((({x} >> 16) & 255) << 8)"
        f" | ({x} >> 24)) from 5)"
    )


# From the batch's rows ``lim`` (key, decoded_size, crc32, modified_at and more): ``z``, the same with the name's
# bytes and the time stamps of zipwriter._stamps (DOS time and date of the UTC time clamped to 1980 .. 2107, the
# Unix time clamped to 1970 .. 2038), and ``ok``: the entry's headers are the plain ones (no ZIP64 size).
_STAMPED = """
    t AS (SELECT lim.*, convert_to(lim.key, 'UTF8') AS name, lim.modified_at AT TIME ZONE 'UTC' AS u FROM lim),
    y AS (SELECT t.*, date_part('year', t.u)::int AS year FROM t),
    z AS (SELECT y.*,
        CASE WHEN year < 1980 THEN 0 WHEN year > 2107 THEN 49021 ELSE (date_part('hour', u)::int << 11)
            | (date_part('minute', u)::int << 5) | (floor(date_part('second', u))::int >> 1) END AS dos_time,
        CASE WHEN year < 1980 THEN 33 WHEN year > 2107 THEN 65439
            ELSE ((year - 1980) << 9) | (date_part('month', u)::int << 5) | date_part('day', u)::int END AS dos_date,
        least(greatest(floor(date_part('epoch', modified_at)), 0), 2147483647)::bigint AS mtime,
        octet_length(name) <= 65535 AND decoded_size < 4294967295 AS ok
        FROM y)"""
# the 26 bytes after a local header's signature, which a central header repeats, and the bytes after them
_MID = (
    f"'\\x140000080000'::bytea || {_le16('dos_time')} || {_le16('dos_date')} || {_le32('crc32')}"
    f" || {_le32('decoded_size')} || {_le32('decoded_size')} || {_le16('octet_length(name)')} || '\\x0900'::bytea"
)
_TAIL = f"name || '\\x5554050001'::bytea || {_le32('mtime')}"
_LOCAL = f"'\\x504b0304'::bytea || {_MID} || {_TAIL}"
_CENTRAL = (
    f"'\\x{CENTRAL_LEAD.hex()}'::bytea || {_MID} || '\\x{CENTRAL_MID.hex()}'::bytea || {_le32('off')} || {_TAIL}"
)


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
        self.kept_rows = 0  # records per batch of kept_local/kept_central; 0: none (see _load)

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
        if kept_headers_fit(r["n"], int(r["kb"]), int(r["db"]), r["big"]):
            self.kept_rows = KEPT_ROWS  # batches laid out by PostgreSQL

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

    def kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock] | None:
        """All the records, as ``records()`` gives them, but a batch of identity-encoded records of at most one
        chunk each comes as a ``LocalBlock``: local headers and bytes made and joined by PostgreSQL. None if the
        archive would pass 4 GiB."""
        return self._kept_local() if self.kept_rows else None

    def kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock] | None:
        """All the records, as ``zip_entries()`` gives them, as ``CentralBlock``s made by PostgreSQL."""
        return self._kept_central() if self.kept_rows else None

    @staticmethod
    async def _first(batches: AsyncIterator[Sequence[Any]]) -> Sequence[Any] | None:
        """The first batch of ``batches``, which is then closed (a stretch no block could be made for)."""
        try:
            return await anext(batches, None)
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    async def _kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock]:
        n = self.kept_rows
        last: str | None = None
        while True:
            found = self._where(last)
            if found is None:
                return
            where, args = found
            args += [n, PREFETCH_BYTES]
            # a batch stops after the record that brings its bytes to PREFETCH_BYTES (the window runs over the
            # LIMITed rows only, before any chunk is read); OFFSET 0 keeps ``d`` a subquery of its own, so that
            # each chunk is read once although two aggregates use it
            sql = f"""WITH lim0 AS (
                    SELECT key, content_encoding, size, decoded_size, crc32, modified_at, blob_id, chunk_size
                    FROM records WHERE {where} ORDER BY key LIMIT ${len(args) - 1}
                ), lim AS (
                    SELECT lim0.*, count(*) OVER () AS listed, coalesce(sum(CASE WHEN size <= chunk_size THEN size
                        ELSE 0 END) OVER (ORDER BY key ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                    FROM lim0
                ), {_STAMPED},
                d AS (SELECT z.*, CASE WHEN ok AND content_encoding IS NULL AND size = decoded_size THEN
                    CASE WHEN size = 0 THEN ''::bytea WHEN size <= chunk_size THEN
                        (SELECT c.data FROM blob_chunks c WHERE c.blob_id = z.blob_id AND c.seq = 0) END END AS data
                    FROM z WHERE before < ${len(args)} OFFSET 0)
                SELECT string_agg({_LOCAL} || data, ''::bytea ORDER BY key) AS block, count(*) AS n,
                    count(*) FILTER (WHERE octet_length(data) = decoded_size) AS whole, max(key) AS last,
                    max(listed) AS listed
                FROM d"""
            (row,) = await self._fetch(sql, args)
            count = row["n"]
            if not count:
                return
            if row["whole"] == count:
                yield LocalBlock(count, row["block"])
                last = row["last"]
                if count == row["listed"] < n:  # the last batch
                    return
                continue
            del row
            batch = await self._first(self.records(last, n))  # a bigger or encoded record: this stretch as records
            if batch is None:
                return
            yield batch
            last = batch[-1].key

    async def _kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock]:
        n = self.kept_rows
        last: str | None = None
        base = 0  # the local offset of the batch's first entry
        while True:
            found = self._where(last)
            if found is None:
                return
            where, args = found
            args += [n, base]
            sql = f"""WITH lim AS (
                    SELECT key, decoded_size, crc32, modified_at FROM records WHERE {where}
                    ORDER BY key LIMIT ${len(args) - 1}
                ), {_STAMPED},
                o AS (SELECT z.*, 39 + octet_length(name) + decoded_size AS span,
                    (${len(args)}::bigint + coalesce(sum(39 + octet_length(name) + decoded_size) OVER (ORDER BY key
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))::bigint AS off FROM z)
                SELECT string_agg({_CENTRAL}, ''::bytea ORDER BY key) AS block, count(*) AS n,
                    count(*) FILTER (WHERE ok) AS whole, max(key) AS last, sum(span)::bigint AS span
                FROM o"""
            (row,) = await self._fetch(sql, args)
            count = row["n"]
            if not count:
                return
            if row["whole"] == count:
                yield CentralBlock(count, row["block"], base, base + row["span"])
                base += row["span"]
                last = row["last"]
                if count < n:
                    return
                continue
            del row
            batch = await self._first(self.zip_entries(last, n))
            if batch is None:
                return
            yield batch
            base += sum(39 + len(e.key.encode()) + e.decoded_size for e in batch)
            last = batch[-1].key

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
            # The batches laid out in SQL (kept_local) look costly to the planner, whose JIT then spent seconds
            # compiling each one (measured: 4.8 s of a 5.1 s query for 4,096 records).
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
