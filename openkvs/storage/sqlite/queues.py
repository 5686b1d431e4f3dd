"""Request queues on SQLite: the tables (``QUEUE_TABLES``, one migration step of tables.py) and ``SQLiteQueues``,
the queue methods of ``SQLiteStorage``. The rules are storage/queues.py's; every write is one transaction in the
writer thread (or, across processes on one database, one ``BEGIN IMMEDIATE``), so the writers of a queue never
interleave: a uniqueKey is created once and a request locked by one call is not seen as available by the next."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

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
    utf8_len,
)
from ..queues import (
    to_datetime as from_ms,
)
from .connections import Database

T = TypeVar("T")
SMALL_WRITE_CHARS = 64 * 1024  # request bodies up to this much are written on the event loop (see _queue_write)

# Requests of a queue by ID (the primary key; listings are ID ranges), and the pending ones by placement: the head
# is two ranges of ``queue_requests_head`` (see storage/queues.py). ``size``: bytes of ``body`` (storageBytes).
QUEUE_TABLES = """
CREATE TABLE IF NOT EXISTS queue_state (
    queue_id              TEXT PRIMARY KEY REFERENCES stores(id) ON DELETE CASCADE,
    total                 INTEGER NOT NULL,
    handled               INTEGER NOT NULL,
    next_seq              INTEGER NOT NULL,
    first_client          TEXT,
    had_multiple_clients  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_requests (
    queue_id     TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    id           TEXT NOT NULL COLLATE BINARY,
    unique_key   TEXT NOT NULL,
    url          TEXT NOT NULL,
    method       TEXT NOT NULL,
    retry_count  INTEGER NOT NULL,
    body         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    order_time   INTEGER,
    order_seq    INTEGER,
    lock_owner   TEXT,
    PRIMARY KEY (queue_id, id)
);
CREATE INDEX IF NOT EXISTS queue_requests_head ON queue_requests(queue_id, order_time, order_seq)
    WHERE order_time IS NOT NULL;
"""

_HEAD_COLS = "id, unique_key, url, method, retry_count, order_time"
# The available requests in head order: front-placed (-now <= time < 0), then back-placed (0 < time <= now).
_FRONT = (
    f"SELECT {_HEAD_COLS} FROM queue_requests WHERE queue_id = ? AND order_time >= ? AND order_time < 0 "
    "ORDER BY order_time, order_seq LIMIT ?"
)
_BACK = (
    f"SELECT {_HEAD_COLS} FROM queue_requests WHERE queue_id = ? AND order_time > 0 AND order_time <= ? "
    "ORDER BY order_time, order_seq LIMIT ?"
)
_ANY_LOCKED = (
    "SELECT EXISTS(SELECT 1 FROM queue_requests WHERE queue_id = ?1 AND order_time > ?2)"
    " OR EXISTS(SELECT 1 FROM queue_requests WHERE queue_id = ?1 AND order_time < -?2)"
)
_STATE_COLS = "total, handled, next_seq, first_client, had_multiple_clients"
_SAVE_STATE = f"""INSERT INTO queue_state(queue_id, {_STATE_COLS}) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT(queue_id) DO UPDATE SET total = excluded.total, handled = excluded.handled,
        next_seq = excluded.next_seq, first_client = excluded.first_client,
        had_multiple_clients = excluded.had_multiple_clients"""
_SET_SLOT = "UPDATE queue_requests SET order_time = ?, order_seq = ?, lock_owner = ? WHERE queue_id = ? AND id = ?"


def _to_state(row: Sequence[Any] | None) -> QueueState:
    if row is None:
        return QueueState()
    return QueueState(row[0], row[1], row[2], row[3], bool(row[4]))


def _read_state(conn: sqlite3.Connection, queue_id: str) -> QueueState:
    return _to_state(conn.execute(f"SELECT {_STATE_COLS} FROM queue_state WHERE queue_id = ?", (queue_id,)).fetchone())


def _head(
    conn: sqlite3.Connection, queue_id: str, now: int, limit: int, budget: int | None = None
) -> list[tuple[Any, ...]]:
    """The first ``limit`` available requests; with a ``budget``, fewer once their uniqueKeys and urls reach it
    (in UTF-8 bytes, as on PostgreSQL), the rows read one at a time so that none past it is."""
    if budget is None:
        rows = conn.execute(_FRONT, (queue_id, -now, limit)).fetchall()
        if len(rows) < limit:
            rows += conn.execute(_BACK, (queue_id, now, limit - len(rows))).fetchall()
        return rows
    rows = []
    size = 0
    for sql, at in ((_FRONT, -now), (_BACK, now)):
        cursor = conn.execute(sql, (queue_id, at, limit - len(rows)))
        for row in cursor:
            if size >= budget:
                break
            rows.append(row)
            size += utf8_len(row[1]) + utf8_len(row[2])
        cursor.close()
        if len(rows) == limit or size >= budget:
            break
    return rows


def _lock_ms(slot_time: int | None, now: int) -> int | None:
    return abs(slot_time) if slot_time is not None and abs(slot_time) > now else None


class SQLiteQueues(QueueStorage):
    """The queue methods of SQLiteStorage (which sets ``_db``)."""

    _db: Database

    def _queue_write(self, txn: Callable[[sqlite3.Connection], T], body_chars: int) -> Awaitable[T]:
        """A write of a bounded number of requests (at most a batch of 25): on the event loop's thread when the
        writer is idle and the bodies are small (Database.write_small), else through the writer thread."""
        if body_chars <= SMALL_WRITE_CHARS:
            return self._db.write_small(txn)
        return self._db.write(txn)

    def _now(self) -> int:
        return self.queue_clock() if self.queue_clock is not None else time.time_ns() // 1_000_000

    # -- the write transaction's frame -------------------------------------------------------------------------

    def _begin(self, conn: sqlite3.Connection, queue_id: str, client_key: str | None) -> tuple[QueueState, int]:
        if conn.execute("SELECT 1 FROM stores WHERE id = ?", (queue_id,)).fetchone() is None:
            raise NotFound(f"request queue {queue_id}")
        state = _read_state(conn, queue_id)
        state.note_client(client_key)
        return state, self._now()

    @staticmethod
    def _end(
        conn: sqlite3.Connection, queue_id: str, state: QueueState, now: int, *, changed: bool, size_delta: int = 0
    ) -> None:
        conn.execute(
            _SAVE_STATE,
            (queue_id, state.total, state.handled, state.next_seq, state.first_client, int(state.had_multiple_clients)),
        )
        if changed:
            conn.execute(
                "UPDATE stores SET modified_at = max(modified_at, ?), storage_bytes = storage_bytes + ? WHERE id = ?",
                (now, size_delta, queue_id),
            )

    async def _note_client(self, queue_id: str, state: QueueState, client_key: str | None) -> QueueState:
        """For the reads that count as a client: write only when section 7's state changes (rarely)."""
        if not replace(state).note_client(client_key):
            return state

        def txn(conn: sqlite3.Connection) -> QueueState:
            fresh = _read_state(conn, queue_id)
            if fresh.note_client(client_key) and conn.execute(
                "SELECT 1 FROM stores WHERE id = ?", (queue_id,)
            ).fetchone():
                self._end(conn, queue_id, fresh, 0, changed=False)
            return fresh

        return await self._db.write(txn)

    # -- the operations ----------------------------------------------------------------------------------------

    async def queue_counts(self, queue_ids: Sequence[str]) -> dict[str, QueueCounts]:
        ids = list(dict.fromkeys(queue_ids))

        def q(conn: sqlite3.Connection) -> dict[str, QueueCounts]:
            found = {i: QueueCounts() for i in ids}
            for n in range(0, len(ids), 500):
                part = ids[n : n + 500]
                sql = (
                    f"SELECT queue_id, total, handled, had_multiple_clients FROM queue_state "
                    f"WHERE queue_id IN ({','.join('?' * len(part))})"
                )
                for row in conn.execute(sql, part):
                    found[row[0]] = QueueCounts(row[1], row[2], bool(row[3]))
            return found

        return await self._db.point_read(q)

    async def add_requests(
        self, queue_id: str, requests: Sequence[NewRequest], *, forefront: bool, client_key: str | None
    ) -> list[Registration]:
        def txn(conn: sqlite3.Connection) -> list[Registration]:
            state, now = self._begin(conn, queue_id, client_key)
            ids = list(dict.fromkeys(r.id for r in requests))
            handled_by_id: dict[str, bool] = {}
            for n in range(0, len(ids), 500):
                part = ids[n : n + 500]
                sql = (
                    f"SELECT id, order_time IS NULL FROM queue_requests WHERE queue_id = ? "
                    f"AND id IN ({','.join('?' * len(part))})"
                )
                handled_by_id.update((row[0], bool(row[1])) for row in conn.execute(sql, (queue_id, *part)))
            out = []
            size_delta = 0
            for r in requests:
                if r.id in handled_by_id:
                    out.append(Registration(r.id, True, handled_by_id[r.id]))
                    continue
                slot = after_update(None, r.handled, state, now, forefront, client_key)
                size = len(r.body.encode())
                conn.execute(
                    "INSERT INTO queue_requests(queue_id, id, unique_key, url, method, retry_count, body, size, "
                    "order_time, order_seq, lock_owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (queue_id, r.id, r.unique_key, r.url, r.method, r.retry_count, r.body, size,
                     slot.time, slot.seq, slot.owner),
                )
                size_delta += size
                handled_by_id[r.id] = r.handled
                out.append(Registration(r.id, False, False))
            self._end(conn, queue_id, state, now, changed=size_delta > 0, size_delta=size_delta)
            return out

        return await self._queue_write(txn, sum(len(r.body) for r in requests))

    async def get_request(self, queue_id: str, request_id: str) -> StoredRequest | None:
        now = self._now()

        def q(conn: sqlite3.Connection) -> StoredRequest | None:
            row = conn.execute(
                "SELECT body, order_time FROM queue_requests WHERE queue_id = ? AND id = ?", (queue_id, request_id)
            ).fetchone()
            if row is None:
                return None
            lock = _lock_ms(row[1], now)
            return StoredRequest(request_id, row[0], from_ms(lock) if lock is not None else None)

        return await self._db.point_read(q)

    async def update_request(
        self, queue_id: str, request: NewRequest, *, forefront: bool, client_key: str | None
    ) -> Registration:
        r = request

        def txn(conn: sqlite3.Connection) -> Registration:
            state, now = self._begin(conn, queue_id, client_key)
            row = conn.execute(
                "SELECT order_time, order_seq, lock_owner, size FROM queue_requests WHERE queue_id = ? AND id = ?",
                (queue_id, r.id),
            ).fetchone()
            old = Slot(row[0], row[1], row[2]) if row is not None else None
            slot = after_update(old, r.handled, state, now, forefront, client_key)
            size = len(r.body.encode())
            conn.execute(
                "INSERT INTO queue_requests(queue_id, id, unique_key, url, method, retry_count, body, size, "
                "order_time, order_seq, lock_owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(queue_id, id) DO UPDATE SET unique_key = excluded.unique_key, url = excluded.url, "
                "method = excluded.method, retry_count = excluded.retry_count, body = excluded.body, "
                "size = excluded.size, order_time = excluded.order_time, order_seq = excluded.order_seq, "
                "lock_owner = excluded.lock_owner",
                (queue_id, r.id, r.unique_key, r.url, r.method, r.retry_count, r.body, size,
                 slot.time, slot.seq, slot.owner),
            )
            self._end(conn, queue_id, state, now, changed=True, size_delta=size - (row[3] if row else 0))
            return Registration(r.id, old is not None, old is not None and old.handled)

        return await self._queue_write(txn, len(r.body))

    async def delete_requests(
        self, queue_id: str, request_ids: Sequence[str], *, client_key: str | None
    ) -> list[str | None]:
        def txn(conn: sqlite3.Connection) -> list[str | None]:
            state, now = self._begin(conn, queue_id, client_key)
            out: list[str | None] = []
            size_delta = 0
            for request_id in request_ids:
                row = conn.execute(
                    "DELETE FROM queue_requests WHERE queue_id = ? AND id = ? RETURNING unique_key, order_time, size",
                    (queue_id, request_id),
                ).fetchone()
                if row is None:
                    out.append(None)
                    continue
                state.total -= 1
                if row[1] is None:
                    state.handled -= 1
                size_delta -= row[2]
                out.append(row[0])
            self._end(conn, queue_id, state, now, changed=size_delta < 0 or any(k is not None for k in out),
                      size_delta=size_delta)
            return out

        return await self._queue_write(txn, 0)

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
        now = self._now()
        conds = []
        if not handled:
            if pending and locked:
                conds.append("order_time IS NOT NULL")
            elif pending:
                conds.append("abs(order_time) <= ?2")
            elif locked:
                conds.append("abs(order_time) > ?2")
            else:
                conds.append("0")
        sql = (
            "SELECT id, body, order_time FROM queue_requests WHERE queue_id = ?1 AND id > ?3"
            + "".join(f" AND {c}" for c in conds)
            + " ORDER BY id LIMIT ?4"
        )

        def q(conn: sqlite3.Connection) -> tuple[list[StoredRequest], bool, QueueState]:
            rows = conn.execute(sql, (queue_id, now, after or "", limit + 1))
            items: list[StoredRequest] = []
            size = 0  # (in UTF-8 bytes, as on PostgreSQL)
            more = False
            for row in rows:  # one at a time: the page stops at its byte budget without reading further bodies
                if len(items) == limit or size >= LIST_PAGE_BYTES:
                    more = True
                    break
                lock = _lock_ms(row[2], now)
                items.append(StoredRequest(row[0], row[1], from_ms(lock) if lock is not None else None))
                size += utf8_len(row[1])
            rows.close()
            return items, more, _read_state(conn, queue_id)

        items, more, state = await self._db.read(q)
        await self._note_client(queue_id, state, client_key)
        return items, more

    async def queue_head(self, queue_id: str, *, limit: int, client_key: str | None) -> QueueHead:
        now = self._now()

        def q(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int, QueueState]:
            rows = _head(conn, queue_id, now, limit, LIST_PAGE_BYTES)
            modified = conn.execute("SELECT modified_at FROM stores WHERE id = ?", (queue_id,)).fetchone()
            if modified is None:
                raise NotFound(f"request queue {queue_id}")
            return rows, modified[0], _read_state(conn, queue_id)

        rows, modified, state = await self._db.read(q)
        state = await self._note_client(queue_id, state, client_key)
        items = [HeadItem(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return QueueHead(items, from_ms(modified), state.had_multiple_clients)

    async def lock_head(self, queue_id: str, *, limit: int, lock_secs: int, client_key: str | None) -> QueueHead:
        def txn(conn: sqlite3.Connection) -> QueueHead:
            state, now = self._begin(conn, queue_id, client_key)
            expiry = now + lock_secs * 1000
            items = []
            for row in _head(conn, queue_id, now, limit):
                slot = placed(state, expiry, row[5] < 0, owner_of(client_key))
                conn.execute(_SET_SLOT, (slot.time, slot.seq, slot.owner, queue_id, row[0]))
                items.append(HeadItem(row[0], row[1], row[2], row[3], row[4], from_ms(expiry)))
            self._end(conn, queue_id, state, now, changed=bool(items))
            has_locked = bool(items) or bool(conn.execute(_ANY_LOCKED, (queue_id, now)).fetchone()[0])
            modified = conn.execute("SELECT modified_at FROM stores WHERE id = ?", (queue_id,)).fetchone()[0]
            return QueueHead(items, from_ms(modified), state.had_multiple_clients, has_locked)

        return await self._queue_write(txn, 0)

    def _slot(self, conn: sqlite3.Connection, queue_id: str, request_id: str) -> Slot:
        row = conn.execute(
            "SELECT order_time, order_seq, lock_owner FROM queue_requests WHERE queue_id = ? AND id = ?",
            (queue_id, request_id),
        ).fetchone()
        if row is None:
            raise RequestNotFound(request_id)
        return Slot(row[0], row[1], row[2])

    async def prolong_lock(
        self, queue_id: str, request_id: str, *, lock_secs: int, forefront: bool, client_key: str | None
    ) -> datetime:
        def txn(conn: sqlite3.Connection) -> int:
            state, now = self._begin(conn, queue_id, client_key)
            old = self._slot(conn, queue_id, request_id)
            if old.handled:
                raise RequestHandledOrLocked(RequestHandledOrLocked.HANDLED)
            if old.held_by_other(now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            expiry = now + lock_secs * 1000
            slot = placed(state, expiry, forefront, owner_of(client_key))
            conn.execute(_SET_SLOT, (slot.time, slot.seq, slot.owner, queue_id, request_id))
            self._end(conn, queue_id, state, now, changed=True)
            return expiry

        return from_ms(await self._queue_write(txn, 0))

    async def delete_lock(self, queue_id: str, request_id: str, *, forefront: bool, client_key: str | None) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            state, now = self._begin(conn, queue_id, client_key)
            old = self._slot(conn, queue_id, request_id)
            if old.held_by_other(now, client_key):
                raise RequestHandledOrLocked(RequestHandledOrLocked.LOCKED)
            changed = old.locked(now)  # by the caller: released and placed now
            if changed:
                slot = placed(state, now, forefront)
                conn.execute(_SET_SLOT, (slot.time, slot.seq, slot.owner, queue_id, request_id))
            self._end(conn, queue_id, state, now, changed=changed)
            return changed

        return await self._queue_write(txn, 0)

    async def unlock_requests(self, queue_id: str, *, client_key: str | None) -> int:
        def txn(conn: sqlite3.Connection) -> int:
            state, now = self._begin(conn, queue_id, client_key)
            rows = conn.execute(
                "SELECT id, order_time FROM queue_requests WHERE queue_id = ?1 AND lock_owner = ?3 AND "
                "(order_time > ?2 OR order_time < -?2) ORDER BY order_time, order_seq",
                (queue_id, now, owner_of(client_key)),
            ).fetchall()
            for request_id, order_time in rows:
                slot = placed(state, now, order_time < 0)
                conn.execute(_SET_SLOT, (slot.time, slot.seq, slot.owner, queue_id, request_id))
            self._end(conn, queue_id, state, now, changed=bool(rows))
            return len(rows)

        return await self._db.write(txn)
