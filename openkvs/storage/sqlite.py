"""The embedded default backend: SQLite in WAL mode for metadata and small records, files for large records.

Layout under ``data_dir``::

    openkvs.sqlite3 (+ -wal, -shm)   users, tokens, stores, grants, records, record_data, garbage, leases
    blobs/ab/cd/<name>               record bytes larger than ``inline_max``, written once, never modified
    tmp/                             uploads in progress (renamed into blobs/ when complete)

Concurrency. Several processes may open one data_dir. Every write is a ``BEGIN IMMEDIATE`` transaction (SQLite
serialises them across processes; ``busy_timeout`` makes the others wait). Within a process, writes go through
one connection guarded by a capacity limiter of one, run in a worker thread; reads take a connection from a small
pool, also in a worker thread. Nothing process-local is needed for correctness: the stats buffer only delays
counters, and the set of leases this process renews is advisory (an expired lease is ignored by everyone).

Reclaiming bytes. A replaced or deleted file-backed record puts its path into ``garbage``. A file is deleted once
its garbage row is older than ``gc_grace_seconds`` (so a ``get_record`` that raced the replacement can still read
it) and no live snapshot may still need it: a snapshot first inserts a lease whose watermark is the largest
garbage id at that moment and only then starts its read transaction, so every file it can see has a garbage id
above the watermark (or none). Inline records (``record_data``) need no such care: ``get_record`` returns their
bytes by value and a snapshot reads them through its own read transaction.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread

from .base import (
    prefix_upper_bound,
    Grant,
    KeyItem,
    KeyPage,
    KeySelection,
    NameNotUnique,
    NotFound,
    RecordBody,
    RecordMeta,
    Snapshot,
    SnapshotTotals,
    Storage,
    StorageUnavailable,
    Store,
    StoreStats,
    User,
    UsernameTaken,
)
from .ids import new_id
from .stats import StatsBuffer

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
DB_NAME = "openkvs.sqlite3"
READ_CHUNK = 1024 * 1024  # read_blob chunk size
WRITE_BUFFER = 1024 * 1024  # bytes gathered in memory before one write() to a spill file
TMP_MAX_AGE = 3600.0  # tmp/ files untouched this long belong to a crashed upload
PENDING_MS = 24 * 3600 * 1000  # a file being committed is registered as garbage "created" this far in the future
LEASE_SECONDS = 300.0
LEASE_RENEW_SECONDS = 60.0
BUSY_TIMEOUT_MS = 10_000
GC_BATCH = 1000
PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of inline records
SNAPSHOT_MMAP_MIN_AVG = 4096  # a snapshot maps the database when its inline records average this size or more
SNAPSHOT_MMAP_BYTES = 1 << 30  # up to this much of the database file (SQLite caps it at its own limit)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL REFERENCES users(id),
    name                    TEXT,
    general_access          TEXT NOT NULL,
    schema                  TEXT,
    url_signing_secret_key  TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    modified_at             INTEGER NOT NULL,
    accessed_at             INTEGER NOT NULL,
    generation              INTEGER NOT NULL DEFAULT 0,
    read_count              INTEGER NOT NULL DEFAULT 0,
    write_count             INTEGER NOT NULL DEFAULT 0,
    delete_count            INTEGER NOT NULL DEFAULT 0,
    list_count              INTEGER NOT NULL DEFAULT 0,
    storage_bytes           INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS stores_user_name ON stores(user_id, name COLLATE NOCASE) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS stores_user_created ON stores(user_id, created_at, id);
CREATE TABLE IF NOT EXISTS grants (
    store_id    TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    can_write   INTEGER NOT NULL,
    PRIMARY KEY (store_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_user ON grants(user_id, store_id);
-- One row per record, clustered by (store_id, key) in byte order: a keys page or a snapshot batch is one range
-- scan. The bytes live in record_data (inline, data_id) or in blobs/ (path).
CREATE TABLE IF NOT EXISTS records (
    store_id          TEXT NOT NULL,
    key               TEXT NOT NULL COLLATE BINARY,
    size              INTEGER NOT NULL,
    decoded_size      INTEGER NOT NULL,
    crc32             INTEGER NOT NULL,
    modified_at       INTEGER NOT NULL,
    content_type      TEXT NOT NULL,
    content_encoding  TEXT,
    data_id           INTEGER,
    path              TEXT,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record_data (
    id    INTEGER PRIMARY KEY,
    data  BLOB NOT NULL
);
-- Files to delete. created_at in the future marks a file being committed right now (deleted with the row on
-- success, reclaimed if the process died in between).
CREATE TABLE IF NOT EXISTS garbage (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id          TEXT PRIMARY KEY,
    watermark   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
"""

_STORE_SELECT = """
SELECT s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
       s.schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
       s.storage_bytes, s.generation
FROM stores s JOIN users u ON u.id = s.user_id
"""

_RECORD_COLS = "key, size, decoded_size, crc32, modified_at, content_type, content_encoding, data_id, path"
_STORE_NCOLS = 16  # the columns of _STORE_SELECT
# A record GET by store ID: the store's columns, then the record's and its inline bytes (NULLs if no record).
_STORE_AND_RECORD = """
SELECT s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
       s.schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
       s.storage_bytes, s.generation,
       r.key, r.size, r.decoded_size, r.crc32, r.modified_at, r.content_type, r.content_encoding, r.data_id, r.path,
       d.data
FROM stores s JOIN users u ON u.id = s.user_id
LEFT JOIN records r ON r.store_id = s.id AND r.key = ?
LEFT JOIN record_data d ON d.id = r.data_id
WHERE s.id = ?
"""

_UNAVAILABLE_MARKERS = (
    "locked",
    "busy",
    "unable to open",
    "disk i/o",
    "disk is full",
    "readonly",
    "not a database",
    "malformed",
)


# -- helpers ---------------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _to_ms(now: datetime | float | None) -> int:
    if now is None:
        return _now_ms()
    if isinstance(now, datetime):
        return (now - _EPOCH) // timedelta(milliseconds=1)
    return int(now * 1000)


@functools.lru_cache(maxsize=65_536)  # the same few timestamps (a store's, a hot record's) come back constantly
def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _selection_sql(selection: KeySelection) -> tuple[str, list[Any]]:
    """A WHERE fragment (range conditions, so the primary key is used) and its parameters."""
    if selection.exact is not None:
        if selection.prefix and not selection.exact.startswith(selection.prefix):
            return "0", []
        return "key = ?", [selection.exact]
    if selection.prefix:
        upper = prefix_upper_bound(selection.prefix)
        if upper is None:
            return "key >= ?", [selection.prefix]
        return "key >= ? AND key < ?", [selection.prefix, upper]
    return "1", []


def _translate(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    ):
        msg = str(exc).lower()
        if any(m in msg for m in _UNAVAILABLE_MARKERS):
            return StorageUnavailable(f"SQLite: {exc}")
    return exc


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], username=row[1], created_at=_dt(row[2]))


def _store(row: Sequence[Any]) -> Store:
    return Store(
        id=row[0],
        name=row[1],
        user_id=row[2],
        username=row[3],
        created_at=_dt(row[4]),
        modified_at=_dt(row[5]),
        accessed_at=_dt(row[6]),
        general_access=row[7],
        schema=json.loads(row[8]) if row[8] is not None else None,
        url_signing_secret_key=row[9],
        stats=StoreStats(
            read_count=row[10], write_count=row[11], delete_count=row[12], list_count=row[13], storage_bytes=row[14]
        ),
        generation=row[15],
    )


# Blob handles (RecordMeta.blob). The HTTP layer passes them back to read_blob and never looks inside.


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class _Inline:
    data: bytes


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class _File:
    path: Path


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class _Row:
    """Inline bytes not fetched yet: read through the snapshot's own transaction."""

    data_id: int


def _slice(start: int, end: int | None, size: int) -> tuple[int, int]:
    if end is None or end > size:
        end = size
    start = max(0, min(start, end))
    return start, end


async def _read_file(path: Path, start: int, end: int | None) -> AsyncIterator[bytes]:
    f = await anyio.to_thread.run_sync(open, path, "rb")
    try:
        if end is None:
            end = (await anyio.to_thread.run_sync(os.fstat, f.fileno())).st_size
        pos = start
        if pos:
            await anyio.to_thread.run_sync(f.seek, pos)
        while pos < end:
            chunk = await anyio.to_thread.run_sync(f.read, min(READ_CHUNK, end - pos))
            if not chunk:
                raise OSError(f"{path}: file shorter than expected ({pos} < {end})")
            pos += len(chunk)
            yield chunk
    finally:
        f.close()


def _writer_alive(tmp_name: str) -> bool:
    pid, sep, _ = tmp_name.partition("-")
    if not sep or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _inline_chunks(data: bytes, start: int, end: int | None) -> list[bytes]:
    start, end = _slice(start, end, len(data))
    return [data[i : min(i + READ_CHUNK, end)] for i in range(start, end, READ_CHUNK)]


# -- the backend -----------------------------------------------------------------------------------------------


class SQLiteStorage(Storage):
    def __init__(
        self,
        data_dir: str | Path,
        *,
        fsync: bool = False,
        inline_max: int = 64 * 1024,
        gc_grace_seconds: float = 60.0,
        gc_interval: float = 10.0,
        stats_interval: float = 2.0,
        background: bool = True,
        busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self.blob_dir = self.data_dir / "blobs"
        self.tmp_dir = self.data_dir / "tmp"
        self.fsync = fsync
        self.inline_max = inline_max
        self.gc_grace_seconds = gc_grace_seconds
        self.gc_interval = gc_interval
        self.stats_interval = stats_interval
        self.background = background
        self.busy_timeout = busy_timeout
        self._stats = StatsBuffer()
        self._wconn: sqlite3.Connection | None = None
        self._wlimiter: anyio.CapacityLimiter | None = None
        self._pool: list[sqlite3.Connection] = []
        self._all_conns: set[sqlite3.Connection] = set()
        self._loop_conn: sqlite3.Connection | None = None  # point reads on the event loop thread
        # store ID -> (its row, the Store built from it): a record GET whose store row is unchanged reuses the
        # Store instead of converting 16 columns again. Checked against the row just read, so never stale.
        self._store_memo: dict[str, tuple[tuple[Any, ...], Store]] = {}
        self._pool_lock = threading.Lock()
        self._leases: set[str] = set()  # leases of this process's open snapshots (renewed in the background)
        self._task: asyncio.Task[None] | None = None
        self._closed = True

    # -- connections -------------------------------------------------------------------------------------------

    def _connect(self, *, readonly: bool, busy_timeout: float | None = None) -> sqlite3.Connection:
        busy_timeout = self.busy_timeout if busy_timeout is None else busy_timeout
        conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA cache_size = -16000")
        if readonly:
            conn.execute("PRAGMA query_only = 1")
        else:
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _acquire_read(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise StorageUnavailable("storage is closed")
            if self._pool:
                return self._pool.pop()
        conn = self._connect(readonly=True)
        with self._pool_lock:
            self._all_conns.add(conn)
        return conn

    def _release_read(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        with self._pool_lock:
            if not self._closed:
                self._pool.append(conn)
                return
            self._all_conns.discard(conn)
        conn.close()

    def _read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._acquire_read()
        try:
            return fn(conn, *args)
        finally:
            self._release_read(conn)

    def _write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._wconn
        if conn is None:
            raise StorageUnavailable("storage is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def _point_read(self, fn: Callable[..., T], *args: Any) -> T:
        """A lookup by a primary or unique key takes microseconds, less than the hop to a worker thread, so it
        runs right here on the event loop thread, on a connection of its own. WAL readers don't wait for writers;
        should the database be busy anyway (recovery, a checkpoint's lock), it never waits here (busy timeout 0)
        but goes the usual way, through a worker thread that may wait."""
        conn = self._loop_conn
        if conn is None:
            if self._closed:
                raise StorageUnavailable("storage is closed")
            conn = self._loop_conn = self._connect(readonly=True, busy_timeout=0)
            with self._pool_lock:
                self._all_conns.add(conn)
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if any(m in str(exc).lower() for m in ("locked", "busy")):
                return await self._read(fn, *args)
            raise _translate(exc) from exc
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(self._read_sync, fn, *args)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one write transaction, in the writer thread."""
        if self._wlimiter is None:
            raise StorageUnavailable("storage is not open")
        try:
            return await anyio.to_thread.run_sync(self._write_sync, fn, *args, limiter=self._wlimiter)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _write_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the writer thread; ``fn`` manages its own transactions."""
        assert self._wlimiter is not None and self._wconn is not None
        try:
            return await anyio.to_thread.run_sync(fn, self._wconn, *args, limiter=self._wlimiter)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if not self._closed:
            return
        try:
            await anyio.to_thread.run_sync(self._open_sync)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        self._wlimiter = anyio.CapacityLimiter(1)
        self._closed = False
        if self.background:
            self._task = asyncio.get_running_loop().create_task(self._maintenance())

    def _open_sync(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        conn = self._connect(readonly=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageUnavailable(f"cannot switch {self.db_path} to WAL mode (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.db_path} has schema version {version}; this openkvs knows up to {SCHEMA_VERSION}"
                    )
                if version < SCHEMA_VERSION:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        self._wconn = conn
        self._sweep_tmp()

    def _sweep_tmp(self, max_age: float = TMP_MAX_AGE) -> int:
        """Delete the uploads of crashed processes from tmp/: files whose writing process is gone, and any file
        nobody has written to for ``max_age`` seconds (in case a pid was reused)."""
        cutoff = time.time() - max_age
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file() and (not _writer_alive(entry.name) or entry.stat().st_mtime < cutoff):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        with anyio.CancelScope(shield=True):
            try:
                await self.flush_stats()
            except Exception:
                log.exception("could not flush access counters at close")
            assert self._wlimiter is not None
            await anyio.to_thread.run_sync(self._close_sync, limiter=self._wlimiter)

    def _close_sync(self) -> None:
        with self._pool_lock:
            self._closed = True
            conns = list(self._all_conns)
            self._all_conns.clear()
            self._pool.clear()
            self._loop_conn = None
        for conn in conns:
            conn.close()
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    async def _maintenance(self) -> None:
        last_gc = last_renew = time.monotonic()
        while True:
            await asyncio.sleep(self.stats_interval)
            try:
                await self.flush_stats()
                now = time.monotonic()
                if self._leases and now - last_renew >= LEASE_RENEW_SECONDS:
                    last_renew = now
                    await self._renew_leases()
                if now - last_gc >= self.gc_interval:
                    last_gc = now
                    await self.collect_garbage()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background maintenance failed (will retry)")

    # -- users and tokens --------------------------------------------------------------------------------------

    async def create_user(self, username: str) -> User:
        user = User(id=new_id(), username=username, created_at=_dt(_now_ms()))

        def txn(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users(id, username, created_at) VALUES (?, ?, ?)",
                    (user.id, username, int((user.created_at - _EPOCH) / timedelta(milliseconds=1))),
                )
            except sqlite3.IntegrityError as exc:
                raise UsernameTaken(username) from exc

        await self._write(txn)
        return user

    async def get_user_by_name(self, username: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute("SELECT id, username, created_at FROM users WHERE username = ?", (username,)).fetchone()
            return _user(row) if row else None

        return await self._point_read(q)

    async def add_token(self, user_id: str, token_hash: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id}")
            conn.execute(
                "INSERT INTO tokens(hash, user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET user_id = excluded.user_id",
                (token_hash, user_id, _now_ms()),
            )

        await self._write(txn)

    async def user_by_token(self, token_hash: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT u.id, u.username, u.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.hash = ?",
                (token_hash,),
            ).fetchone()
            return _user(row) if row else None

        return await self._point_read(q)

    async def revoke_token(self, token_hash: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,)).rowcount > 0
        )

    # -- stores ------------------------------------------------------------------------------------------------

    @staticmethod
    def _store_by_id(conn: sqlite3.Connection, store_id: str) -> Store | None:
        row = conn.execute(_STORE_SELECT + " WHERE s.id = ?", (store_id,)).fetchone()
        return _store(row) if row else None

    @staticmethod
    def _store_by_name(conn: sqlite3.Connection, user_id: str, name: str) -> Store | None:
        row = conn.execute(
            _STORE_SELECT + " WHERE s.user_id = ? AND s.name = ? COLLATE NOCASE", (user_id, name)
        ).fetchone()
        return _store(row) if row else None

    @staticmethod
    def _insert_store(
        conn: sqlite3.Connection, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str
    ) -> Store:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"user {user_id}")
        store_id = new_id()
        now = _now_ms()
        try:
            conn.execute(
                "INSERT INTO stores(id, user_id, name, general_access, schema, url_signing_secret_key, created_at,"
                " modified_at, accessed_at) VALUES (?, ?, ?, 'FOLLOW_USER_SETTING', ?, ?, ?, ?, ?)",
                (
                    store_id,
                    user_id,
                    name,
                    json.dumps(schema, separators=(",", ":")) if schema is not None else None,
                    signing_key,
                    now,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise NameNotUnique(name) from exc
        store = SQLiteStorage._store_by_id(conn, store_id)
        assert store is not None
        return store

    async def create_store(
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str
    ) -> Store:
        return await self._write(self._insert_store, user_id, name, schema, signing_key)

    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str
    ) -> tuple[Store, bool]:
        def txn(conn: sqlite3.Connection) -> tuple[Store, bool]:
            # BEGIN IMMEDIATE serialises this with every other writer of every process: look, then insert.
            existing = self._store_by_name(conn, user_id, name)
            if existing is not None:
                return existing, False
            return self._insert_store(conn, user_id, name, schema, signing_key), True

        return await self._write(txn)

    async def get_store(self, store_id: str) -> Store | None:
        return await self._point_read(self._store_by_id, store_id)

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        return await self._point_read(self._store_by_name, user_id, name)

    async def list_stores(
        self, user_id: str, *, offset: int, limit: int, desc: bool, unnamed: bool, ownership: str | None
    ) -> tuple[int, list[Store]]:
        shared = "s.id IN (SELECT store_id FROM grants WHERE user_id = ?)"
        if ownership == "ownedByMe":
            where, params = "s.user_id = ?", [user_id]
        elif ownership == "sharedWithMe":
            where, params = shared, [user_id]
        elif ownership is None:
            where, params = f"(s.user_id = ? OR {shared})", [user_id, user_id]
        else:
            raise ValueError(f"unknown ownership {ownership!r}")
        if not unnamed:
            where += " AND s.name IS NOT NULL"
        order = "DESC" if desc else "ASC"

        def q(conn: sqlite3.Connection) -> tuple[int, list[Store]]:
            conn.execute("BEGIN")
            try:
                total = conn.execute(f"SELECT COUNT(*) FROM stores s WHERE {where}", params).fetchone()[0]
                rows = conn.execute(
                    f"{_STORE_SELECT} WHERE {where} ORDER BY s.created_at {order}, s.id {order} LIMIT ? OFFSET ?",
                    [*params, limit, offset],
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return total, [_store(r) for r in rows]

        return await self._read(q)

    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        columns = {
            "name": "name",
            "general_access": "general_access",
            "schema": "schema",
            "url_signing_secret_key": "url_signing_secret_key",
        }
        unknown = set(changes) - set(columns)
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")

        def txn(conn: sqlite3.Connection) -> Store:
            sets, params = ["modified_at = ?"], [_now_ms()]
            for field_name, value in changes.items():
                if field_name == "schema" and value is not None:
                    value = json.dumps(value, separators=(",", ":"))
                sets.append(f"{columns[field_name]} = ?")
                params.append(value)
            try:
                cur = conn.execute(f"UPDATE stores SET {', '.join(sets)} WHERE id = ?", [*params, store_id])
            except sqlite3.IntegrityError as exc:
                raise NameNotUnique(changes.get("name")) from exc
            if cur.rowcount == 0:
                raise NotFound(f"store {store_id}")
            store = self._store_by_id(conn, store_id)
            assert store is not None
            return store

        return await self._write(txn)

    async def delete_store(self, store_id: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
                return False
            conn.execute(
                "INSERT INTO garbage(path, created_at) SELECT path, ? FROM records "
                "WHERE store_id = ? AND path IS NOT NULL",
                (_now_ms(), store_id),
            )
            conn.execute(
                "DELETE FROM record_data WHERE id IN "
                "(SELECT data_id FROM records WHERE store_id = ? AND data_id IS NOT NULL)",
                (store_id,),
            )
            conn.execute("DELETE FROM records WHERE store_id = ?", (store_id,))
            conn.execute("DELETE FROM grants WHERE store_id = ?", (store_id,))
            conn.execute("DELETE FROM stores WHERE id = ?", (store_id,))
            return True

        return await self._write(txn)

    # -- grants ------------------------------------------------------------------------------------------------

    async def set_grant(self, store_id: str, user_id: str, can_write: bool) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
                raise NotFound(f"store {store_id}")
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id}")
            conn.execute(
                "INSERT INTO grants(store_id, user_id, can_write) VALUES (?, ?, ?) "
                "ON CONFLICT(store_id, user_id) DO UPDATE SET can_write = excluded.can_write",
                (store_id, user_id, int(can_write)),
            )

        await self._write(txn)

    async def remove_grant(self, store_id: str, user_id: str) -> bool:
        return await self._write(
            lambda conn: conn.execute(
                "DELETE FROM grants WHERE store_id = ? AND user_id = ?", (store_id, user_id)
            ).rowcount
            > 0
        )

    _GRANT_SELECT = (
        "SELECT g.store_id, g.user_id, u.username, g.can_write FROM grants g JOIN users u ON u.id = g.user_id "
    )

    async def list_grants(self, store_id: str) -> list[Grant]:
        def q(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(self._GRANT_SELECT + "WHERE g.store_id = ? ORDER BY u.username", (store_id,))
            return [Grant(r[0], r[1], r[2], bool(r[3])) for r in rows]

        return await self._read(q)

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        def q(conn: sqlite3.Connection) -> Grant | None:
            r = conn.execute(
                self._GRANT_SELECT + "WHERE g.store_id = ? AND g.user_id = ?", (store_id, user_id)
            ).fetchone()
            return Grant(r[0], r[1], r[2], bool(r[3])) if r else None

        return await self._point_read(q)

    # -- records -----------------------------------------------------------------------------------------------

    def _blob_relpath(self) -> str:
        name = new_id(24)
        return f"{name[0:2]}/{name[2:4]}/{name}"

    def _meta(self, row: Sequence[Any], blob: Any) -> RecordMeta:
        return RecordMeta(
            key=row[0],
            size=row[1],
            decoded_size=row[2],
            crc32=row[3],
            modified_at=_dt(row[4]),
            content_type=row[5],
            content_encoding=row[6],
            blob=blob,
        )

    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta:
        buf = bytearray()
        size = 0
        tmp_path: Path | None = None
        f = None
        try:
            async for chunk in body:
                if not chunk:
                    continue
                size += len(chunk)
                buf += chunk
                if f is None:
                    if len(buf) <= self.inline_max:
                        continue
                    # The writer's pid in the name lets a restart tell a dead process's leftovers from
                    # the uploads that other live processes on this data_dir are still writing.
                    tmp_path = self.tmp_dir / f"{os.getpid()}-{new_id(24)}.part"
                    f = await anyio.to_thread.run_sync(open, tmp_path, "xb")
                if len(buf) >= WRITE_BUFFER:
                    data, buf = bytes(buf), bytearray()
                    await anyio.to_thread.run_sync(f.write, data)
            if f is not None:
                data, buf = bytes(buf), bytearray()
                await anyio.to_thread.run_sync(self._finish_file, f, data)
            decoded_size, crc = body.decoded_size, body.crc32
        except BaseException:
            if f is not None:
                f.close()
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
            raise
        if f is not None:
            f.close()

        now = _now_ms()
        row = (key, size, decoded_size, crc & 0xFFFFFFFF, now, content_type, content_encoding)
        if tmp_path is None:
            data = bytes(buf)
            await self._write(self._commit_record, store_id, row, data, None)
            return self._meta(row, _Inline(data))
        relpath = self._blob_relpath()
        try:
            await self._write_raw(self._commit_file_record, store_id, row, tmp_path, relpath)
        finally:
            tmp_path.unlink(missing_ok=True)  # already renamed unless something failed
        return self._meta(row, _File(self.blob_dir / relpath))

    def _finish_file(self, f: Any, data: bytes) -> None:
        if data:
            f.write(data)
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def _commit_file_record(
        self, conn: sqlite3.Connection, store_id: str, row: tuple[Any, ...], tmp_path: Path, relpath: str
    ) -> None:
        """In the writer thread: register the file as pending garbage, move it into blobs/, then commit the
        record and unregister it. A crash at any point leaves either the old record and a reclaimable file, or
        the new record with its file."""

        def register(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO garbage(path, created_at) VALUES (?, ?)", (relpath, _now_ms() + PENDING_MS)
            )
            return int(cur.lastrowid)

        pending_id = self._write_sync(register)
        final = self.blob_dir / relpath
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_path, final)
            if self.fsync:
                fd = os.open(final.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._write_sync(self._commit_record, store_id, row, None, relpath, pending_id)
        except BaseException:
            final.unlink(missing_ok=True)
            try:
                self._write_sync(lambda c: c.execute("DELETE FROM garbage WHERE id = ?", (pending_id,)))
            except Exception:
                pass  # the pending row is reclaimed later; the file is gone already
            raise

    @staticmethod
    def _commit_record(
        conn: sqlite3.Connection,
        store_id: str,
        row: tuple[Any, ...],
        data: bytes | None,
        relpath: str | None,
        pending_id: int | None = None,
    ) -> None:
        key, size = row[0], row[1]
        now = row[4]
        if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
            raise NotFound(f"store {store_id}")
        old = conn.execute(
            "SELECT size, data_id, path FROM records WHERE store_id = ? AND key = ?", (store_id, key)
        ).fetchone()
        data_id = None
        if data is not None:
            data_id = conn.execute("INSERT INTO record_data(data) VALUES (?)", (data,)).lastrowid
        conn.execute(
            f"INSERT OR REPLACE INTO records(store_id, {_RECORD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (store_id, *row, data_id, relpath),
        )
        delta = size
        if old is not None:
            delta -= old[0]
            if old[1] is not None:
                conn.execute("DELETE FROM record_data WHERE id = ?", (old[1],))
            if old[2] is not None:
                conn.execute("INSERT INTO garbage(path, created_at) VALUES (?, ?)", (old[2], now))
        if pending_id is not None:
            conn.execute("DELETE FROM garbage WHERE id = ?", (pending_id,))
        conn.execute(
            "UPDATE stores SET generation = generation + 1, modified_at = ?, storage_bytes = storage_bytes + ? "
            "WHERE id = ?",
            (now, delta, store_id),
        )

    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        def q(conn: sqlite3.Connection) -> RecordMeta | None:
            row = conn.execute(
                f"SELECT {_RECORD_COLS}, d.data FROM records r LEFT JOIN record_data d ON d.id = r.data_id "
                "WHERE r.store_id = ? AND r.key = ?",
                (store_id, key),
            ).fetchone()
            if row is None:
                return None
            if row[8] is not None:
                return self._meta(row, _File(self.blob_dir / row[8]))
            return self._meta(row, _Inline(bytes(row[9]) if row[9] is not None else b""))

        return await self._point_read(q)

    async def get_store_and_record(self, store_id: str, key: str) -> tuple[Store | None, RecordMeta | None]:
        n = _STORE_NCOLS

        def q(conn: sqlite3.Connection) -> tuple[Store | None, RecordMeta | None]:
            row = conn.execute(_STORE_AND_RECORD, (key, store_id)).fetchone()
            if row is None:
                return None, None
            store_row = row[:n]
            memo = self._store_memo.get(store_id)
            if memo is not None and memo[0] == store_row:
                store = memo[1]
            else:
                store = _store(store_row)
                if len(self._store_memo) >= 1024:
                    self._store_memo.clear()
                self._store_memo[store_id] = (store_row, store)
            if row[n] is None:  # the LEFT JOIN found no record
                return store, None
            if row[n + 8] is not None:
                return store, self._meta(row[n:], _File(self.blob_dir / row[n + 8]))
            return store, self._meta(row[n:], _Inline(bytes(row[n + 9]) if row[n + 9] is not None else b""))

        return await self._point_read(q)

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        return record.blob.data if isinstance(record.blob, _Inline) else None

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = record.blob
        if isinstance(blob, _Inline):
            for chunk in _inline_chunks(blob.data, start, end):
                yield chunk
        elif isinstance(blob, _File):
            start, end = _slice(start, end, record.size)
            async for chunk in _read_file(blob.path, start, end):
                yield chunk
        else:
            raise TypeError(f"read_blob: not a record of this storage ({blob!r}); use the snapshot's read_blob")

    async def delete_record(self, store_id: str, key: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            old = conn.execute(
                "SELECT size, data_id, path FROM records WHERE store_id = ? AND key = ?", (store_id, key)
            ).fetchone()
            if old is None:
                return False
            now = _now_ms()
            conn.execute("DELETE FROM records WHERE store_id = ? AND key = ?", (store_id, key))
            if old[1] is not None:
                conn.execute("DELETE FROM record_data WHERE id = ?", (old[1],))
            if old[2] is not None:
                conn.execute("INSERT INTO garbage(path, created_at) VALUES (?, ?)", (old[2], now))
            conn.execute(
                "UPDATE stores SET generation = generation + 1, modified_at = ?, storage_bytes = storage_bytes - ? "
                "WHERE id = ?",
                (now, old[0], store_id),
            )
            return True

        return await self._write(txn)

    async def list_keys(
        self, store_id: str, selection: KeySelection, exclusive_start_key: str | None, limit: int
    ) -> KeyPage:
        cond, params = _selection_sql(selection)
        if exclusive_start_key is not None:
            cond += " AND key > ?"
            params.append(exclusive_start_key)

        def q(conn: sqlite3.Connection) -> KeyPage:
            rows = conn.execute(
                f"SELECT key, size FROM records WHERE store_id = ? AND {cond} ORDER BY key LIMIT ?",
                [store_id, *params, limit + 1],
            ).fetchall()
            return KeyPage([KeyItem(k, s) for k, s in rows[:limit]], is_truncated=len(rows) > limit)

        return await self._read(q)

    # -- snapshots ---------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def snapshot(self, store_id: str, selection: KeySelection) -> AsyncIterator[_SQLiteSnapshot]:
        lease_id = new_id()
        expires = _now_ms() + int(LEASE_SECONDS * 1000)
        # The lease first, then the read transaction: every file the snapshot can see is either live or has a
        # garbage id above the watermark.
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO leases(id, watermark, expires_at) "
                "SELECT ?, COALESCE(MAX(id), 0), ? FROM garbage",
                (lease_id, expires),
            )
        )
        self._leases.add(lease_id)
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = await anyio.to_thread.run_sync(lambda: self._connect(readonly=True))
                snap = await anyio.to_thread.run_sync(self._begin_snapshot, conn, store_id, selection)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            yield snap
        finally:
            self._leases.discard(lease_id)
            with anyio.CancelScope(shield=True):
                if conn is not None:
                    await anyio.to_thread.run_sync(conn.close)
                try:
                    await self._write(lambda c: c.execute("DELETE FROM leases WHERE id = ?", (lease_id,)))
                except Exception:
                    log.warning("could not delete lease %s (it expires by itself)", lease_id, exc_info=True)

    def _begin_snapshot(
        self, conn: sqlite3.Connection, store_id: str, selection: KeySelection
    ) -> _SQLiteSnapshot:
        conn.execute("BEGIN")
        row = conn.execute("SELECT generation FROM stores WHERE id = ?", (store_id,)).fetchone()
        if row is None:
            raise NotFound(f"store {store_id}")
        cond, params = _selection_sql(selection)
        count, key_bytes, decoded, big, inline_count, inline_bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB))), 0), COALESCE(SUM(decoded_size), 0), "
            "COALESCE(SUM(decoded_size >= 4294967295), 0), "
            "COALESCE(SUM(path IS NULL), 0), COALESCE(SUM(CASE WHEN path IS NULL THEN size END), 0) "
            f"FROM records WHERE store_id = ? AND {cond}",
            [store_id, *params],
        ).fetchone()
        if inline_count and inline_bytes >= SNAPSHOT_MMAP_MIN_AVG * inline_count:
            # Records this big live in chains of overflow pages, which SQLite otherwise reads one pread (and
            # one copy into its page cache) per page: mapped, the same 2,000 x 64 KiB read 3.4x faster. Mapped
            # database pages count in the process's RSS (as page cache it can drop at any time), so only
            # snapshots of such records map; this connection, and the mapping, end with the snapshot.
            conn.execute(f"PRAGMA mmap_size = {SNAPSHOT_MMAP_BYTES}")
        return _SQLiteSnapshot(
            self, conn, store_id, cond, params, row[0], SnapshotTotals(count, key_bytes, decoded, big)
        )

    async def _renew_leases(self) -> None:
        leases = list(self._leases)
        if not leases:
            return
        expires = _now_ms() + int(LEASE_SECONDS * 1000)
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE leases SET expires_at = ? WHERE id = ?", [(expires, lease) for lease in leases]
            )
        )

    # -- garbage -----------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: datetime | None = None) -> int:
        """Delete files no reader can need any more; returns how many garbage rows were reclaimed.
        ``now`` (an aware datetime; default the clock) is for tests."""
        now_ms = _to_ms(now)
        cutoff = now_ms - int(self.gc_grace_seconds * 1000)
        total = 0
        while True:

            def pick(conn: sqlite3.Connection) -> list[tuple[int, str]]:
                conn.execute("DELETE FROM leases WHERE expires_at < ?", (now_ms,))
                watermark = conn.execute("SELECT MIN(watermark) FROM leases").fetchone()[0]
                sql = "SELECT id, path FROM garbage WHERE created_at <= ?"
                params: list[Any] = [cutoff]
                if watermark is not None:
                    sql += " AND id <= ?"
                    params.append(watermark)
                return conn.execute(sql + " ORDER BY id LIMIT ?", [*params, GC_BATCH]).fetchall()

            batch = await self._write(pick)
            if not batch:
                return total

            def unlink_all(paths: list[str]) -> None:
                for p in paths:
                    try:
                        (self.blob_dir / p).unlink(missing_ok=True)
                    except OSError:
                        log.warning("could not delete %s", p, exc_info=True)

            await anyio.to_thread.run_sync(unlink_all, [p for _, p in batch])
            ids = [(i,) for i, _ in batch]
            await self._write(lambda conn: conn.executemany("DELETE FROM garbage WHERE id = ?", ids))
            total += len(batch)
            if len(batch) < GC_BATCH:
                return total

    # -- stats -------------------------------------------------------------------------------------------------

    def count_access(
        self, store_id: str, *, reads: int = 0, writes: int = 0, deletes: int = 0, lists: int = 0
    ) -> None:
        self._stats.add(store_id, _now_ms(), reads=reads, writes=writes, deletes=deletes, lists=lists)

    async def flush_stats(self) -> None:
        pending = self._stats.drain()
        if not pending:
            return
        rows = [
            (d.reads, d.writes, d.deletes, d.lists, d.accessed_at_ms, store_id) for store_id, d in pending.items()
        ]
        try:
            await self._write(
                lambda conn: conn.executemany(
                    "UPDATE stores SET read_count = read_count + ?, write_count = write_count + ?, "
                    "delete_count = delete_count + ?, list_count = list_count + ?, "
                    "accessed_at = MAX(accessed_at, ?) WHERE id = ?",
                    rows,
                )
            )
        except BaseException:
            self._stats.restore(pending)
            raise


class _ZipRow(NamedTuple):
    """A record as an archive's central directory sees it (satisfies zipwriter.ZipEntry)."""

    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime


_FAST_MS_MAX = 4_102_444_800_000  # 2100-01-01: below it a float of seconds still rounds to the exact millisecond


def _snapshot_dt(ms: int) -> datetime:
    """``_dt(ms)``, about twice as fast. Exact below 2100: a float of seconds there is off by under 0.3 µs, so
    rounding to microseconds gives the millisecond back (also checked on a million random values)."""
    if 0 <= ms < _FAST_MS_MAX:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return _dt(ms)


class _SQLiteSnapshot(Snapshot):
    """One read transaction on a dedicated connection, open for the snapshot's life."""

    def __init__(
        self,
        storage: SQLiteStorage,
        conn: sqlite3.Connection,
        store_id: str,
        cond: str,
        params: list[Any],
        generation: int,
        totals: SnapshotTotals,
    ) -> None:
        self._storage = storage
        self._conn = conn
        self._store_id = store_id
        self._cond = cond
        self._params = params
        self.generation = generation
        self.totals = totals
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        """Inline records come with their bytes (a batch stops early at PREFETCH_BYTES of them), which saves a
        round trip per record when an archive holds many small ones; ``held_bytes`` hands them out."""
        return self._batches(after, batch, with_data=True)

    def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[_ZipRow]]:
        """The same records as ``records``, in the same order, as (key, decoded_size, crc32, modified_at) named
        tuples and nothing else: what an archive's central directory needs, without the bytes and cheaper per
        row than a RecordMeta. Not for ``read_blob``."""
        return self._batches(after, batch, with_data=False)

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        """The record's decoded bytes if its batch brought them along (identity-encoded inline records), else
        None. Synchronous and cheap: the ZIP writer copies these without a ``read_blob`` per record."""
        blob = record.blob
        return blob if type(blob) is bytes and record.content_encoding is None else None

    async def _batches(self, after: str | None, batch: int, with_data: bool) -> AsyncIterator[Sequence[Any]]:
        blob_dir = self._storage.blob_dir
        # Blob handles in a snapshot's records: the bytes themselves (inline, fetched with the batch), _File, or
        # _Row (inline, not fetched). Only this snapshot's read_blob understands the first and the last.
        if with_data:
            sql = f"SELECT {_RECORD_COLS}, d.data FROM records r LEFT JOIN record_data d ON d.id = r.data_id "
        else:
            sql = "SELECT key, decoded_size, crc32, modified_at FROM records r "
        sql += f"WHERE r.store_id = ? AND {self._cond}"
        base = [self._store_id, *self._params]

        def fetch(last: str | None) -> tuple[list[Any], bool]:
            # Returns (batch, more may follow). Per row: one tuple unpack and one RecordMeta (or _ZipRow).
            if last is None:
                cur = self._conn.execute(sql + " ORDER BY key LIMIT ?", [*base, batch])
            else:
                cur = self._conn.execute(sql + " AND key > ? ORDER BY key LIMIT ?", [*base, last, batch])
            out: list[Any] = []
            append = out.append
            meta = RecordMeta
            to_dt = _snapshot_dt
            last_ms, when = None, None  # rows written together often share a timestamp
            held = 0
            try:
                if with_data:
                    for key, size, decoded, crc, ms, ctype, cenc, data_id, path, data in cur:
                        if path is not None:
                            blob: Any = _File(blob_dir / path)
                        elif data is not None:
                            blob = data
                            held += size
                        else:
                            blob = _Row(data_id)
                        if ms != last_ms:
                            last_ms, when = ms, to_dt(ms)
                        append(meta(key, ctype, cenc, size, decoded, crc, when, blob))
                        if held >= PREFETCH_BYTES:
                            return out, True
                else:
                    row = _ZipRow._make
                    for key, decoded, crc, ms in cur:
                        if ms != last_ms:
                            last_ms, when = ms, to_dt(ms)
                        append(row((key, decoded, crc, when)))
            finally:
                cur.close()
            return out, len(out) == batch

        last = after
        while True:
            metas, more = await self._run(fetch, last)
            if metas:
                yield metas
            if not more or not metas:
                return
            last = metas[-1].key

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = record.blob
        if type(blob) is bytes:
            for chunk in _inline_chunks(blob, start, end):
                yield chunk
        elif isinstance(blob, _Row):

            def fetch() -> bytes:
                row = self._conn.execute("SELECT data FROM record_data WHERE id = ?", (blob.data_id,)).fetchone()
                if row is None:
                    raise RuntimeError(f"record data {blob.data_id} missing from the snapshot")
                return bytes(row[0])

            data = await self._run(fetch)
            for chunk in _inline_chunks(data, start, end):
                yield chunk
        else:
            async for chunk in self._storage.read_blob(record, start, end):
                yield chunk
