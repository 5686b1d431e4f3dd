"""Request queues on PostgreSQL: the tables (``QUEUE_TABLES``, one migration of tables.py) and ``PgQueues``, the
queue methods of ``PostgresStorage``. The rules are storage/queues.py's.

Every write is one transaction that first locks the queue's ``stores`` row (``FOR NO KEY UPDATE``, as record
writes do), so the writers of one queue, through any number of nodes, take turns: each sees everything the one
before it committed (READ COMMITTED takes a fresh snapshot per statement, after the lock was granted). That makes
a uniqueKey created exactly once and a locked request invisible to the next head/lock, on every node. The time of
a write is read from the database's clock after the lock was granted, so locks of all nodes use one clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ..base import NotFound
from ..queues import (
    LIST_PAGE_BYTES,
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
# The same, fewer once their uniqueKeys and urls reach $4 bytes (the first always comes): a running sum of the
# lengths of the rows before each, which PostgreSQL reads from the values' headers; the rows past it are not sent.
_HEAD_CUT = f"""SELECT {_HEAD_COLS} FROM (SELECT *, coalesce(sum(octet_length(unique_key) + octet_length(url))
        OVER (ORDER BY order_time, order_seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM ({_HEAD}) head) cut WHERE before < $4 ORDER BY order_time, order_seq"""
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


_OPEN = f"""SELECT coalesce($2::bigint, {_CLOCK}) AS now, st.modified_at, s.total, s.handled, s.next_seq,
        s.first_client, s.had_multiple_clients
    FROM stores st LEFT JOIN queue_state s ON s.queue_id = st.id WHERE st.id = $1"""
_OPEN_ONE = f"""SELECT coalesce($2::bigint, {_CLOCK}) AS now, st.modified_at, s.total, s.handled, s.next_seq,
        s.first_client, s.had_multiple_clients, r.id IS NOT NULL AS present, r.order_time, r.order_seq, r.lock_owner,
        r.size
    FROM stores st LEFT JOIN queue_state s ON s.queue_id = st.id LEFT JOIN queue_requests r ON r.queue_id = st.id
        AND r.id = $3 WHERE st.id = $1"""


def _finish(upsert: bool, moved: bool) -> str:
    """The statement that ends a write: the state ($1-$6), the request upserted ($10-$19) or moved ($10-$13), and,
    when the queue changed ($9), its modifiedAt ($7) and storageBytes (+$8), returning the new modifiedAt."""
    parts = [_SAVE_STATE.replace("INSERT", "saved AS (INSERT", 1) + ")"]
    if upsert:
        parts.append("req AS (" + _UPSERT.replace("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                                                  "VALUES ($1, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)")
                     + ")")
    if moved:
        parts.append("moved AS (UPDATE queue_requests SET order_time = $11, order_seq = $12, lock_owner = $13 "
                     "WHERE queue_id = $1 AND id = $10)")
    return ("WITH " + ", ".join(parts) + " UPDATE stores SET modified_at = greatest(modified_at, $7), "
            "storage_bytes = storage_bytes + $8::bigint WHERE id = $1 AND $9::boolean RETURNING modified_at")


_FINISH = {(u, m): _finish(u, m) for u in (False, True) for m in (False, True) if not (u and m)}


@dataclass(slots=True)
class _Txn:
    """One write transaction: what was read with its state, and what the body leaves to write with it."""

    now: int
    modified_at: datetime  # the queue's, read with the state; after the write, the new one if it changed
    old: Slot | None = None  # the request named by ``request_id`` (None: there is none)
    old_size: int = 0
    changed: bool = False  # the queue's requests or locks changed: modifiedAt moves, storageBytes by size_delta
    size_delta: int = 0
    upsert: tuple[Any, ...] | None = None  # a request row to write (id, unique_key, ..., lock_owner)
    moved: tuple[Any, ...] | None = None  # a request placed anew (id, order_time, order_seq, lock_owner)
    has_locked: bool = False  # head/lock: whether a live lock exists (read when it locked nothing)


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
        body: Callable[[asyncpg.Connection, QueueState, _Txn], Awaitable[T]],
        request_id: str | None = None,
    ) -> T:
        """``body(conn, state, txn)`` in a transaction that holds the queue's lock; it returns its result, sets
        ``state`` and notes in ``txn`` what to write with it. Round trips, each while the lock is held: the lock;
        the clock, the state and (``request_id``) that request's row, in one statement read after the lock was
        granted (READ COMMITTED: a fresh snapshot per statement); the body's own; then one statement that writes
        the state, the request of ``txn.upsert``/``txn.moved`` and the queue's ``stores`` row together. A refused
        call (an error) leaves no trace, so it does not count as a client either (section 7: only the calls that
        were carried out)."""

        async def txn(conn: asyncpg.Connection) -> T:
            if await conn.fetchval("SELECT 1 FROM stores WHERE id = $1 FOR NO KEY UPDATE", queue_id) is None:
                raise NotFound(f"request queue {queue_id}")
            given = self._given_now()
            if request_id is None:
                row = await conn.fetchrow(_OPEN, queue_id, given)
            else:
                row = await conn.fetchrow(_OPEN_ONE, queue_id, given, request_id)
            state = _to_state(row if row["total"] is not None else None)
            t = _Txn(int(row["now"]), row["modified_at"])
            if request_id is not None and row["present"]:
                t.old = Slot(row["order_time"], row["order_seq"], row["lock_owner"])
                t.old_size = row["size"]
            state.note_client(client_key)
            result = await body(conn, state, t)
            sql, extra = _FINISH[t.upsert is not None, t.moved is not None], t.upsert or t.moved or ()
            modified = await conn.fetchval(
                sql, queue_id, state.total, state.handled, state.next_seq, state.first_client,
                state.had_multiple_clients, from_ms(t.now), t.size_delta, t.changed, *extra,
            )
            if modified is not None:
                t.modified_at = modified
            return result

        return await deadlock_retried("queue write", lambda: self._db.run(txn, tx=True))

    @staticmethod
    async def _save(conn: asyncpg.Connection, queue_id: str, state: QueueState) -> None:
        await conn.execute(
            _SAVE_STATE,
            queue_id, state.total, state.handled, state.next_seq, state.first_client, state.had_multiple_clients,
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
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> list[Registration]:
            now = t.now
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
            if len(new) == 1:
                t.upsert = new[0][1:]  # written with the state
            elif new:
                await conn.executemany(_UPSERT, new)
            t.changed, t.size_delta = bool(new), size_delta
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

        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> Registration:
            old = t.old
            slot = after_update(old, r.handled, state, t.now, forefront, client_key)
            size = len(r.body.encode())
            t.upsert = (r.id, r.unique_key, r.url, r.method, r.retry_count, r.body, size,
                        slot.time, slot.seq, slot.owner)
            t.changed, t.size_delta = True, size - t.old_size
            return Registration(r.id, old is not None, old is not None and old.handled)

        return await self._write(queue_id, client_key, body, request_id=r.id)

    async def delete_requests(
        self, queue_id: str, request_ids: Sequence[str], *, client_key: str | None
    ) -> list[str | None]:
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> list[str | None]:
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
            t.changed, t.size_delta = bool(rows), -sum(row["size"] for row in rows)
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
        # The bodies stop at the page's byte budget (the bytes of the rows before each, a running sum of lengths
        # PostgreSQL reads from the values' headers): the rows past it come without one, telling that more follow.
        sql = (
            "SELECT id, CASE WHEN before < $5 THEN body END AS body, order_time, now FROM ("
            "SELECT id, body, order_time, n.now, coalesce(sum(octet_length(body)) OVER "
            "(ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before "
            f"FROM (SELECT coalesce($4::bigint, {_CLOCK}) AS now) n "
            f"JOIN queue_requests ON queue_id = $1 AND id > $2{cond} ORDER BY id LIMIT $3) page ORDER BY id"
        )

        async def q(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], QueueState]:
            rows = await conn.fetch(sql, queue_id, after or "", limit + 1, self._given_now(), LIST_PAGE_BYTES)
            return rows, await self._read_state(conn, queue_id)

        rows, state = await self._db.run(q, retry=True)
        items = []
        for row in rows[:limit]:
            if row["body"] is None:
                break
            lock = _lock_ms(row["order_time"], row["now"])
            items.append(StoredRequest(row["id"], row["body"], from_ms(lock) if lock is not None else None))
        await self._note_client(queue_id, state, client_key)
        return items, len(rows) > len(items)

    async def queue_head(self, queue_id: str, *, limit: int, client_key: str | None) -> QueueHead:
        async def q(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], datetime, QueueState]:
            modified = await conn.fetchval("SELECT modified_at FROM stores WHERE id = $1", queue_id)
            if modified is None:
                raise NotFound(f"request queue {queue_id}")
            now = await self._now(conn)
            rows = await conn.fetch(_HEAD_CUT, queue_id, now, limit, LIST_PAGE_BYTES)
            return rows, modified, await self._read_state(conn, queue_id)

        rows, modified, state = await self._db.run(q, retry=True)
        state = await self._note_client(queue_id, state, client_key)
        items = [HeadItem(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return QueueHead(items, modified, state.had_multiple_clients)

    async def lock_head(self, queue_id: str, *, limit: int, lock_secs: int, client_key: str | None) -> QueueHead:
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> list[HeadItem]:
            expiry = t.now + lock_secs * 1000
            items = []
            updates = []
            for row in await conn.fetch(_HEAD, queue_id, t.now, limit):
                slot = placed(state, expiry, row["order_time"] < 0, owner_of(client_key))
                updates.append((queue_id, row["id"], slot.time, slot.seq, slot.owner))
                items.append(HeadItem(row[0], row[1], row[2], row[3], row[4], from_ms(expiry)))
            if len(updates) == 1:
                t.moved = updates[0][1:]  # written with the state
            elif updates:
                await conn.executemany(_SET_SLOT, updates)
            t.changed = bool(items)
            if not items:
                t.has_locked = bool(await conn.fetchval(_ANY_LOCKED, queue_id, t.now))
            return items

        async def locked(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> tuple[list[HeadItem], _Txn, bool]:
            return await body(conn, state, t), t, state.had_multiple_clients

        items, t, multiple = await self._write(queue_id, client_key, locked)
        return QueueHead(items, t.modified_at, multiple, bool(items) or t.has_locked)  # modifiedAt as written

    async def prolong_lock(
        self, queue_id: str, request_id: str, *, lock_secs: int, forefront: bool, client_key: str | None
    ) -> datetime:
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> int:
            old = t.old
            if old is None:
                raise RequestNotFound(request_id)
            if old.handled:
                raise RequestHandledOrLocked(RequestHandledOrLocked.HANDLED)
            if old.held_by_other(t.now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            expiry = t.now + lock_secs * 1000
            slot = placed(state, expiry, forefront, owner_of(client_key))
            t.moved, t.changed = (request_id, slot.time, slot.seq, slot.owner), True
            return expiry

        return from_ms(await self._write(queue_id, client_key, body, request_id=request_id))

    async def delete_lock(self, queue_id: str, request_id: str, *, forefront: bool, client_key: str | None) -> bool:
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> bool:
            old = t.old
            if old is None:
                raise RequestNotFound(request_id)
            if old.held_by_other(t.now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            if not old.locked(t.now):
                return False
            slot = placed(state, t.now, forefront)  # locked by the caller: released and placed now
            t.moved, t.changed = (request_id, slot.time, slot.seq, slot.owner), True
            return True

        return await self._write(queue_id, client_key, body, request_id=request_id)

    async def unlock_requests(self, queue_id: str, *, client_key: str | None) -> int:
        async def body(conn: asyncpg.Connection, state: QueueState, t: _Txn) -> int:
            now = t.now
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
            t.changed = bool(updates)
            return len(rows)

        return await self._write(queue_id, client_key, body)

