"""Store look-ups by ID in a burst asked together (issue 19): the access decision of every record GET is one
look-up (the store, the caller's grant, the record and its small bytes), and with 32 clients reading one store
the round trip, asyncpg's execute and PostgreSQL's own work per statement cost several times the rows
themselves.

A look-up that finds none of its shape (with or without a record, the kind, the general-access levels that let
anyone read) in flight is asked at once, alone, with the statement of before (``tables.LOOKUP``): a single
client's request takes the way it always took. Look-ups that arrive while one is in flight wait, and are then
asked together by one statement (``tables.LOOKUP_MANY``: one row per look-up from arrays, the same joins);
identical ones share a row. Each caller so gets an answer read by a query sent after it asked: what another node
committed before that is in it (read-your-writes across nodes holds, as with a query of its own). No answer is
kept after it is given.

``StoreVersions``: the Store each look-up by ID made, held with the version of the rows it came from, so that the
next look-up of that store gets NULLs for the store's columns when nothing changed (tables.STORE_VERSION):
asyncpg's decoding of those 19 columns (three timestamps) was the biggest part of a record GET's look-up. The
record likewise (tables.RECORD_VERSION): its timestamp alone cost asyncpg ~6k instructions to decode, and
PostgreSQL does not read an unchanged record's bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from ..base import RecordMeta, StorageError, Store, StoreLookup
from .tables import RECORD_NCOLS, STORE_COLS, record_from, to_store

A = TypeVar("A", bound=Hashable)
T = TypeVar("T")

BATCH_MAX = 256  # look-ups per statement; more wait for the next one


class Batched(Generic[A, T]):
    """Reads of one shape in a burst, asked together: ``one(ask)`` answers a read alone, ``many(asks)`` answers
    distinct reads in one query (the answers in the same order). A read that arrives while one is in flight
    waits for the next query, sent once that one answered."""

    def __init__(
        self, one: Callable[[A], Awaitable[T]], many: Callable[[Sequence[A]], Awaitable[Sequence[T]]]
    ) -> None:
        self._one = one
        self._many = many
        self._busy = False  # a query of this shape is in flight
        self._waiting: dict[A, list[asyncio.Future[T]]] = {}  # the reads for the next one, identical ones together
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, ask: A) -> T:
        if self._busy:
            done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            waiting = self._waiting.get(ask)
            if waiting is None:
                self._waiting[ask] = [done]
            else:
                waiting.append(done)
            return await done
        self._busy = True
        try:
            return await self._one(ask)
        finally:
            self._next()

    def _next(self) -> None:
        if self._waiting:
            task = asyncio.ensure_future(self._lead())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._busy = False

    async def _lead(self) -> None:
        waiting = self._waiting
        if len(waiting) <= BATCH_MAX:
            taken, self._waiting = waiting, {}
        else:  # the first BATCH_MAX in the order they came; the rest wait for the next query
            asks = list(waiting)
            taken = {a: waiting.pop(a) for a in asks[:BATCH_MAX]}
        try:
            # those whose callers are gone (cancelled) need no answer
            asks = [a for a, futures in taken.items() if _awaited(futures)]
            if not asks:
                return
            answers: Sequence[T] = [await self._one(asks[0])] if len(asks) == 1 else await self._many(asks)
        except Exception as exc:
            for futures in taken.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
        else:
            for ask, answer in zip(asks, answers, strict=True):
                for f in taken[ask]:
                    if not f.done():
                        f.set_result(answer)
        finally:
            self._next()

    async def aclose(self) -> None:
        """Wait for the queries in flight (before the pools close)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _awaited(futures: list[asyncio.Future[T]]) -> bool:
    """Whether a caller still waits for one of ``futures``. (A loop: ``all()`` of a generator that stops early
    leaves it suspended, and closing it cost ~2k instructions a look-up of a burst.)"""
    for f in futures:
        if not f.done():
            return True
    return False


# A held Store's version is sent for this long after it was read, then the store's columns are read again: the
# version is two 32-bit transaction IDs, which come round again after 4 billion transactions (no PostgreSQL runs
# that many in ten minutes), and a Store held longer could be taken for the rows' state after that many.
HELD_SECONDS = 600.0
_STORE_NCOLS = STORE_COLS.count(",") + 1


class StoreVersions:
    """What the look-ups by ID hold: store ID -> (the version of its rows, the Store made from them, when read),
    and (store ID, key) -> (the version of the record's row, the RecordMeta made from it, when read). A look-up
    sends the versions it holds (``held``) and makes its answer from what comes back (``found``): the rows' columns
    when they changed, else NULLs, and the held objects are used. Bounded: a flood of distinct stores, or of
    records, starts over; a record is held only with at most RECORD_BYTES of bytes (or none: bigger ones are
    read by read_blob), so the records hold at most RECORDS * RECORD_BYTES = 8 MiB, as SQLite's kept look-ups."""

    __slots__ = ("_kept", "_records")
    LIMIT = 1024
    RECORDS = 2048
    RECORD_BYTES = 4096

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, Store, float]] = {}
        self._records: dict[tuple[str, str], tuple[str, RecordMeta, float]] = {}

    def held(self, store_id: str, key: str | None = None, now: float | None = None) -> Held:
        """The versions to send for ``store_id`` (and its record ``key``) and what they stand for: (store
        version, Store, record version, RecordMeta), None where none is held. ``now``: time.monotonic(), read
        once for a burst's look-ups."""
        if now is None:
            now = time.monotonic()
        kept: tuple[Any, Any, float] | None = self._kept.get(store_id)
        if kept is None or now - kept[2] > HELD_SECONDS:
            kept = _NOTHING
        record: tuple[Any, Any, float] | None = self._records.get((store_id, key)) if key is not None else None
        if record is None or now - record[2] > HELD_SECONDS:
            record = _NOTHING
        return kept[0], kept[1], record[0], record[1]

    def found(self, row: Any, first: int, with_record: bool, held: Held) -> StoreLookup:
        """A look-up's answer from its row, by position from ``first``: ``ver`` (NULL: the rows are those of
        the held Store), the store's columns, g_can_write, may_read, then the record's columns (tables._record_cols:
        r_same, r_ver, RECORD_COLS and its bytes)."""
        ver = row[first]
        if ver is None:
            store = held[1]
            if store is None:  # only a version that was sent can match
                raise StorageError("a store look-up answered for a version it was not sent")
        else:
            store = to_store(row)
            kept = self._kept
            if len(kept) >= self.LIMIT:
                kept.clear()
            kept[store.id] = (ver, store, time.monotonic())
        end = first + 1 + _STORE_NCOLS
        if not (with_record and row[end + 1]):  # (the caller may not read the store: no record read)
            return StoreLookup(store, row[end])
        if row[end + 2]:  # r_same
            record = held[3]
            if record is None:
                raise StorageError("a record look-up answered for a version it was not sent")
        else:  # r_ver NULL: no such record
            record = self._record(store.id, row, end + 3) if row[end + 3] is not None else None
        return StoreLookup(store, row[end], record, True)

    def _record(self, store_id: str, row: Any, at: int) -> RecordMeta:
        """The record from its version (``at``), its columns and its bytes; held when it is small enough."""
        data = row[at + 1 + RECORD_NCOLS]
        record = record_from(row[at + 1 : at + 1 + RECORD_NCOLS], data)
        if data is None or len(data) <= self.RECORD_BYTES:
            records = self._records
            if len(records) >= self.RECORDS:
                records.clear()
            records[(store_id, record.key)] = (row[at], record, time.monotonic())
        return record


# what ``held`` takes for an entry it has none of (or one held too long)
_NOTHING: tuple[None, None, float] = (None, None, 0.0)
# (store version, Store, record version, RecordMeta), None where none is held
Held = tuple[str | None, Store | None, str | None, RecordMeta | None]


def lookup_answer(store: Store, row: Any, end: int, with_record: bool) -> StoreLookup:
    """A look-up's answer from its row past the store's columns (``end``, by position): g_can_write and may_read,
    then the record's RECORD_COLS and its bytes (tables.record_from): the same tail for look-ups by ID and by
    name."""
    found = StoreLookup(store, row[end])
    if with_record and row[end + 1]:
        found.record_read = True
        if row[end + 2] is not None:
            at = end + 2
            found.record = record_from(row[at : at + RECORD_NCOLS], row[at + RECORD_NCOLS])
    return found
