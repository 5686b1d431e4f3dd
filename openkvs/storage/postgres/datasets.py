"""Dataset items in PostgreSQL (the interface and its guarantees: storage/datasets.py).

A push locks the dataset's ``stores`` row first (as ``delete_store`` does, so the two can't deadlock), which makes
concurrent pushes to one dataset take turns on every node: each reads the item count its predecessor committed, so
indexes stay dense. The items go in with COPY, several to a row (``n`` items, ``idx`` the last one's index, ``data``
their bytes joined by b"\n": ITEMS_PER_ROW, ROW_BYTES), and an export's come out by binary COPY (COPY_WINDOW_BYTES;
by plain seeks without the C extension). A snapshot is a REPEATABLE READ READ ONLY transaction on a connection of the
snapshot pool: rows deleted meanwhile stay visible to it until it ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from ..base import NotFound, StorageDamaged, StorageUnavailable
from ..datasets import (
    BATCH_BYTES,
    BLOCK,
    ITEMS_PER_ROW,
    ROW_BYTES,
    DatasetInfo,
    DatasetStorage,
    ItemSnapshot,
    MergePaths,
    Piece,
    Push,
    add_field_stats,
    blocks_of,
    items_missing,
    merge_fields,
    packed_rows,
)
from .chunks import Pipe, drained
from .clock import NOW_MS
from .connections import CONNECTION_ERRORS, Database, deadlock_retried, discard, unavailable
from .copyformat import HEAD, I32, SIGNATURE, with_constants

try:  # C, built by hatch_build.py where a compiler is: an export's items read by binary COPY (_copied)
    from openkvs.storage.postgres import _copyrows
except ImportError:  # no compiler at install: items by plain seeks, a row object per row (asyncpg's decoding)
    _copyrows = None  # type: ignore[assignment]

DATASET_TABLES = """
CREATE TABLE dataset_items (
    store_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    idx bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (store_id, idx)
);
ALTER TABLE dataset_items ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE dataset_counts (
    store_id text PRIMARY KEY REFERENCES stores(id) ON DELETE CASCADE,
    item_count bigint NOT NULL,
    clean_count bigint NOT NULL,
    bytes bigint NOT NULL,
    fields text NOT NULL
);
CREATE TABLE dataset_paths (
    store_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    block bigint NOT NULL,
    paths text NOT NULL,
    PRIMARY KEY (store_id, block)
);
"""
FIELD_STATS_COLUMN = "ALTER TABLE dataset_counts ADD COLUMN field_stats text"
# The byte length of each dataset's largest item, kept by every push: a batch of n items of a dataset whose items
# are all about one size (most are) is known to fit a byte budget from it alone, so an export reads its pieces by a
# plain seek on the primary key instead of reading the items' lengths first (PgItemSnapshot). Measured once here;
# ALTER TABLE locks dataset_counts until the migration commits, and every push writes its row. (IF NOT EXISTS: the
# upgrade tests rebuild an older version's tables by dropping what later versions add.)
MAX_ITEM_COLUMN = """
ALTER TABLE dataset_counts ADD COLUMN IF NOT EXISTS max_item bigint NOT NULL DEFAULT 0;
UPDATE dataset_counts c SET max_item = m.n
    FROM (SELECT store_id, max(octet_length(data)) AS n FROM dataset_items GROUP BY store_id) m
    WHERE m.store_id = c.store_id;
"""
# A packed row's data stays in the heap row, uncompressed, up to INLINE_ROW_BYTES: PostgreSQL moves a value out of
# line (TOAST; EXTERNAL since version 6, so never compressed) only when its row passes toast_tuple_target, set here to
# the most a row of an 8 KB page may hold. Out of line, a row of ROW_BYTES (256 KiB) is ~130 chunks of ~2 KB, each a
# row of the TOAST table and an entry of its index (the per-row work that packing saves, back again), and a read of
# 10 items at an offset detoasts all of it. PostgreSQL's CPU (bench/pg_push_rows.py at load 15-17, BENCHMARKS.md): a
# push 13-18 us an item with a row per item, 2.5-3.3 with rows of 256 KiB out of line, 2.8-3.5 with rows of 8,000
# bytes in the heap, 4.8-5.0 compressed (EXTENDED, pglz); a read of 10 items 140-190 us, 360-410, 260-310. An item
# bigger than that is a row alone, out of line as before.
INLINE_ROW_BYTES = 8000
# Items several to a row (see the module docstring): the rows before it are rows of one item, so the column is all
# the upgrade needs (a constant default: PostgreSQL >= 11 writes no row for it), and toast_tuple_target applies to
# the rows written from then on.
PACKED_ROWS_COLUMN = """
ALTER TABLE dataset_items ADD COLUMN IF NOT EXISTS n integer NOT NULL DEFAULT 1;
ALTER TABLE dataset_items SET (toast_tuple_target = 8160);
"""

_COUNTS = (
    "SELECT item_count, clean_count, bytes, fields, field_stats, max_item FROM dataset_counts WHERE store_id = $1"
)


def _to_info(row: Any) -> DatasetInfo:
    return DatasetInfo(row["item_count"], row["clean_count"], row["bytes"], json.loads(row["fields"]))


# The packed rows of [$2, ...) of the dataset $1, by the primary key, up to the row that holds item $3 (the rows
# whose last item is past it are not wanted; the bound is one seek, so the scan of the range stops there): the
# rows of a range [lo, hi) are those with ``lo <= idx <= THE_ROW_OF(hi - 1)``.
_ROW_OF = "(SELECT idx FROM dataset_items WHERE store_id = $1 AND idx >= $3 ORDER BY idx LIMIT 1)"
_UNBOUNDED = 1 << 62  # (an upper bound past every index)


# A json or jsonl export's items come by binary COPYs of about this many bytes of items each (by index: indexes are
# dense), one after the other, each streamed as PostgreSQL sends it: no round trip per piece and no Python object per
# row (a row object per item and a statement per 1 MiB piece cost the export as much CPU as PostgreSQL's own reading,
# BENCHMARKS.md). A COPY is never cancelled (see chunks.settle): an export whose client left lets the one under way
# finish, its rows dropped (~0.03 s for 8 MiB), and starts no other. At most COPY_AHEAD pieces wait for the export
# (then the sink waits, asyncpg stops reading and PostgreSQL's sends block: memory stays flat).
COPY_WINDOW_BYTES = 8 * 1024 * 1024
COPY_AHEAD = 2


class _Joined:
    """The items of [lo, hi) from consecutive binary COPYs of packed rows (``idx, n, data``, in the order asked),
    joined by ``sep`` into pieces of at most ``batch`` items and ``size`` bytes (an item past that alone), as
    ``ItemSnapshot.joined`` gives them (``buffers``: a piece as the list of what each COPY data gave it, not
    joined); or (``sep`` None) as lists of the items, ``ItemSnapshot.items``' batches, the first of them a
    FIRST_SHARE of that: the first byte of a tabular export waits for its first batch to be read and rendered, and
    the COPY's data comes a socket buffer at a time, each a wait for PostgreSQL's process to be scheduled on a busy
    machine (a csv export's first byte 23-33 -> 61-86 ms at load 10 with whole first batches; joined pieces of raw
    JSON are sent as they are read). ``feed`` each COPY's data as it comes (``start`` before
    each COPY), ``end`` for the last piece; ``next`` is the next item wanted (past the range: all came)."""

    FIRST_SHARE = 16

    __slots__ = ("sep", "buffers", "size", "batch", "lo", "hi", "desc", "next", "parts", "held", "count", "ended",
                 "_head", "_rest", "_full")

    def __init__(
        self, sep: bytes | None, size: int, batch: int, lo: int, hi: int, desc: bool, buffers: bool = False
    ) -> None:
        self.sep = sep
        self.buffers = buffers
        self._full = (size, batch)  # the bounds of the pieces after the first
        share = self.FIRST_SHARE if sep is None else 1
        self.size, self.batch = max(1, size // share), max(1, batch // share)
        self.lo, self.hi, self.desc = lo, hi, desc
        self.next = hi - 1 if desc else lo
        self.parts: list[Any] = []  # the piece so far: joined bytes, or lists of items
        self.held = 0  # its bytes
        self.count = 0  # its items
        self.ended = True  # the current COPY's trailer came
        self._head = True  # the COPY's header still to come
        self._rest = b""  # the start of a row (or of the header) whose end is in the next data

    @property
    def done(self) -> bool:
        return self.next < self.lo if self.desc else self.next >= self.hi

    def start(self) -> None:
        self.ended, self._head, self._rest = False, True, b""

    def feed(self, data: bytes) -> list[Any]:
        """The pieces that ``data`` completes."""
        if self._rest:
            data, self._rest = self._rest + data, b""
        pos = 0
        if self._head:
            if len(data) < HEAD:
                self._rest = bytes(data)
                return []
            if data[: len(SIGNATURE)] != SIGNATURE or I32(data, HEAD - 4)[0] != 0:
                raise ValueError("not a binary COPY without a header extension")
            self._head, pos = False, HEAD
        if self.ended and pos < len(data):
            raise ValueError("data after a binary COPY's trailer")
        out = []
        while True:
            got, pos, self.next, items, size, state = _copyrows.take(
                data, pos, self.next, self.lo, self.hi, self.desc, self.sep, self.held, self.batch - self.count,
                self.size,
            )
            if items:
                self.parts.append(got)
                self.held += size
                self.count += items
            if state == _copyrows.FULL:  # the next item would take the piece past its size or its count
                out.append(self._piece())
                continue
            if state == _copyrows.ENDED:
                self.ended = True
            elif pos < len(data):  # a row cut: its end comes next
                self._rest = bytes(data[pos:])
            return out

    def _piece(self) -> Any:
        parts = self.parts
        if len(parts) == 1:
            piece = parts[0]
        elif self.sep is None:  # (lists of items)
            piece = [item for part in parts for item in part]
        elif self.buffers:  # (the items' bytes as take copied them, not joined)
            piece = parts
        else:
            piece = b"".join(parts)
        self.parts, self.held, self.count = [], 0, 0
        self.size, self.batch = self._full
        return piece

    def end(self) -> Any:
        return self._piece() if self.parts else None


def _one(piece: Any) -> int:
    return 1


class PgItemSnapshot(ItemSnapshot):
    def __init__(self, conn: asyncpg.Connection, store_id: str, info: DatasetInfo, max_item: int = 0) -> None:
        """``max_item``: the length of the dataset's largest item (0: not known)."""
        self._conn = conn
        self._store_id = store_id
        self.info = info
        self._max_item = max_item
        self._index_only = False  # the planner told to read dataset_items by its index alone (_copied)

    async def items(
        self, start: int, stop: int, *, desc: bool = False, batch: int = BLOCK
    ) -> AsyncIterator[list[bytes]]:
        """ItemSnapshot.items: by binary COPY (``_copied``); without the C, from ``_seeks``' rows. A batch ends
        before the item that would take it past BATCH_BYTES."""
        lo, hi = max(start, 0), min(stop, self.info.item_count)
        if _copyrows is not None:
            async for rows in self._copied(lo, hi, desc, None, BATCH_BYTES, batch):
                yield rows
            return
        out: list[bytes] = []
        held = 0
        async for got in self._seeks(lo, hi, desc):
            for item in got:
                if out and (len(out) == batch or held + len(item) > BATCH_BYTES):
                    yield out
                    out, held = [], 0
                out.append(item)
                held += len(item)
        if out:
            yield out

    def _missing(self, lo: int, hi: int, want: int, desc: bool) -> StorageDamaged:
        """What a read of [lo, hi) raises when the rows ran out before ``want``, the next item it was to give: the
        items from it to the end it read towards (its start, ``desc``) are not all in the table."""
        return items_missing(self._store_id, lo, want + 1) if desc else items_missing(self._store_id, want, hi)

    async def _seeks(self, lo: int, hi: int, desc: bool) -> AsyncIterator[list[bytes]]:
        """Without the C extension: the items of [lo, hi) in the order asked, a list per statement, each a plain
        seek on the primary key for as many packed rows as fit BATCH_BYTES (a row holds at most INLINE_ROW_BYTES,
        or its one item; ``max_item``: the largest). A row object per row, and a bytes object per item: the slow
        path."""
        rows_per = max(1, BATCH_BYTES // max(min(ROW_BYTES, INLINE_ROW_BYTES), self._max_item))
        sql = (
            f"SELECT idx, n, data FROM dataset_items WHERE store_id = $1 AND idx >= $2 AND idx <= least($4, {_ROW_OF}) "
            f"ORDER BY idx {'DESC' if desc else ''} LIMIT $5"
        )
        low, high, want = lo, _UNBOUNDED, hi - 1 if desc else lo  # (the rows not read yet; the next item)
        while (want >= lo) if desc else (want < hi):
            rows = await self._conn.fetch(sql, self._store_id, low, hi - 1, high, rows_per)
            if not rows:
                raise self._missing(lo, hi, want, desc)
            out: list[bytes] = []
            for idx, n, data in rows:
                first = idx - n + 1
                if not first <= want <= idx:
                    raise StorageDamaged(
                        f"dataset {self._store_id}: its item {want} is not in the next packed row ({first}..{idx})"
                    )
                items = data.split(b"\n")
                if len(items) != n:
                    raise StorageDamaged(f"dataset {self._store_id}: a packed row of {n} items holds {len(items)}")
                if desc:
                    end = max(first, lo)
                    out += items[end - first : want - first + 1][::-1]
                    want = end - 1
                else:
                    end = min(idx, hi - 1)
                    out += items[want - first : end - first + 1]
                    want = end + 1
                if (want < lo) if desc else (want >= hi):
                    break
            if desc:
                high = rows[-1]["idx"] - 1
            else:
                low = rows[-1]["idx"] + 1
            yield out

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
        if _copyrows is None:  # (the pieces from items()' batches)
            async for piece in super().joined(start, stop, desc=desc, batch=batch, sep=sep, size=size):
                yield piece
            return
        lo, hi = max(start, 0), min(stop, self.info.item_count)
        async for piece in self._copied(lo, hi, desc, sep, max(1, min(size, BATCH_BYTES)), batch, buffers):
            yield piece

    async def _copied(
        self, lo: int, hi: int, desc: bool, sep: bytes | None, size: int, batch: int, buffers: bool = False
    ) -> AsyncIterator[Any]:
        """``joined`` (or with ``sep`` None ``items``) of [lo, hi) by binary COPYs of about COPY_WINDOW_BYTES each,
        read in a task of their own while the pieces before are used (COPY_WINDOW_BYTES says why). A window is a
        range of the rows' ``idx`` (the rows whose last item is in it), the one at ``hi`` up to the row that holds
        ``hi - 1``."""
        info = self.info
        per = max(ITEMS_PER_ROW, int(COPY_WINDOW_BYTES * info.item_count / info.bytes)) if info.bytes else 16 * BLOCK
        order = "DESC" if desc else ""
        ahead = Pipe(COPY_AHEAD, weigh=_one)  # (pieces counted)
        joined = _Joined(sep, size, batch, lo, hi, desc, buffers)
        damaged: list[Exception] = []

        async def sink(data: bytes) -> None:
            if ahead.stopped or damaged:
                return
            try:
                pieces = joined.feed(data)
            except ValueError as exc:  # (not raised from here: asyncpg would cancel the COPY, see chunks.copy_chunks)
                damaged.append(exc)
                return
            for piece in pieces:
                await ahead.put(piece)

        async def produce() -> None:
            try:
                if not self._index_only and lo < hi:
                    # A window of items in index order is a range of the primary key, but PostgreSQL plans a COPY's
                    # query for all its rows: once they are a few percent of the table it reads the whole table
                    # and sorts them (measured at 15%: a parallel scan, a sort, JIT; twice the database's CPU of
                    # the export, 3x its time), and a window of many small items costs enough to be compiled (JIT:
                    # milliseconds for nothing). For the rest of this snapshot's transaction, which only reads
                    # dataset_items and dataset_paths by their primary keys: the index alone, never compiled.
                    await self._conn.execute(
                        "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off"
                    )
                    self._index_only = True
                a, b = lo, hi  # (the windows of idx not read yet: [a, b), b == hi standing for the row of hi - 1)
                while a < b and not ahead.stopped and not joined.done:
                    first, last = (max(a, b - per), b) if desc else (a, min(b, a + per))
                    sql = with_constants(
                        f"SELECT idx, n, data FROM dataset_items WHERE store_id = $1 AND idx >= $2 AND idx <= "
                        f"least($4, {_ROW_OF}) ORDER BY idx {order}",
                        (self._store_id, first, hi - 1, last - 1 if last < hi else _UNBOUNDED),
                    )
                    joined.start()
                    await self._conn.copy_from_query(sql, output=sink, format="binary")
                    if damaged:
                        raise StorageDamaged(f"dataset {self._store_id}: {damaged[0]}") from damaged[0]
                    a, b = (a, first) if desc else (last, b)
                if not ahead.stopped and not joined.done:  # (the windows ran out first: rows missing)
                    raise self._missing(lo, hi, joined.next, desc)
                if not ahead.stopped and (piece := joined.end()) is not None:
                    await ahead.put(piece)
                ahead.end(None)
            except BaseException as exc:
                ahead.end(exc)
                if not isinstance(exc, Exception):
                    raise

        async for piece in drained(ahead, asyncio.ensure_future(produce())):
            yield piece

    async def block_paths(self, first: int, last: int) -> list[tuple[int, list[Any]]]:
        rows = await self._conn.fetch(
            "SELECT min(block) AS block, paths FROM dataset_paths WHERE store_id = $1 AND block >= $2 "
            "AND block <= $3 GROUP BY paths ORDER BY 1",
            self._store_id,
            first,
            last,
        )
        return [(r["block"], json.loads(r["paths"])) for r in rows]


def _merged(
    blocks: Sequence[tuple[Any, Sequence[list[Any]]]], merge: MergePaths, stats: Any, new: Any
) -> tuple[list[str], str | None]:
    """The text of each block's path list, its old text (None: a new block) with the push's lists merged in, and
    the text of the field statistics with the push's added (``new`` None: ``stats`` as it is)."""
    texts = [
        json.dumps(merge(json.loads(old) if old else [], pieces), separators=(",", ":"), ensure_ascii=False)
        for old, pieces in blocks
    ]
    if new is not None:
        stats = json.dumps(add_field_stats(json.loads(stats) if stats else None, new))
    return texts, stats


class PgDatasets(DatasetStorage):
    def __init__(self, db: Database, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def push(self, store_id: str, push: Push, merge: MergePaths) -> int:
        packed = packed_rows(push.items, min(ROW_BYTES, INLINE_ROW_BYTES))

        async def go(conn: asyncpg.Connection) -> int:
            if await conn.fetchval("SELECT true FROM stores WHERE id = $1 FOR NO KEY UPDATE", store_id) is None:
                raise NotFound(f"dataset {store_id}")
            row = await conn.fetchrow(_COUNTS, store_id)
            info = _to_info(row) if row is not None else DatasetInfo()
            start = info.item_count
            n = len(push.items)
            if n == 0:
                return start
            field_stats = row["field_stats"] if row is not None else None
            add_stats = push.field_stats is not None and (row is None or field_stats is not None)  # (else: none kept)
            records = []
            last = start - 1
            for count, data in packed:
                last += count
                records.append((store_id, last, count, data))
            await conn.copy_records_to_table(
                "dataset_items", records=records, columns=("store_id", "idx", "n", "data"), schema_name=self._namespace
            )
            blocks = blocks_of(start, n)
            rows = await conn.fetch(
                "SELECT block, paths FROM dataset_paths WHERE store_id = $1 AND block = ANY($2::bigint[])",
                store_id,
                [block for block, _, _ in blocks],
            )
            old = {r["block"]: r["paths"] for r in rows}
            # Parsing, merging and writing the blocks' path lists (a block's may list thousands of paths) and the
            # field statistics (one entry per property of the schema, which may name 100,000) is CPU work: in a
            # worker thread, as SQLite does the whole push in its writer's.
            pieces = [(old.get(block), push.paths[lo:hi]) for block, lo, hi in blocks]
            paths, field_stats = await anyio.to_thread.run_sync(
                _merged, pieces, merge, field_stats, push.field_stats if add_stats else None
            )
            await conn.executemany(
                "INSERT INTO dataset_paths (store_id, block, paths) VALUES ($1, $2, $3) "
                "ON CONFLICT (store_id, block) DO UPDATE SET paths = excluded.paths",
                [(store_id, block, text) for (block, _, _), text in zip(blocks, paths, strict=True)],
            )
            fields = merge_fields(info.fields, push.keys)
            await conn.execute(
                "INSERT INTO dataset_counts (store_id, item_count, clean_count, bytes, fields, field_stats, max_item) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (store_id) DO UPDATE SET "
                "item_count = excluded.item_count, clean_count = excluded.clean_count, bytes = excluded.bytes, "
                "fields = excluded.fields, field_stats = excluded.field_stats, max_item = excluded.max_item",
                store_id,
                start + n,
                info.clean_item_count + push.clean_count,
                info.bytes + sum(map(len, push.items)),
                json.dumps(fields if fields is not None else info.fields, ensure_ascii=False),
                field_stats,
                max(row["max_item"] if row is not None else 0, max(map(len, push.items))),
            )
            await conn.execute(f"UPDATE stores SET modified_at = {NOW_MS} WHERE id = $1", store_id)
            return start

        return await deadlock_retried("dataset push", lambda: self._db.run(go, tx=True))

    async def info(self, store_ids: Sequence[str], *, fields: bool = True) -> dict[str, DatasetInfo]:
        ids = list(dict.fromkeys(store_ids))
        found = {sid: DatasetInfo() for sid in ids}
        if ids:
            rows = await self._db.fetch(
                "SELECT store_id, item_count, clean_count, bytes, "
                + ("fields" if fields else "'[]' AS fields")
                + " FROM dataset_counts WHERE store_id = ANY($1::text[])",
                ids,
            )
            for r in rows:
                found[r["store_id"]] = _to_info(r)
        return found

    async def field_stats(self, store_id: str) -> tuple[int, dict[str, Any] | None]:
        sql = "SELECT item_count, field_stats FROM dataset_counts WHERE store_id = $1"
        row = await self._db.fetchrow(sql, store_id)
        if row is None:
            return 0, None
        if row["field_stats"] is None:
            return row["item_count"], None
        # in a worker thread: one entry per property of the dataset's schema, which may name 100,000 (megabytes)
        return row["item_count"], await anyio.to_thread.run_sync(json.loads, row["field_stats"])

    async def keep_field_stats(self, store_id: str, count: int, stats: dict[str, Any]) -> bool:
        text = await anyio.to_thread.run_sync(json.dumps, stats)  # (as large as the schema, see field_stats)

        async def go(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "UPDATE dataset_counts SET field_stats = $3 WHERE store_id = $1 AND item_count = $2 "
                "AND field_stats IS NULL",
                store_id,
                count,
                text,
            )
            return bool(done == "UPDATE 1")

        return await self._db.run(go)

    @asynccontextmanager
    async def snapshot(self, store_id: str) -> AsyncIterator[ItemSnapshot]:
        pool = self._db.snapshots()
        try:
            conn = await pool.acquire()
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        broken = False
        tr = conn.transaction(isolation="repeatable_read", readonly=True)
        try:
            try:
                await tr.start()
                if await conn.fetchval("SELECT true FROM stores WHERE id = $1", store_id) is None:
                    raise NotFound(f"dataset {store_id}")
                row = await conn.fetchrow(_COUNTS, store_id)
            except CONNECTION_ERRORS as exc:
                broken = True
                raise unavailable(exc) from exc
            try:
                info, max_item = (_to_info(row), row["max_item"]) if row is not None else (DatasetInfo(), 0)
                yield PgItemSnapshot(conn, store_id, info, max_item)
            except (StorageUnavailable, *CONNECTION_ERRORS):  # type: ignore[misc]  # mypy can't read a * in except
                broken = True
                raise
        finally:
            with anyio.move_on_after(10, shield=True):
                if broken:
                    discard(conn)
                else:
                    try:  # a query still running (a readahead given up) makes this fail: the connection goes then
                        await tr.rollback()
                    except Exception:
                        discard(conn)
                try:
                    await pool.release(conn)
                except Exception:
                    discard(conn)
