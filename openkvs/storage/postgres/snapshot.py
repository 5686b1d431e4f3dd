"""A PostgreSQL snapshot: one REPEATABLE READ READ ONLY transaction on a connection of its own that hands out a
store's records in key order, in batches that carry the bytes of one-chunk records, for the ZIP download."""

from __future__ import annotations

import asyncio
import itertools
import operator
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import anyio
import asyncpg

from openkvs.zipwriter import (
    CENTRAL_LEAD,
    CENTRAL_MID,
    CentralBlock,
    Columns,
    LocalBlock,
    central_from_heads,
    kept_headers_fit,
)

from ..base import KeySelection, NotFound, RecordMeta, Snapshot, SnapshotTotals, StorageUnavailable
from ..batch import RowBatch, ZipRow
from ..bucket.prefetch import Prefetch
from ..totals import SMALL_RECORD_MAX
from .chunks import COPY_WINDOW_BYTES, READ_PIECE, PgBlob, blob_range, copy_chunks, iter_chunks, settle
from .connections import CONNECTION_ERRORS, discard, unavailable
from .copyformat import CopyValues, with_constants
from .tables import IN_BUCKET, RECORD_COLS, RECORD_TOTALS, STORE_TOTALS, selection_sql, to_record

# reads bytes [start, end) of a blob that is an object in the bucket (PostgresStorage._bucket_read)
BucketRead = Callable[[PgBlob, int, int], AsyncIterator[bytes]]

# Bytes of chunks per query when a snapshot streams a big record (the ZIP download). Measured (20 x 50 MiB through
# the storage API, 3 runs each, MiB/s): 1 MiB 428-472, 2 MiB 448-549, 4 MiB 608-625, 8 MiB 634-720. With the
# prefetch two queries' rows are held at once; 4 MiB keeps that near a batch of small records (PREFETCH_BYTES).
SNAPSHOT_QUERY_BYTES = 4 * 1024 * 1024
# The same for an identity-encoded record (the archive's bytes as stored), read by binary COPY (chunks.copy_chunks):
# the bytes stream without a round trip per query, so a window is only what a reader that stops early waits for.
SNAPSHOT_COPY_BYTES = COPY_WINDOW_BYTES
PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of one-chunk records

# Archives from kept headers (records.zip_head, zipheads.py): rows per batch, at most. A batch of small records is
# one statement: a row of the batch's headers and bytes joined by PostgreSQL (string_agg: no Python object per
# record), or for bigger records a binary COPY of a row per record (see KEPT_COPY_AVG).
KEPT_ROWS = 4096
assert PREFETCH_BYTES // SMALL_RECORD_MAX >= KEPT_ROWS  # a store without large records: full batches (_load)
_LOCAL_FIXED = 39  # a local header's bytes besides its name (no ZIP64 sizes): what a kept header's length shows
_MID26 = operator.itemgetter(slice(4, 30))  # of a local header: what its central header repeats after CENTRAL_LEAD
_TAIL = operator.itemgetter(slice(30, None))  # of a local header: its name and time stamp, the central's last bytes
_U32 = struct.Struct("<I").pack
_U16 = struct.Struct("<H").unpack_from
# Batches of records of this average size or more come by binary COPY (_copied_block), the rest joined by
# string_agg (_joined_block). Measured on 2,000 x 64 KiB (PostgreSQL backend CPU for the 125 MiB): 0.34 s for
# sending string_agg's 8 MiB values, 0.09 s for a COPY of the same bytes row by row; but each row costs the
# parser a Python step, which string_agg's one value per batch does not (a million records of 100 B).
KEPT_COPY_AVG = 1024

T = TypeVar("T")


async def _to_the_end(query: Awaitable[T]) -> T:
    """Await a query on the snapshot's connection in a task of its own, out of reach of the caller's cancellation,
    which is raised once the query has ended. asyncpg answers a cancelled query by asking PostgreSQL to cancel it,
    which aborts the snapshot's transaction: every later read of the snapshot would then fail ("current
    transaction is aborted"). A reader that leaves early is cancelled in the middle of a prefetch (``readahead``
    does that when a Range ends), and whoever holds the snapshot may read on (several ranges of one snapshot)."""
    task = asyncio.ensure_future(query)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await settle(task)
        raise


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
        self.kept_rows = 0  # rows per batch of kept_local/kept_central; 0: this snapshot has none (see _load)
        self.kept_copy = False  # kept_local's batches by binary COPY (see KEPT_COPY_AVG)

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        return await _to_the_end(self._fetch_now(sql, args))

    async def _fetch_now(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("snapshot closed")
            try:
                return await self._conn.fetch(sql, *args)
            except CONNECTION_ERRORS as exc:
                raise unavailable(exc) from exc

    async def _copy(self, sql: str, sink: Callable[[bytearray], Awaitable[None]]) -> None:
        """``COPY (sql) TO STDOUT (FORMAT binary)``, its data handed to ``sink`` as it comes (copy_chunks)."""
        await _to_the_end(self._copy_now(sql, sink))

    async def _copy_now(self, sql: str, sink: Callable[[bytearray], Awaitable[None]]) -> None:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("snapshot closed")
            try:
                await self._conn.copy_from_query(sql, output=sink, format="binary")
            except CONNECTION_ERRORS as exc:
                raise unavailable(exc) from exc

    async def _close(self) -> None:
        """Wait for a query in flight (a prefetch nobody awaits any more) and refuse later ones."""
        async with self._lock:
            self._closed = True

    async def _load(self) -> None:
        rows = await self._fetch(
            f"SELECT generation, {STORE_TOTALS}, totals_generation = generation FROM stores WHERE id = $1",
            (self._store_id,),
        )
        if not rows:
            raise NotFound(f"store {self._store_id} not found")
        self.generation = rows[0]["generation"]
        args: list[Any] = [self._store_id]
        cond = selection_sql(self._selection, args)
        if cond is None:
            return
        one_max = "coalesce(max(size) FILTER (WHERE size <= chunk_size), 0)"  # the biggest record of one chunk
        where = f"FROM records WHERE store_id = $1 AND {cond}"
        if self._selection.whole and rows[0][6]:  # the store's totals, kept with every write (no scan)
            n, kb, db, big, large = tuple(rows[0])[1:6]
            # with no record above SMALL_RECORD_MAX, batches are full ones (KEPT_ROWS): else the records are read
            biggest = (await self._fetch(f"SELECT {one_max} {where}", args))[0][0] if large else 0
        else:
            counted = await self._fetch(f"SELECT {RECORD_TOTALS}, {one_max} {where}", args)
            n, kb, db, big, _, biggest = tuple(counted[0])
        self.totals = t = SnapshotTotals(count=n, key_bytes=kb, decoded_bytes=db, big_count=big)
        if t.count and kept_headers_fit(t.count, t.key_bytes, t.decoded_bytes, t.big_count):
            # batches of kept headers and one-chunk bytes, sized to hold about PREFETCH_BYTES at most
            self.kept_rows = max(16, min(KEPT_ROWS, PREFETCH_BYTES // max(biggest, 1)))
            self.kept_copy = t.decoded_bytes >= KEPT_COPY_AVG * t.count

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

    def _records_query(self, last: str | None, batch: int) -> tuple[str, list[Any]]:
        """A batch of ``records()`` after the key ``last``: the SQL and its parameters."""
        found = self._where(last)
        assert found is not None  # (callers checked)
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
        return sql, args

    @staticmethod
    def _records_batch(rows: list[asyncpg.Record]) -> tuple[RowBatch[RecordMeta], bool]:
        """``records()``'s batch of the rows of a _records_query, and whether a record of it is in the bucket."""
        cols = list(zip(*rows, strict=True))
        keys, encodings, sizes, data = cols[0], cols[2], cols[4], cols[12]
        whole = encodings.count(None) == len(rows) and None not in data
        if not whole:
            for r in rows:
                if r["one"] and r["data"] is None:
                    raise NotFound(f"blob {r['blob_id']} is gone")
        # the ZIP writer lays the batch out from these; records are made only if someone iterates it
        columns = Columns(list(map(str.encode, keys)), sizes, cols[5], cols[13], data if whole else None)
        return RowBatch(rows, _record, columns, keys[-1]), IN_BUCKET in cols[8]  # (chunk_size)

    async def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        # Records of one chunk come with their bytes (read in the same query), so read_blob needs no query for
        # them: one round trip per batch instead of one per record. A batch stops after the record that brings
        # its inline bytes to PREFETCH_BYTES; bigger records are streamed by read_blob chunk by chunk. The next
        # batch is fetched while the caller works through this one (at most two batches are held).
        if self._where(None) is None:
            return

        def query(last: str | None) -> asyncio.Task[list[asyncpg.Record]]:
            return asyncio.ensure_future(self._fetch(*self._records_query(last, batch)))

        pending: asyncio.Task[list[asyncpg.Record]] | None = query(after)
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if not (len(rows) == rows[0]["n"] < batch):  # more may follow
                    pending = query(rows[-1]["key"])
                found, in_bucket = self._records_batch(rows)
                del rows
                if self._prefetch is not None and in_bucket:  # (making the batch's records for this)
                    self._prefetch.plan(
                        [(m.blob.blob_id, m.blob, m.size) for m in found
                         if m.blob.chunk_size == IN_BUCKET and m.blob.data is None]
                    )
                yield found
        finally:
            await settle(pending)

    def _entries_query(self, last: str | None, batch: int) -> tuple[str, list[Any]]:
        """A batch of ``zip_entries()`` after the key ``last``: the SQL and its parameters."""
        found = self._where(last)
        assert found is not None  # (callers checked)
        where, args = found
        args.append(batch)
        sql = f"""SELECT key, decoded_size, crc32, modified_at, floor(extract(epoch FROM modified_at))::bigint
            FROM records WHERE {where} ORDER BY key LIMIT ${len(args)}"""
        return sql, args

    @staticmethod
    def _entries_batch(rows: list[asyncpg.Record]) -> RowBatch[ZipRow]:
        keys, sizes, crcs, _, seconds = zip(*rows, strict=True)
        columns = Columns(list(map(str.encode, keys)), sizes, crcs, seconds, None)
        return RowBatch(rows, _zip_row, columns, keys[-1])

    async def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[ZipRow]]:
        """The same records as ``records``, without their bytes (the central directory needs none), the next
        batch fetched while this one is used."""
        if self._where(None) is None:
            return

        def query(last: str | None) -> asyncio.Task[list[asyncpg.Record]]:
            return asyncio.ensure_future(self._fetch(*self._entries_query(last, batch)))

        pending: asyncio.Task[list[asyncpg.Record]] | None = query(after)
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if len(rows) == batch:
                    pending = query(rows[-1][0])
                yield self._entries_batch(rows)
        finally:
            await settle(pending)

    # -- archives from kept headers (records.zip_head, zipheads.py) ------------------------------------------------

    def kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock] | None:
        """All the records, as ``records()`` gives them, but a batch of one-chunk, identity-encoded records whose
        headers are all kept comes as a ``LocalBlock``: their local headers and bytes in one value (joined by
        PostgreSQL, or here from a COPY's rows). None if the snapshot can't (its archive would pass 4 GiB)."""
        return self._kept_local() if self.kept_rows else None

    def kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock] | None:
        """All the records, as ``zip_entries()`` gives them, but a batch whose headers are all kept comes as a
        ``CentralBlock``, made from them by a map and a join. None when ``kept_local`` is."""
        return self._kept_central() if self.kept_rows else None

    async def _kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock]:
        n = self.kept_rows
        block = self._copied_block if self.kept_copy else self._joined_block

        def ahead(last: str | None) -> asyncio.Task[tuple[int, bytes | None, str]]:
            return asyncio.ensure_future(block(last, n))

        last: str | None = None
        pending: asyncio.Task[tuple[int, bytes | None, str]] | None = ahead(last)
        try:
            while pending is not None:
                count, data, block_last = await pending
                pending = None
                if not count:
                    return
                if data is not None:
                    if count == n:  # more may follow: read while this block is sent
                        pending = ahead(block_last)
                    yield LocalBlock(count, data)
                    last = block_last
                    continue
                # a big or encoded record, a header not kept: this stretch as records()
                batch_rows = await self._fetch(*self._records_query(last, n))
                if not batch_rows:
                    return
                more = not (len(batch_rows) == batch_rows[0]["n"] < n)  # (a batch may stop at PREFETCH_BYTES)
                batch, _ = self._records_batch(batch_rows)  # (a bucket's objects are read as they come)
                del batch_rows
                yield batch
                if more:
                    last = batch.last_key
                    pending = ahead(last)
        finally:
            await settle(pending)

    async def _joined_block(self, last: str | None, n: int) -> tuple[int, bytes | None, str]:
        """The next (up to) ``n`` records after the key ``last`` as a LocalBlock's bytes, joined by PostgreSQL:
        (how many records, their headers and bytes or None if one of them can't be in a LocalBlock, the last
        key)."""
        found = self._where(last)
        assert found is not None  # (kept_rows is 0 for a selection of nothing)
        where, args = found
        args.append(n)
        # ``d``: the bytes, for an identity-encoded record of one chunk whose header is kept (NULL otherwise).
        # The aggregates take the rows in the order the subquery gives them (key order): an ORDER BY in
        # them would sort each batch again (PostgreSQL 15), which cost more than the rest of the query.
        # string_agg(d, h): each value after the first is preceded by its own row's delimiter, the header
        # (no h || d value per row); the first row's header comes from the scalar subquery.
        rows = await self._fetch(
            f"""SELECT (SELECT zip_head FROM records WHERE {where} ORDER BY key LIMIT 1)
                    || string_agg(d, h) AS data, count(*) AS n,
                    count(*) FILTER (WHERE h IS NOT NULL AND octet_length(d) = size) AS whole,
                    max(key) AS last
                FROM (SELECT r.key, r.size, r.zip_head AS h, CASE
                        WHEN r.content_encoding IS NOT NULL OR r.zip_head IS NULL OR r.size <> r.decoded_size
                            OR octet_length(r.zip_head) <> {_LOCAL_FIXED} + octet_length(r.key) THEN NULL
                        WHEN r.size = 0 THEN ''::bytea
                        WHEN r.size <= r.chunk_size THEN c.data
                        END AS d
                    FROM records r LEFT JOIN blob_chunks c ON c.blob_id = r.blob_id AND c.seq = 0
                    WHERE {where} ORDER BY r.key LIMIT ${len(args)}) b""",
            args,
        )
        r = rows[0]
        return r["n"], r["data"] if r["whole"] == r["n"] else None, r["last"]

    async def _copied_block(self, last: str | None, n: int) -> tuple[int, bytes | None, str]:
        """``_joined_block`` by a binary COPY of a row per record (its header and bytes), joined here: for records
        of a KiB or more, where PostgreSQL sending one big value cost it 4x its COPY of the same bytes."""
        found = self._where(last)
        assert found is not None
        where, args = found
        args.append(n)
        got = CopyValues(2)
        damaged: list[ValueError] = []

        async def sink(data: bytearray) -> None:
            if not damaged:
                try:
                    got.feed(data)
                except ValueError as exc:  # not raised from here: see chunks.copy_chunks (asyncpg's cancel)
                    damaged.append(exc)

        # each record's header, and its bytes where it can be in a LocalBlock (NULL otherwise); not h || d, which
        # cost PostgreSQL twice the CPU of sending both (a copy of each record's bytes in a fresh value)
        await self._copy(with_constants(
            f"""SELECT r.zip_head, CASE
                    WHEN r.content_encoding IS NOT NULL OR r.size <> r.decoded_size
                        OR octet_length(r.zip_head) <> {_LOCAL_FIXED} + octet_length(r.key) THEN NULL
                    WHEN r.size = 0 THEN ''::bytea
                    WHEN r.size <= r.chunk_size AND octet_length(c.data) = r.size THEN c.data
                    END
                FROM records r LEFT JOIN blob_chunks c ON c.blob_id = r.blob_id AND c.seq = 0
                WHERE {where} ORDER BY r.key LIMIT ${len(args)}""",
            args,
        ), sink)
        values = got.values
        if damaged or not got.ended:
            raise StorageUnavailable(f"a snapshot's COPY came damaged: {damaged[0] if damaged else 'no end'}")
        count = len(values) // 2
        if not count or None in values:
            return count, None, ""
        views = cast(list[memoryview], values)
        head = views[-2]  # the last record's local header: its name is the key (see zipwriter.local_header)
        name_len = _U16(head, 26)[0]
        return count, b"".join(views), bytes(head[30 : 30 + name_len]).decode()

    async def _kept_central(self) -> AsyncIterator[Sequence[Any] | CentralBlock]:
        n = self.kept_rows
        last: str | None = None
        base = 0  # the local offset of the batch's first entry
        uniform = True  # try the batch's headers as one value (below) until a batch's are not all of one length
        while True:
            found = self._where(last)
            assert found is not None
            where, args = found
            args.append(n)
            if uniform:
                # zipwriter.central_from_heads lays out the central headers of a batch whose kept headers are all
                # of one length (names of one length) from them joined: no Python object per record
                rows = await self._fetch(
                    f"""SELECT string_agg(zip_head, ''::bytea) AS heads, count(*) AS n, count(zip_head) AS kept
                        FROM (SELECT zip_head FROM records WHERE {where} ORDER BY key LIMIT ${len(args)}) b""",
                    args,
                )
                count, kept, joined = rows[0]["n"], rows[0]["kept"], rows[0]["heads"]
                del rows
                if not count:
                    return
                block = central_from_heads(joined, count, base) if kept == count else None
                if block is not None:
                    yield block
                    last = joined[len(joined) - len(joined) // count + 30 : -9].decode()
                    base = block.local_end
                    if count < n:
                        return
                    continue
                uniform = False
                del joined
            rows = await self._fetch(
                f"""SELECT array_agg(zip_head) AS heads, array_agg(octet_length(zip_head) + decoded_size) AS spans,
                        count(*) AS n,
                        count(*) FILTER (WHERE octet_length(zip_head) = 39 + octet_length(key)) AS fit
                    FROM (SELECT key, zip_head, decoded_size FROM records
                          WHERE {where} ORDER BY key LIMIT ${len(args)}) b""",
                args,
            )
            r = rows[0]
            count = r["n"]
            if not count:
                return
            if r["fit"] == count:  # every header kept, none with ZIP64 sizes (39 + name)
                heads, spans = r["heads"], r["spans"]
                del r, rows
                offsets = list(itertools.accumulate(spans, initial=base))
                data = b"".join(itertools.chain.from_iterable(zip(
                    itertools.repeat(CENTRAL_LEAD), map(_MID26, heads), itertools.repeat(CENTRAL_MID),
                    map(_U32, offsets), map(_TAIL, heads),
                )))
                end = offsets[-1]
                yield CentralBlock(count, data, base, end)
                last = heads[-1][30:-9].decode()
                base = end
            else:  # headers not kept: this stretch as zip_entries()
                del r, rows
                batch = self._entries_batch(await self._fetch(*self._entries_query(last, n)))
                cols = batch.columns
                assert cols is not None
                yield batch
                base += _LOCAL_FIXED * len(cols.names) + sum(map(len, cols.names)) + sum(cols.sizes)
                last = batch.last_key
            if count < n:
                return

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
        if record.content_encoding is None and blob.data is None:
            # the archive's bytes as they are stored: streamed by binary COPY, as memoryviews (no copy)
            async for view in copy_chunks(self._copy, blob, start, end, SNAPSHOT_COPY_BYTES):
                yield view  # type: ignore[misc]  # bytes-like: what an identity stream's consumers take
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
            # No parallel plans: the kept-header batches' aggregates take their rows in the subquery's key order
            # (see _kept_local), which a serial plan keeps and a parallel aggregate would not.
            await conn.execute("SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0")
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
