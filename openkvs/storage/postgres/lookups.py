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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

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
