"""Request queues on PostgreSQL: the tables (``QUEUE_TABLES``, one migration of tables.py) and ``PgQueues``, the
queue methods of ``PostgresStorage``. The rules are storage/queues.py's.

Every write is one transaction that first locks the queue's ``stores`` row (``FOR NO KEY UPDATE``, as record
writes do), so the writers of one queue, through any number of nodes, take turns: each sees everything the one
before it committed (READ COMMITTED takes a fresh snapshot per statement, after the lock was granted). That makes
a uniqueKey created exactly once and a locked request invisible to the next head/lock, on every node. The time of
a write is read from the database's clock after the lock was granted, so locks of all nodes use one clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ..base import NotFound
from ..queues import (
    HeadItem,
    NewRequest,
    QueueCounts,
    QueueHead,
    QueueState,
    QueueStorage,
    Registration,
    RequestHandledOrLocked,
    RequestNotFound,
    Slot,
    StoredRequest,
    after_update,
    owner_of,
    placed,
)
from ..queues import to_datetime as from_ms
from .connections import Database, deadlock_retried

T = TypeVar("T")

QUEUE_TABLES = """
CREATE TABLE queue_state (
    queue_id text PRIMARY KEY REFERENCES stores(id) ON DELETE CASCADE,
    total bigint NOT NULL,
    handled bigint NOT NULL,
    next_seq bigint NOT NULL,
    first_client text,
    had_multiple_clients boolean NOT NULL
);
CREATE TABLE queue_requests (
    queue_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    id text COLLATE "C" NOT NULL,
    unique_key text NOT NULL,
    url text NOT NULL,
    method text NOT NULL,
    retry_count bigint NOT NULL,
    body text NOT NULL,
    size integer NOT NULL,
    order_time bigint,
    order_seq bigint,
    lock_owner text,
    PRIMARY KEY (queue_id, id)
);
CREATE INDEX queue_requests_head ON queue_requests (queue_id, order_time, order_seq) WHERE order_time IS NOT NULL;
"""

_CLOCK = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_STATE_COLS = "total, handled, next_seq, first_client, had_multiple_clients"
_HEAD_COLS = "id, unique_key, url, method, retry_count, order_time"
# The available requests in head order: front-placed (-now <= time < 0), then back-placed (0 < time <= now).
_HEAD = f"""(SELECT {_HEAD_COLS}, order_seq FROM queue_requests
        WHERE queue_id = $1 AND order_time >= -$2::bigint AND order_time < 0 ORDER BY order_time, order_seq LIMIT $3)
    UNION ALL
    (SELECT {_HEAD_COLS}, order_seq FROM queue_requests
        WHERE queue_id = $1 AND order_time > 0 AND order_time <= $2 ORDER BY order_time, order_seq LIMIT $3)
    ORDER BY order_time, order_seq LIMIT $3"""
_ANY_LOCKED = """SELECT EXISTS(SELECT 1 FROM queue_requests WHERE queue_id = $1 AND order_time > $2)
    OR EXISTS(SELECT 1 FROM queue_requests WHERE queue_id = $1 AND order_time < -$2::bigint)"""
_SAVE_STATE = f"""INSERT INTO queue_state (queue_id, {_STATE_COLS}) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (queue_id) DO UPDATE SET total = EXCLUDED.total, handled = EXCLUDED.handled,
        next_seq = EXCLUDED.next_seq, first_client = EXCLUDED.first_client,
        had_multiple_clients = EXCLUDED.had_multiple_clients"""
_SET_SLOT = "UPDATE queue_requests SET order_time = $3, order_seq = $4, lock_owner = $5 WHERE queue_id = $1 AND id = $2"
_UPSERT = """INSERT INTO queue_requests (queue_id, id, unique_key, url, method, retry_count, body, size,
        order_time, order_seq, lock_owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (queue_id, id) DO UPDATE SET unique_key = EXCLUDED.unique_key, url = EXCLUDED.url,
        method = EXCLUDED.method, retry_count = EXCLUDED.retry_count, body = EXCLUDED.body, size = EXCLUDED.size,
        order_time = EXCLUDED.order_time, order_seq = EXCLUDED.order_seq, lock_owner = EXCLUDED.lock_owner"""


def _to_state(row: asyncpg.Record | None) -> QueueState:
    if row is None:
        return QueueState()
    return QueueState(row["total"], row["handled"], row["next_seq"], row["first_client"], row["had_multiple_clients"])


def _lock_ms(slot_time: int | None, now: int) -> int | None:
    return abs(slot_time) if slot_time is not None and abs(slot_time) > now else None


class PgQueues(QueueStorage):
    """The queue methods of PostgresStorage (which sets ``_db``)."""

    _db: Database

    def _given_now(self) -> int | None:
        return self.queue_clock() if self.queue_clock is not None else None

    async def _now(self, conn: asyncpg.Connection) -> int:
        given = self._given_now()
        return given if given is not None else int(await conn.fetchval(f"SELECT {_CLOCK}"))

    # -- the write transaction's frame -------------------------------------------------------------------------

    async def _write(
        self,
        queue_id: str,
        client_key: str | None,
        body: Callable[[asyncpg.Connection, QueueState, int], Awaitable[T]],
    ) -> T:
        """``body(conn, state, now)`` in a transaction that holds the queue's lock; it returns its result and sets
        ``state`` (written back after it). A refused call (an error) leaves no trace, so it does not count as a
        client either (section 7: only the calls that were carried out)."""

        async def txn(conn: asyncpg.Connection) -> T:
            if await conn.fetchval("SELECT 1 FROM stores WHERE id = $1 FOR NO KEY UPDATE", queue_id) is None:
                raise NotFound(f"request queue {queue_id}")
            given = self._given_now()
            row = await conn.fetchrow(
                f"SELECT coalesce($2::bigint, {_CLOCK}) AS now, s.* FROM (SELECT 1) one "
                f"LEFT JOIN queue_state s ON s.queue_id = $1",
                queue_id,
                given,
            )
            state = _to_state(row if row["total"] is not None else None)
            now = int(row["now"])
            state.note_client(client_key)
            result = await body(conn, state, now)
            await self._save(conn, queue_id, state)
            return result

        return await deadlock_retried("queue write", lambda: self._db.run(txn, tx=True))

    @staticmethod
    async def _save(conn: asyncpg.Connection, queue_id: str, state: QueueState) -> None:
        await conn.execute(
            _SAVE_STATE,
            queue_id, state.total, state.handled, state.next_seq, state.first_client, state.had_multiple_clients,
        )

    @staticmethod
    async def _modified(conn: asyncpg.Connection, queue_id: str, now: int, size_delta: int = 0) -> None:
        await conn.execute(
            "UPDATE stores SET modified_at = greatest(modified_at, $2), storage_bytes = storage_bytes + $3 "
            "WHERE id = $1",
            queue_id, from_ms(now), size_delta,
        )

    async def _note_client(self, queue_id: str, state: QueueState, client_key: str | None) -> QueueState:
        """For the reads that count as a client: write only when section 7's state changes (rarely)."""
        if not replace(state).note_client(client_key):
            return state

        async def txn(conn: asyncpg.Connection) -> QueueState:
            if await conn.fetchval("SELECT 1 FROM stores WHERE id = $1 FOR NO KEY UPDATE", queue_id) is None:
                return state
            fresh = await self._read_state(conn, queue_id)
            if fresh.note_client(client_key):
                await self._save(conn, queue_id, fresh)
            return fresh

        return await deadlock_retried("queue client", lambda: self._db.run(txn, tx=True))

    async def _read_state(self, conn: asyncpg.Connection, queue_id: str) -> QueueState:
        return _to_state(await conn.fetchrow(f"SELECT {_STATE_COLS} FROM queue_state WHERE queue_id = $1", queue_id))

    # -- the operations ----------------------------------------------------------------------------------------

    async def queue_counts(self, queue_ids: Sequence[str]) -> dict[str, QueueCounts]:
        found = {i: QueueCounts() for i in queue_ids}
        rows = await self._db.fetch(
            "SELECT queue_id, total, handled, had_multiple_clients FROM queue_state WHERE queue_id = ANY($1::text[])",
            list(found),
        )
        for row in rows:
            found[row[0]] = QueueCounts(row[1], row[2], row[3])
        return found

    async def add_requests(
        self, queue_id: str, requests: Sequence[NewRequest], *, forefront: bool, client_key: str | None
    ) -> list[Registration]:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> list[Registration]:
            ids = list(dict.fromkeys(r.id for r in requests))
            rows = await conn.fetch(
                "SELECT id, order_time IS NULL AS handled FROM queue_requests WHERE queue_id = $1 AND id = ANY($2)",
                queue_id, ids,
            )
            handled_by_id = {row["id"]: row["handled"] for row in rows}
            out = []
            new: list[tuple[Any, ...]] = []
            size_delta = 0
            for r in requests:
                if r.id in handled_by_id:
                    out.append(Registration(r.id, True, handled_by_id[r.id]))
                    continue
                slot = after_update(None, r.handled, state, now, forefront, client_key)
                size = len(r.body.encode())
                new.append((queue_id, r.id, r.unique_key, r.url, r.method, r.retry_count, r.body, size,
                            slot.time, slot.seq, slot.owner))
                size_delta += size
                handled_by_id[r.id] = r.handled
                out.append(Registration(r.id, False, False))
            if new:
                await conn.executemany(_UPSERT, new)
                await self._modified(conn, queue_id, now, size_delta)
            return out

        return await self._write(queue_id, client_key, body)

    async def get_request(self, queue_id: str, request_id: str) -> StoredRequest | None:
        row = await self._db.fetchrow(
            f"SELECT body, order_time, coalesce($3::bigint, {_CLOCK}) AS now FROM queue_requests "
            "WHERE queue_id = $1 AND id = $2",
            queue_id, request_id, self._given_now(),
        )
        if row is None:
            return None
        lock = _lock_ms(row["order_time"], row["now"])
        return StoredRequest(request_id, row["body"], from_ms(lock) if lock is not None else None)

    async def update_request(
        self, queue_id: str, request: NewRequest, *, forefront: bool, client_key: str | None
    ) -> Registration:
        r = request

        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> Registration:
            row = await conn.fetchrow(
                "SELECT order_time, order_seq, lock_owner, size FROM queue_requests WHERE queue_id = $1 AND id = $2",
                queue_id, r.id,
            )
            old = Slot(row[0], row[1], row[2]) if row is not None else None
            slot = after_update(old, r.handled, state, now, forefront, client_key)
            size = len(r.body.encode())
            await conn.execute(
                _UPSERT, queue_id, r.id, r.unique_key, r.url, r.method, r.retry_count, r.body, size,
                slot.time, slot.seq, slot.owner,
            )
            await self._modified(conn, queue_id, now, size - (row[3] if row is not None else 0))
            return Registration(r.id, old is not None, old is not None and old.handled)

        return await self._write(queue_id, client_key, body)

    async def delete_requests(
        self, queue_id: str, request_ids: Sequence[str], *, client_key: str | None
    ) -> list[str | None]:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> list[str | None]:
            rows = await conn.fetch(
                "DELETE FROM queue_requests WHERE queue_id = $1 AND id = ANY($2) "
                "RETURNING id, unique_key, order_time, size",
                queue_id, list(request_ids),
            )
            by_id = {row["id"]: row for row in rows}
            for row in rows:
                state.total -= 1
                if row["order_time"] is None:
                    state.handled -= 1
            if rows:
                await self._modified(conn, queue_id, now, -sum(row["size"] for row in rows))
            out: list[str | None] = []
            for request_id in request_ids:
                row = by_id.get(request_id)
                out.append(row["unique_key"] if row is not None else None)
            return out

        return await self._write(queue_id, client_key, body)

    async def list_requests(
        self,
        queue_id: str,
        *,
        after: str | None,
        limit: int,
        pending: bool = True,
        locked: bool = True,
        handled: bool = True,
        client_key: str | None,
    ) -> tuple[list[StoredRequest], bool]:
        cond = ""
        if not handled:
            if pending and locked:
                cond = " AND order_time IS NOT NULL"
            elif pending:
                cond = " AND abs(order_time) <= n.now"
            elif locked:
                cond = " AND abs(order_time) > n.now"
            else:
                cond = " AND FALSE"
        sql = (
            f"SELECT id, body, order_time, n.now FROM (SELECT coalesce($4::bigint, {_CLOCK}) AS now) n "
            f"JOIN queue_requests ON queue_id = $1 AND id > $2{cond} ORDER BY id LIMIT $3"
        )

        async def q(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], QueueState]:
            rows = await conn.fetch(sql, queue_id, after or "", limit + 1, self._given_now())
            return rows, await self._read_state(conn, queue_id)

        rows, state = await self._db.run(q, retry=True)
        items = []
        for row in rows[:limit]:
            lock = _lock_ms(row["order_time"], row["now"])
            items.append(StoredRequest(row["id"], row["body"], from_ms(lock) if lock is not None else None))
        await self._note_client(queue_id, state, client_key)
        return items, len(rows) > limit

    async def queue_head(self, queue_id: str, *, limit: int, client_key: str | None) -> QueueHead:
        async def q(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], datetime, QueueState]:
            modified = await conn.fetchval("SELECT modified_at FROM stores WHERE id = $1", queue_id)
            if modified is None:
                raise NotFound(f"request queue {queue_id}")
            now = await self._now(conn)
            rows = await conn.fetch(_HEAD, queue_id, now, limit)
            return rows, modified, await self._read_state(conn, queue_id)

        rows, modified, state = await self._db.run(q, retry=True)
        state = await self._note_client(queue_id, state, client_key)
        items = [HeadItem(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return QueueHead(items, modified, state.had_multiple_clients)

    async def lock_head(self, queue_id: str, *, limit: int, lock_secs: int, client_key: str | None) -> QueueHead:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> QueueHead:
            expiry = now + lock_secs * 1000
            items = []
            updates = []
            for row in await conn.fetch(_HEAD, queue_id, now, limit):
                slot = placed(state, expiry, row["order_time"] < 0, owner_of(client_key))
                updates.append((queue_id, row["id"], slot.time, slot.seq, slot.owner))
                items.append(HeadItem(row[0], row[1], row[2], row[3], row[4], from_ms(expiry)))
            if updates:
                await conn.executemany(_SET_SLOT, updates)
                await self._modified(conn, queue_id, now)
            has_locked = bool(items) or bool(await conn.fetchval(_ANY_LOCKED, queue_id, now))
            modified = await conn.fetchval("SELECT modified_at FROM stores WHERE id = $1", queue_id)
            return QueueHead(items, modified, state.had_multiple_clients, has_locked)

        return await self._write(queue_id, client_key, body)

    @staticmethod
    async def _slot(conn: asyncpg.Connection, queue_id: str, request_id: str) -> Slot:
        row = await conn.fetchrow(
            "SELECT order_time, order_seq, lock_owner FROM queue_requests WHERE queue_id = $1 AND id = $2",
            queue_id, request_id,
        )
        if row is None:
            raise RequestNotFound(request_id)
        return Slot(row[0], row[1], row[2])

    async def prolong_lock(
        self, queue_id: str, request_id: str, *, lock_secs: int, forefront: bool, client_key: str | None
    ) -> datetime:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> int:
            old = await self._slot(conn, queue_id, request_id)
            if old.handled:
                raise RequestHandledOrLocked(RequestHandledOrLocked.HANDLED)
            if old.held_by_other(now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            expiry = now + lock_secs * 1000
            slot = placed(state, expiry, forefront, owner_of(client_key))
            await conn.execute(_SET_SLOT, queue_id, request_id, slot.time, slot.seq, slot.owner)
            await self._modified(conn, queue_id, now)
            return expiry

        return from_ms(await self._write(queue_id, client_key, body))

    async def delete_lock(self, queue_id: str, request_id: str, *, forefront: bool, client_key: str | None) -> bool:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> bool:
            old = await self._slot(conn, queue_id, request_id)
            if old.held_by_other(now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            if not old.locked(now):
                return False
            slot = placed(state, now, forefront)  # locked by the caller: released and placed now
            await conn.execute(_SET_SLOT, queue_id, request_id, slot.time, slot.seq, slot.owner)
            await self._modified(conn, queue_id, now)
            return True

        return await self._write(queue_id, client_key, body)

    async def unlock_requests(self, queue_id: str, *, client_key: str | None) -> int:
        async def body(conn: asyncpg.Connection, state: QueueState, now: int) -> int:
            rows = await conn.fetch(
                "SELECT id, order_time FROM queue_requests WHERE queue_id = $1 AND lock_owner = $3 AND "
                "(order_time > $2 OR order_time < -$2::bigint) ORDER BY order_time, order_seq",
                queue_id, now, owner_of(client_key),
            )
            updates = []
            for row in rows:
                slot = placed(state, now, row["order_time"] < 0)
                updates.append((queue_id, row["id"], slot.time, slot.seq, slot.owner))
            if updates:
                await conn.executemany(_SET_SLOT, updates)
                await self._modified(conn, queue_id, now)
            return len(rows)

        return await self._write(queue_id, client_key, body)

