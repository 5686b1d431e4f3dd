"""Group commit of small record writes on PostgreSQL (issue 19), and identical reads in a burst asked once
(``SharedReads``, at the end).

A small record (one chunk) is written by one statement, its own transaction (``tables.UPSERT_SMALL``), which
locks the store row and holds that lock until its commit: the writes of one store take turns, one commit (one WAL
flush) each. ``Groups`` lets the writes of one store that arrive while one of them is being committed wait
together, and then writes them all with one statement (``tables.UPSERT_GROUP``): one round trip, one lock of the
store row, one commit. Each is answered only after that commit, so the promise is the one it was: a 201 means the
write is committed (``synchronous_commit`` as the server has it).

- A write that finds no write of its store in flight goes at once, alone, with the statement of before: a single
  client's PUT takes the path it always took.
- A group holds each key at most once (``ON CONFLICT DO UPDATE`` can't touch a row twice in one statement); a
  second write to a key waits for the next group, so the writes of a key commit in the order they arrived.
- Isolation: should the group's statement fail for anything but a lost connection (a value PostgreSQL refuses),
  each write of the group is tried again alone, so that only the bad one fails; a group that deadlocks is
  retried as a whole (``deadlock_retried``). After a lost connection nobody knows whether the group committed:
  each of its writes gets ``StorageUnavailable`` (503), as a single write would.
- Groups are per store and per process: the store row is what writers wait for anyway, so the groups of other
  stores go on side by side, and the groups of several processes or nodes take turns on the row lock as single
  writes did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import asyncpg
from asyncpg import exceptions as pgx

from ..base import NotFound
from .connections import CONNECTION_ERRORS, Database, deadlock_retried, unavailable
from .tables import UPSERT_GROUP, UPSERT_SMALL

T = TypeVar("T")

GROUP_MAX_WRITES = 256
GROUP_MAX_BYTES = 8 * 1024 * 1024  # of record bytes in one statement (a write of more goes alone)


class _Write:
    """A small record write waiting for its store's next group: the arguments of UPSERT_SMALL ($1..$9)."""

    __slots__ = ("args", "done")

    def __init__(self, args: tuple[Any, ...], done: asyncio.Future[asyncpg.Record]) -> None:
        self.args = args
        self.done = done


class Groups:
    """The writes of small records of one process, grouped per store (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # store ID -> the writes waiting for the store's next group; a store is in it while one of its writes
        # or groups is in flight (the one who leads answers those that queued meanwhile)
        self._waiting: dict[str, list[_Write]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, args: tuple[Any, ...]) -> asyncpg.Record | None:
        """Write the small record of UPSERT_SMALL's arguments ``args`` (store ID first) and return its row once
        committed (None: no such store). Raises as a write alone would."""
        store_id = args[0]
        queue = self._waiting.get(store_id)
        if queue is not None:  # a write of this store is in flight: wait for the next group
            done: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
            queue.append(_Write(args, done))
            return await done
        self._waiting[store_id] = []
        try:
            return await write_one(self._db, args)
        finally:
            self._next(store_id)

    def _next(self, store_id: str) -> None:
        """After a write or group of ``store_id``: lead the writes that queued meanwhile, in a task of their own
        (the request that led the last one gets its answer now)."""
        if self._waiting.get(store_id):
            task = asyncio.ensure_future(self._lead(store_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._waiting.pop(store_id, None)

    async def _lead(self, store_id: str) -> None:
        queue = self._waiting[store_id]
        group: list[_Write] = []
        later: list[_Write] = []
        keys: set[str] = set()
        size = 0
        for w in queue:
            key, data = w.args[1], w.args[8]
            n = len(data) if data is not None else 0
            if w.done.done():  # its request was cancelled: nobody waits for it, nothing to write
                continue
            if key in keys or len(group) >= GROUP_MAX_WRITES or (group and size + n > GROUP_MAX_BYTES):
                later.append(w)
                continue
            keys.add(key)
            size += n
            group.append(w)
        self._waiting[store_id] = later
        try:
            await self._commit(group)
        finally:
            self._next(store_id)

    async def _commit(self, group: list[_Write]) -> None:
        """Write ``group`` and answer each of its writes (with its row, or the error it alone would get)."""
        if not group:
            return
        if len(group) == 1:
            await _answer(group[0], lambda: write_one(self._db, group[0].args))
            return
        try:
            rows = await write_group(self._db, [w.args for w in group])
        except pgx.PostgresError:  # a value PostgreSQL refused: each write alone, for its own outcome
            for w in group:
                await _answer(w, lambda w=w: write_one(self._db, w.args))  # type: ignore[misc]
            return
        except Exception as exc:  # the connection lost, deadlocked again and again (503): the same for every write
            for w in group:
                if not w.done.done():
                    w.done.set_exception(exc)
            return
        for w in group:
            if not w.done.done():
                w.done.set_result(rows.get(w.args[1]))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Wait for the groups in flight (before the pools close)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _answer(w: _Write, attempt: Callable[[], Awaitable[asyncpg.Record | None]]) -> None:
    try:
        row = await attempt()
    except Exception as exc:
        if not w.done.done():
            w.done.set_exception(exc)
        return
    if not w.done.done():
        w.done.set_result(row)  # type: ignore[arg-type]


async def write_one(db: Database, args: tuple[Any, ...]) -> asyncpg.Record | None:
    """One small record by UPSERT_SMALL, its own transaction (retried after a deadlock)."""
    try:
        return await deadlock_retried("record write", lambda: db.run(lambda c: c.fetchrow(UPSERT_SMALL, *args)))
    except pgx.ForeignKeyViolationError:
        raise NotFound(f"store {args[0]} not found") from None


async def write_group(db: Database, group: list[tuple[Any, ...]]) -> dict[str, asyncpg.Record]:
    """Small records of one store, each key once, by one statement (UPSERT_GROUP): key -> its row; a key without
    a row was not written (the store is gone)."""
    store_id, chunk_size = group[0][0], group[0][7]
    columns = (
        [a[1] for a in group],  # key
        [a[2] for a in group],  # content_type
        [a[3] for a in group],  # content_encoding
        [a[4] for a in group],  # size
        [a[5] for a in group],  # decoded_size
        [a[6] for a in group],  # crc32
        [a[8] for a in group],  # data
    )

    async def attempt() -> list[asyncpg.Record]:
        return await db.run(lambda c: c.fetch(UPSERT_GROUP, store_id, chunk_size, *columns))

    try:
        rows = await deadlock_retried("record write", attempt)
    except CONNECTION_ERRORS as exc:  # (db.run translates these; kept for a failure outside it)
        raise unavailable(exc) from exc
    return {r["key"]: r for r in rows}


class SharedReads:
    """Identical reads in a burst asked once. A read that arrives while the same one (the same query, the same
    arguments) is in flight waits for the next one, which is sent after the one in flight answered, and so after
    every read waiting for it arrived; all that waited share its answer. Each caller so gets an answer read after
    it asked: what another node committed before that is in it (read-your-writes across nodes holds), as with a
    query of its own. The answers are value objects, shared as storage/base.py's VALUE TYPES allow.

    Used for the store look-up of an access decision (``look_up_store``): 32 clients writing to one store asked
    the same question 32 times per round of group commits, and after group commit that look-up was most of a
    PUT's CPU."""

    def __init__(self) -> None:
        # the arguments of a read in flight -> the callers waiting for the next one
        self._waiting: dict[Hashable, list[asyncio.Future[Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        waiting = self._waiting.get(key)
        if waiting is not None:
            done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            waiting.append(done)
            return await done
        self._waiting[key] = []
        try:
            return await fn()
        finally:
            self._next(key, fn)

    def _next(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> None:
        if self._waiting.get(key):
            task = asyncio.ensure_future(self._lead(key, fn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._waiting.pop(key, None)

    async def _lead(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> None:
        waiting, self._waiting[key] = self._waiting[key], []
        try:
            result = await fn()
        except Exception as exc:
            for done in waiting:
                if not done.done():
                    done.set_exception(exc)
        else:
            for done in waiting:
                if not done.done():
                    done.set_result(result)
        finally:
            self._next(key, fn)

    async def aclose(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
