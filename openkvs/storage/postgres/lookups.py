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
asyncpg's decoding of those 19 columns (three timestamps) was the biggest part of a record GET's look-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from ..base import StorageError, Store, StoreLookup
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
            asks = [a for a, futures in taken.items() if not all(f.done() for f in futures)]
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


# A held Store's version is sent for this long after it was read, then the store's columns are read again: the
# version is two 32-bit transaction IDs, which come round again after 4 billion transactions (no PostgreSQL runs
# that many in ten minutes), and a Store held longer could be taken for the rows' state after that many.
HELD_SECONDS = 600.0
_STORE_NCOLS = STORE_COLS.count(",") + 1


class StoreVersions:
    """store ID -> (the version of its rows, the Store made from them, when read): what a look-up by ID sends
    (``held``) and makes of its answer (``found``). Bounded: a flood of distinct stores starts over."""

    __slots__ = ("_kept",)
    LIMIT = 1024

    def __init__(self) -> None:
        self._kept: dict[str, tuple[int, Store, float]] = {}

    def held(self, store_id: str) -> tuple[int | None, Store | None]:
        """The version to send for ``store_id`` and the Store it stands for (None, None: none held)."""
        kept = self._kept.get(store_id)
        if kept is None or time.monotonic() - kept[2] > HELD_SECONDS:
            return None, None
        return kept[0], kept[1]

    def found(self, row: Any, first: int, with_record: bool, held: Store | None) -> StoreLookup:
        """A look-up's answer from its row, by position from ``first``: ``ver`` (NULL: the rows are those of
        ``held``, the Store whose version was sent), the store's columns, g_can_write, may_read, then the
        record's RECORD_COLS and its bytes (tables.record_from)."""
        ver = row[first]
        if ver is None:
            if held is None:  # only a version that was sent can match
                raise StorageError("a store look-up answered for a version it was not sent")
            store = held
        else:
            store = to_store(row)
            kept = self._kept
            if len(kept) >= self.LIMIT:
                kept.clear()
            kept[store.id] = (ver, store, time.monotonic())
        return lookup_answer(store, row, first + 1 + _STORE_NCOLS, with_record)


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
