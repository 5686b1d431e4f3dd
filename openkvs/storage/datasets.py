"""The dataset items interface: what the HTTP layer may ask of a backend about the items of a dataset (a store of
kind ``dataset``), and the value types it gets back. Each backend has one as ``storage.datasets``.

Items are JSON objects stored as the compact bytes the HTTP layer hands over; storage never parses them. A
dataset is append-only: the items of one push get the next consecutive indexes (the first item ever is 0), all or
none, in one transaction; concurrent pushes take turns (their order is their commit order), so indexes stay dense.

Next to the items a backend keeps, exact and in the push's transaction:
- the counters of the dataset object: ``itemCount``, ``cleanItemCount``, the stored bytes and ``fields`` (the
  distinct top-level keys in order of first appearance, at most ``MAX_FIELDS``, none over ``MAX_FIELD_NAME``);
- the field statistics of a dataset with a ``fields`` schema (contract 4.6): the push's own (``Push.field_stats``)
  added to the kept ones (``add_field_stats``). A dataset whose first items came before statistics were kept has
  none (``field_stats`` says None) until ``keep_field_stats`` stores what a scan of its items found;
- an index of cell paths per block of ``BLOCK`` items (block ``b`` holds items ``b*BLOCK ... b*BLOCK+BLOCK-1``),
  the caller's opaque JSON lists merged with the caller's ``merge``: the header of a tabular export then needs no
  scan of the items (contract section 7), only of the partial blocks at the ends of its selection.

Reads go through an ``ItemSnapshot``: one read transaction held for the export's life, so ``info.item_count`` is
fixed when it opens, later pushes never appear and a delete of the dataset meanwhile does not cut it short.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from .base import StorageDamaged

BLOCK = 1000  # items per block of the path index
BATCH_BYTES = 8 * 1024 * 1024  # a batch of items read stops at about this many bytes (items may be 9 MiB each)
MAX_FIELDS = 2000  # the dataset object's `fields` lists at most this many keys (contract 4.3)
# ... and (decision: the contract is silent) none longer than this many characters, as export columns
# (datasets/columns.py MAX_COLUMN_NAME, Apify's documented limit): a key may be as long as a push body (9 MiB), and
# five pushes of one such key made GET /v2/datasets/{id} a 45 MB answer (2,000 of them: 18 GB), read and parsed
# again by every push.
MAX_FIELD_NAME = 200
# A push's items are stored several to a row ("packed rows"): a row holds the items ``idx - n + 1 .. idx`` of its
# push, their stored bytes joined by b"\n" (compact JSON never holds a raw newline byte). A row per item was most of
# a push's storage cost (SQLite 4.1 us an item of B-tree INSERT, against 1.4-1.7 for the same bytes as one
# record); a jsonl export passes whole rows through. But a read of a few items pays for its whole row (1.3x with
# rows of 100 items, 5-8x with 1,000 in the prototype, BENCHMARKS.md): rows stop at ITEMS_PER_ROW items and about
# ROW_BYTES bytes (an item bigger than that is a row alone).
ITEMS_PER_ROW = 128
ROW_BYTES = 256 * 1024

# merge(block_paths, pieces): the block's path list with each of ``pieces`` (lists of the same kind) merged in,
# in order. The HTTP layer passes openkvs.datasets.pipeline's merge; storage only stores the result as JSON.
MergePaths = Callable[[list[Any], Sequence[list[Any]]], list[Any]]


@dataclass(slots=True)
class DatasetInfo:
    """The counters of one dataset, exact as of the last committed push."""

    item_count: int = 0
    clean_item_count: int = 0
    bytes: int = 0  # sum of the stored item bytes
    fields: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Push:
    """One push, prepared by the HTTP layer: the items' compact JSON bytes in array order and what the counters
    and the path index need of them."""

    # compact JSON, so no raw newline byte: rows join items by one (packed_rows). The preparation makes them so
    # (api/items.py: _cpush.c, or orjson or the json module, each escaping a newline in a string and putting none
    # between tokens; tests/datasets/test_packed_items.py and the C fuzz check it)
    items: list[bytes]
    clean_count: int  # items with at least one top-level key not starting with '#'
    keys: list[str]  # the distinct top-level keys of the items, in order of first appearance
    paths: list[list[Any]]  # per item, its cell paths (opaque, JSON-serialisable)
    # the field statistics of these items alone ({name: {"min", "max", "nullCount", "emptyCount"}}), or None for a
    # dataset without a fields schema
    field_stats: dict[str, Any] | None = None


def merge_fields(fields: list[str], keys: Sequence[str]) -> list[str] | None:
    """``fields`` with the keys not yet in it appended (those of at most MAX_FIELD_NAME characters), up to
    MAX_FIELDS; None when nothing changes."""
    if len(fields) >= MAX_FIELDS:
        return None
    seen = set(fields)
    new = [k for k in keys if k not in seen and len(k) <= MAX_FIELD_NAME]
    if not new:
        return None
    return fields + new[: MAX_FIELDS - len(fields)]


def add_field_stats(kept: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Field statistics of two runs of items together (contract 4.6): counts added, the least min, the largest max
    (``None``: no value measured)."""
    out = {}
    for name, b in new.items():
        a = (kept or {}).get(name)
        if a is None:
            out[name] = dict(b)
            continue
        mins = [m for m in (a["min"], b["min"]) if m is not None]
        maxs = [m for m in (a["max"], b["max"]) if m is not None]
        out[name] = {
            "min": min(mins) if mins else None,
            "max": max(maxs) if maxs else None,
            "nullCount": a["nullCount"] + b["nullCount"],
            "emptyCount": a["emptyCount"] + b["emptyCount"],
        }
    return out


def blocks_of(start: int, count: int) -> list[tuple[int, int, int]]:
    """The blocks that items ``start .. start+count-1`` fall in: (block, first offset in the push, end offset)."""
    out = []
    i = 0
    while i < count:
        block = (start + i) // BLOCK
        end = min(count, (block + 1) * BLOCK - start)
        out.append((block, i, end))
        i = end
    return out


def distinct(pieces: Sequence[list[Any]]) -> list[list[Any]]:
    """``pieces`` (a push's path lists, one per item) without repeats of one list object, the first of each kept,
    in order: the items of one skeleton share their list (api/items.py prepare_push), and merging a list merged
    before adds nothing. (One pass in C, then the merge's own loop over a few lists, not over every item.)"""
    return list(dict(zip(map(id, pieces), pieces, strict=True)).values())


def packed_rows(items: Sequence[bytes], row_bytes: int = ROW_BYTES) -> list[tuple[int, bytes]]:
    """The rows of a push's ``items``, in order: (how many items, their bytes joined by b"\\n"), each row at most
    ITEMS_PER_ROW items and ``row_bytes`` bytes unless it is a single item (a backend may keep its rows smaller than
    ROW_BYTES: PostgreSQL's stay in the heap). ``items`` hold no raw newline byte (``Push.items``), so a row splits
    back into them; not checked here: a count of the rows' newlines was a tenth of SQLite's writer thread in a run
    of pushes."""
    rows = []
    i, count = 0, len(items)
    while i < count:
        run = items[i : i + ITEMS_PER_ROW]
        data = b"\n".join(run)
        take = len(run)
        if len(data) > row_bytes and take > 1:  # (rare with items of ~500 B: the longest run within row_bytes)
            take, size = 0, -1
            for item in run:
                size += len(item) + 1
                if take and size > row_bytes:
                    break
                take += 1
            data = b"\n".join(run[:take])
        rows.append((take, data))
        i += take
    return rows


# ``openkvs check``: per dataset, what its rows of items add up to (store id, items, last index, the items' bytes,
# rows whose first item does not follow the row before), one pass over the rows in the order of the primary key.
# Each row holds n - 1 newlines besides its items' bytes.
CHECK_ROWS_SQL = """
SELECT store_id, sum(n), max(idx), sum({length}(data) - n + 1), sum(CASE WHEN idx - n + 1 <> prev + 1 THEN 1 ELSE 0 END)
FROM (SELECT store_id, idx, n, data, coalesce(lag(idx) OVER (PARTITION BY store_id ORDER BY idx), -1) AS prev
      FROM dataset_items) r
GROUP BY store_id ORDER BY store_id
"""
CHECK_COUNTS_SQL = "SELECT store_id, item_count, bytes FROM dataset_counts ORDER BY store_id"


def dataset_problems(
    counts: dict[str, tuple[int, int]], rows: dict[str, tuple[int, int, int, int]], listed: int
) -> list[str]:
    """What ``openkvs check`` says of the datasets: ``counts`` their kept (item_count, bytes), ``rows`` what
    CHECK_ROWS_SQL found (items, last index, bytes, rows out of place), both by store id. A push stores its rows and
    its counts in one transaction, so any difference is damage (or a write by hand). At most ``listed`` problems one
    by one, then how many more."""
    problems = []
    for store_id in sorted(counts.keys() | rows.keys()):
        kept_items, kept_bytes = counts.get(store_id, (0, 0))
        items, last, size, misplaced = rows.get(store_id, (0, -1, 0, 0))
        if misplaced or last != items - 1:
            problems.append(f"dataset {store_id}: its items' indexes are not 0 to {items - 1} without gaps or overlaps")
        if kept_items != items:
            problems.append(f"dataset {store_id}: its counts say {kept_items} items, its rows hold {items}")
        if kept_bytes != size:
            problems.append(f"dataset {store_id}: its counts say {kept_bytes} bytes of items, its rows hold {size}")
    if len(problems) > listed:
        return [*problems[:listed], f"and {len(problems) - listed} more problems of datasets' items"]
    return problems


def row_part(data: bytes, first: int, last: int, lo: int, hi: int) -> bytes:
    """The items ``[lo, hi)`` (inside ``[first, last]``, not empty) of the packed row of items ``first .. last``
    holding ``data``, joined by b"\\n" as they are stored: the whole row untouched when it is all of it."""
    if lo > first:
        data = data.split(b"\n", lo - first)[-1]
    if hi <= last:
        data = data.rsplit(b"\n", last + 1 - hi)[0]
    return data


def items_missing(store_id: str, lo: int, hi: int) -> StorageDamaged:
    """What a read raises where a dataset's table holds fewer of the items ``[lo, hi)`` than its counts say (damage,
    or rows deleted by hand): a short read instead would end an export as a document that looks complete (contract
    section 7: a failure after the first byte cuts the transfer)."""
    return StorageDamaged(f"dataset {store_id}: its items {lo} to {hi - 1} are not all in its table")


async def range_batches(
    fetch: Callable[[int, int], Awaitable[list[bytes]]], lo: int, hi: int, desc: bool, store_id: str
) -> AsyncIterator[list[bytes]]:
    """The items of [lo, hi) in batches, each what ``fetch(lo, hi)`` reads of what is left of the range: from its
    start, or (``desc``) from its end. An empty batch is damage (``items_missing``)."""
    while lo < hi:
        rows = await fetch(lo, hi)
        if not rows:
            raise items_missing(store_id, lo, hi)
        if desc:
            hi -= len(rows)
        else:
            lo += len(rows)
        yield rows


# A piece of an export's items joined: its bytes, or (where ``joined`` was asked for ``buffers``) a list of buffers
# whose concatenation the bytes are. A backend gives its rows and the separators between them that way where joining
# them would be a copy of every byte (SQLite's jsonl pieces: a third of its storage read's CPU, half of it the page
# faults of each new 1 MiB object); the server writes such a list with one writev.
Piece = bytes | list[bytes | memoryview]


class ItemSnapshot(abc.ABC):
    """A consistent view of one dataset's items (see the module docstring). Open with ``DatasetStorage.snapshot``."""

    info: DatasetInfo  # the counters at the moment the snapshot was opened

    @abc.abstractmethod
    def items(self, start: int, stop: int, *, desc: bool = False, batch: int = BLOCK) -> AsyncIterator[list[bytes]]:
        """The stored bytes of the items with index in ``[start, stop)`` (clamped to the snapshot), in batches of
        at most ``batch`` items and about BATCH_BYTES (an item past that comes alone): ascending, or descending
        from ``stop - 1`` with ``desc``. A seek, never a scan."""

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
        """The items of ``items`` in order, in pieces of consecutive items joined by ``sep`` (never empty): what a
        json or jsonl export of unchanged items sends. A piece holds at most ``batch`` items and about ``size`` bytes
        (at most BATCH_BYTES): under twice that unless it is a single item (a backend that reads items of about
        the same size gives pieces of about ``size``). A backend may read them joined already, without an object
        per item. ``buffers``: a piece may come as a list of buffers (``Piece``), what the backend read, not joined."""
        # Here from items()' batches: a piece ends before the item that would take it past ``size`` (a single item
        # is a piece whatever its size), or at ``batch`` items.
        size = max(1, min(size, BATCH_BYTES))
        piece: list[bytes] = []
        length = 0
        async for rows in self.items(start, stop, desc=desc, batch=batch):
            for row in rows:
                if piece and (length + len(sep) + len(row) > size or len(piece) == batch):
                    yield sep.join(piece)
                    piece, length = [], 0
                length += len(row) + (len(sep) if piece else 0)
                piece.append(row)
        if piece:
            yield sep.join(piece)

    @abc.abstractmethod
    async def block_paths(self, first: int, last: int) -> list[tuple[int, list[Any]]]:
        """The distinct path lists of the blocks ``first`` to ``last`` inclusive, each with the first block that
        has it, ascending. (Merging a list equal to one merged before adds nothing, so this gives the same ordered
        union as every block in order; most blocks of a dataset have equal lists: 10,000 blocks are a few rows.)"""


class DatasetStorage(abc.ABC):
    """The items side of a backend (``storage.datasets``)."""

    @abc.abstractmethod
    async def push(self, store_id: str, push: Push, merge: MergePaths) -> int:
        """Store the items atomically after the dataset's last item; returns the index of the first. Moves the
        store's ``modified_at``. Durable once it returns. Raises NotFound for a missing store."""

    @abc.abstractmethod
    async def info(self, store_ids: Sequence[str], *, fields: bool = True) -> dict[str, DatasetInfo]:
        """The counters of each dataset named (a dataset without items, or a missing one: zeros). ``fields`` False:
        ``DatasetInfo.fields`` is [] and not read (the list of datasets shows none, and one dataset's may be 2,000
        keys of any length, megabytes, times up to 1,000 datasets a page)."""

    @abc.abstractmethod
    async def field_stats(self, store_id: str) -> tuple[int, dict[str, Any] | None]:
        """The dataset's item count and the field statistics kept over all its items (None: none kept, see the
        module docstring; a dataset without items has none either)."""

    @abc.abstractmethod
    async def keep_field_stats(self, store_id: str, count: int, stats: dict[str, Any]) -> bool:
        """Keep ``stats``, computed over the dataset's first ``count`` items, if it still has exactly that many
        and none are kept; True if kept. Later pushes add to them."""

    @abc.abstractmethod
    def snapshot(self, store_id: str) -> AbstractAsyncContextManager[ItemSnapshot]:
        """A consistent view of the dataset's items. Raises NotFound for a missing store."""


def selection_blocks(lo: int, hi: int) -> tuple[int, int] | None:
    """The whole blocks inside the index range ``[lo, hi)``: (first, last) inclusive, or None if there is none."""
    first = -(-lo // BLOCK)
    last = hi // BLOCK - 1
    return (first, last) if first <= last else None
