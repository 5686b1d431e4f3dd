"""Record bytes as ``blob_chunks`` rows: the blob handle in ``RecordMeta.blob``, reading a byte range of a blob
chunk by chunk (one query ahead of the reader), filling a buffer from a request body chunk by chunk, and writing
a big body's chunks."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..base import NotFound, RecordMeta
from .copyformat import HEAD, I16, I32, SIGNATURE

# Bytes per blob_chunks row. Measured (256 MiB record, best of 3, local PostgreSQL 15, 2 CPUs), in / out MB/s:
# 128 KiB 226/523, 256 KiB 166-260/543-586, 512 KiB 284-290/543-557, 1 MiB 306-329/551-569, 2 MiB 289/518.
# 1 MiB writes fastest (fewer round trips) and keeps memory flat; COPY was slower (136-248 MB/s).
CHUNK_SIZE = 1024 * 1024
READ_PIECE = 1024 * 1024  # read_blob yields pieces of at most this


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class PgBlob:
    """The handle in ``RecordMeta.blob``. ``data``: the whole stored bytes when they came with the metadata (a
    record of one chunk, read in the same query); ``read_blob`` then needs no query."""

    blob_id: int
    chunk_size: int
    size: int
    data: bytes | None = field(default=None, repr=False, compare=False)


def blob_range(record: RecordMeta, start: int, end: int | None) -> tuple[PgBlob, int, int]:
    blob = record.blob
    if not isinstance(blob, PgBlob):
        raise TypeError("not a PostgresStorage record")
    size = blob.size
    end = size if end is None else min(end, size)
    start = max(0, start)
    return blob, start, end


async def iter_chunks(
    fetch: Callable[[str, Sequence[Any]], Awaitable[list[asyncpg.Record]]],
    blob: PgBlob,
    start: int,
    end: int,
    per_query_bytes: int = READ_PIECE,
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a blob, yielded in pieces of <= READ_PIECE. Inline bytes (``blob.data``) are served
    without a query; otherwise chunks are fetched about ``per_query_bytes`` per query, the next query running
    while the caller consumes the current pieces (at most two queries' rows are held)."""
    if start >= end:
        return
    if blob.data is not None:
        for i in range(start, end, READ_PIECE):
            yield blob.data[i : min(i + READ_PIECE, end)]
        return
    cs = blob.chunk_size
    per_query = max(1, per_query_bytes // cs)
    first, last = start // cs, (end - 1) // cs

    def query(seq: int) -> asyncio.Task[list[asyncpg.Record]]:
        upto = min(last, seq + per_query - 1)
        return asyncio.ensure_future(
            fetch(
                "SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
                (blob.blob_id, seq, upto),
            )
        )

    seq = first
    pending: asyncio.Task[list[asyncpg.Record]] | None = query(seq)
    try:
        while pending is not None:
            rows = await pending
            upto = min(last, seq + per_query - 1)
            if len(rows) != upto - seq + 1:
                pending = None
                raise NotFound(f"blob {blob.blob_id} is gone (chunks {seq}..{upto} missing)")
            seq = upto + 1
            pending = query(seq) if seq <= last else None  # prefetch while the caller takes these pieces
            for row in rows:
                data: bytes = row["data"]
                base = row["seq"] * cs
                lo = max(start - base, 0)
                hi = min(end - base, len(data))
                piece = data if (lo == 0 and hi == len(data)) else data[lo:hi]
                for i in range(0, len(piece), READ_PIECE):
                    yield piece[i : i + READ_PIECE]
            del rows
    finally:
        await settle(pending)


async def settle(pending: asyncio.Future[Any] | None) -> None:
    """Let an unwanted prefetch finish and drop its result. Never cancel it: cancelling a query on a snapshot's
    connection would abort the snapshot's transaction."""
    if pending is None:
        return
    if not pending.done():
        await asyncio.wait({pending})
    if not pending.cancelled():
        pending.exception()  # retrieved: no "never retrieved" warning


async def fill(it: AsyncIterator[bytes], buf: bytearray, n: int) -> bool:
    """Read from ``it`` into ``buf`` until it holds at least ``n`` bytes; True if the iterator ended."""
    while len(buf) < n:
        try:
            piece = await it.__anext__()
        except StopAsyncIteration:
            return True
        buf += piece
    return False


async def write_chunks(conn: asyncpg.Connection, it: AsyncIterator[bytes], buf: bytearray) -> tuple[int, int]:
    """In the caller's transaction: the bytes in ``buf``, then the rest of ``it``, as the chunks of a new blob;
    returns its id and size. A body error propagates (the transaction rolls back)."""
    blob_id = await conn.fetchval("SELECT nextval('blob_ids')")
    seq = 0
    size = 0
    ended = False
    while True:
        while len(buf) >= CHUNK_SIZE:
            chunk = bytes(buf[:CHUNK_SIZE])
            del buf[:CHUNK_SIZE]
            await conn.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)", blob_id, seq, chunk)
            seq += 1
            size += len(chunk)
        if ended:
            break
        ended = await fill(it, buf, CHUNK_SIZE)
    if buf:
        await conn.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)", blob_id, seq, buf)
        size += len(buf)
    return blob_id, size


# -- streaming a blob's chunks by binary COPY (a snapshot's big records: the ZIP download) --------------------------

# Bytes of chunks per COPY, and the most bytes a COPY's reader lets wait for its caller before it stops reading
# (then PostgreSQL's sends block: memory stays flat). A caller that stops early lets the COPY under way finish, its
# data dropped (never cancelled: see settle): a window is what that may cost, ~0.05 s at 300 MiB/s.
COPY_WINDOW_BYTES = 16 * 1024 * 1024
COPY_HELD_BYTES = 4 * 1024 * 1024


# Runs ``COPY (query) TO STDOUT (FORMAT binary)``, handing its data to the sink as it comes (PgSnapshot._copy).
Copy = Callable[[str, Callable[[bytearray], Awaitable[None]]], Awaitable[None]]


class _CopyRows:
    """Parses a binary COPY of ``seq, data`` rows of blob_chunks, fed in slices of any size, into pieces of the
    chunks' bytes: memoryviews of the data the sink was given, no copy (asyncpg hands over whole CopyData messages,
    one per row: a 1 MiB chunk comes as one piece). Each row must be the next chunk expected, of its length."""

    __slots__ = ("phase", "head", "need", "left", "seq", "lengths", "rows")

    _FILE, _COUNT, _SEQ_LEN, _SEQ, _LENGTH, _DATA, _END = range(7)
    _NEED = (HEAD, 2, 4, 4, 4, 0, 0)

    def __init__(self, first: int, lengths: list[int]) -> None:
        self.phase = self._FILE
        self.head = bytearray()  # the bytes so far of the header being read (the COPY's, a row's count, ...)
        self.need = HEAD  # its length
        self.left = 0  # bytes of the current chunk still to come
        self.seq = first  # the chunk the next row must be
        self.lengths = lengths  # the length of each chunk expected, in order
        self.rows = 0  # rows whose bytes began

    @property
    def ended(self) -> bool:
        return self.phase == self._END

    def _next(self, phase: int) -> None:
        self.phase = phase
        self.need = self._NEED[phase]

    def feed(self, data: bytearray, out: list[memoryview]) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self.phase == self._DATA:
                take = min(self.left, n - i)
                out.append(view[i : i + take])
                i += take
                self.left -= take
                if not self.left:
                    self._next(self._COUNT)
                continue
            if self.phase == self._END:
                raise ValueError("data after a binary COPY's trailer")
            take = min(self.need - len(self.head), n - i)
            self.head += view[i : i + take]
            i += take
            if len(self.head) < self.need:
                return
            head, self.head = self.head, bytearray()
            phase = self.phase
            if phase == self._FILE:
                if not head.startswith(SIGNATURE) or I32(head, HEAD - 4)[0] != 0:
                    raise ValueError("not a binary COPY without a header extension")
                self._next(self._COUNT)
            elif phase == self._COUNT:
                fields = I16(head, 0)[0]
                if fields == -1:
                    self._next(self._END)
                elif fields != 2:
                    raise ValueError(f"a binary COPY row of {fields} fields")
                else:
                    self._next(self._SEQ_LEN)
            elif phase == self._SEQ_LEN:
                if I32(head, 0)[0] != 4:
                    raise ValueError("a chunk's seq is not an integer")
                self._next(self._SEQ)
            elif phase == self._SEQ:
                seq = I32(head, 0)[0]
                if seq != self.seq or self.rows >= len(self.lengths):
                    raise LookupError(f"chunk {seq} where chunk {self.seq} was expected")
                self._next(self._LENGTH)
            else:
                length = I32(head, 0)[0]
                if length != self.lengths[self.rows]:
                    raise LookupError(f"chunk {self.seq}: {length} bytes where {self.lengths[self.rows]}")
                self.rows += 1
                self.seq += 1
                if length:
                    self.phase, self.left = self._DATA, length
                else:
                    self._next(self._COUNT)


class Pipe:
    """Pieces from a COPY's sink (a task of its own) to the reader: ``put`` waits while ``limit`` or more is
    waiting, each piece weighing ``weigh(piece)`` (its bytes, or 1 to count pieces); after ``stop`` (the reader
    left) it drops them. ``end`` puts the last item (None or an exception) without waiting. ``drained`` reads it."""

    __slots__ = ("items", "held", "limit", "stopped", "_weigh", "_came", "_room")

    def __init__(self, limit: int, weigh: Callable[[Any], int] = len) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.held = 0
        self.limit = limit
        self.stopped = False
        self._weigh = weigh
        self._came = asyncio.Event()
        self._room = asyncio.Event()

    async def put(self, piece: Any) -> None:
        while self.held >= self.limit and not self.stopped:
            self._room.clear()
            await self._room.wait()
        if self.stopped:
            return
        self.items.append(piece)
        self.held += self._weigh(piece)
        self._came.set()

    def end(self, last: BaseException | None) -> None:
        self.items.append(last)
        self._came.set()

    async def get(self) -> Any:
        while not self.items:
            self._came.clear()
            await self._came.wait()
        item = self.items.popleft()
        if item is not None and not isinstance(item, BaseException):
            self.held -= self._weigh(item)
            self._room.set()
        return item

    def stop(self) -> None:
        self.stopped = True
        self.items.clear()
        self._room.set()


async def drained(pipe: Pipe, task: asyncio.Future[None]) -> AsyncIterator[Any]:
    """The pieces ``task`` puts in ``pipe``, up to its end (an exception it ends with is raised here); whenever the
    reader stops, the pipe stops and the task is waited for (``settle``)."""
    try:
        while True:
            item = await pipe.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pipe.stop()
        await settle(task)


async def copy_chunks(
    copy: Copy,
    blob: PgBlob,
    start: int,
    end: int,
    window_bytes: int = COPY_WINDOW_BYTES,
    held_bytes: int = COPY_HELD_BYTES,
) -> AsyncIterator[memoryview]:
    """Bytes [start, end) of a blob in blob_chunks rows (not inline), as memoryviews of at most READ_PIECE bytes,
    read by binary COPYs of about ``window_bytes`` of chunks each, one after the other in a task of their own: the
    bytes come as PostgreSQL sends them, without a round trip per query or a Python object per row, and at most
    about ``held_bytes`` wait for the caller. A missing chunk fails (NotFound) before any byte of it or after it
    is given. If the caller stops early, the COPY under way runs to its end, its data dropped, and none follows."""
    if start >= end:
        return
    cs = blob.chunk_size
    first, last = start // cs, (end - 1) // cs
    per = max(1, window_bytes // cs)
    pipe = Pipe(held_bytes)

    async def window(a: int, b: int) -> None:
        rows = _CopyRows(a, [min(cs, blob.size - k * cs) for k in range(a, b + 1)])
        pos = a * cs  # the blob offset of the next byte from the COPY
        out: list[memoryview] = []
        damaged: list[Exception] = []

        async def sink(data: bytearray) -> None:
            nonlocal pos
            if pipe.stopped or damaged:
                return
            try:
                rows.feed(data, out)
            except (LookupError, ValueError) as exc:
                # Not raised from here: asyncpg would cancel the COPY, and a cancel that reaches PostgreSQL after
                # the COPY's last row leaves the connection waiting for an answer that never comes (asyncpg 0.32:
                # the snapshot's rollback then waited out its 5 s, the release 10 s more and the pool's close 10 s).
                # The rest of the window is read and dropped, as for a reader that stopped.
                damaged.append(exc)
                out.clear()
                return
            for piece in out:
                at = pos
                pos += len(piece)
                lo, hi = max(start - at, 0), min(end - at, len(piece))
                for i in range(lo, hi, READ_PIECE):
                    await pipe.put(piece[i : min(i + READ_PIECE, hi)])
            out.clear()

        sql = (f"SELECT seq, data FROM blob_chunks WHERE blob_id = {int(blob.blob_id)}"
               f" AND seq >= {int(a)} AND seq <= {int(b)} ORDER BY seq")
        await copy(sql, sink)
        if damaged:
            raise NotFound(f"blob {blob.blob_id} is gone or damaged: {damaged[0]}") from damaged[0]
        if not pipe.stopped and not (rows.ended and rows.rows == b - a + 1):
            raise NotFound(f"blob {blob.blob_id} is gone (chunks {a + rows.rows}..{b} missing)")

    async def produce() -> None:
        try:
            for a in range(first, last + 1, per):
                if pipe.stopped:
                    return
                await window(a, min(last, a + per - 1))
            pipe.end(None)
        except Exception as exc:  # (for the reader; a cancelled task ends its reader's wait below too)
            pipe.end(exc)
        except BaseException as exc:
            pipe.end(exc)
            raise

    async for piece in drained(pipe, asyncio.ensure_future(produce())):
        yield piece
