"""``SQLiteStorage``, the backend class: connections (a writer and a pool of readers, each in worker threads),
lifecycle and background maintenance, users and tokens, stores, grants, records (inline or spilled to a blob
file), snapshot leases, garbage collection and access counters. The package docstring describes the layout on
disk, the concurrency and how bytes are reclaimed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..base import (
    Grant,
    KeyItem,
    KeyPage,
    KeySelection,
    NameNotUnique,
    NotFound,
    RecordBody,
    RecordMeta,
    Storage,
    StorageDamaged,
    StorageError,
    StorageFull,
    StorageUnavailable,
    Store,
    TokenInfo,
    User,
    UsernameTaken,
)
from ..ids import new_id
from ..stats import StatsBuffer
from .blobs import _File, _Inline, _inline_chunks, _read_file, _slice, _sweep_tmp
from .schema import (
    _EPOCH,
    _RECORD_COLS,
    _SCHEMA,
    _STORE_AND_RECORD,
    _UPGRADES,
    _STORE_NCOLS,
    _STORE_SELECT,
    DB_NAME,
    SCHEMA_VERSION,
    _dt,
    _now_ms,
    _selection_sql,
    _store,
    _to_ms,
    _translate,
    _user,
)
from .snapshot import _begin_snapshot, _SQLiteSnapshot
from .space import RESERVE_BYTES, Headroom, probe_writable, storing

log = logging.getLogger(__package__)  # "openkvs.storage.sqlite", the name log records had before the split

T = TypeVar("T")

WRITE_BUFFER = 1024 * 1024  # bytes gathered in memory before one write() to a spill file
PENDING_MS = 24 * 3600 * 1000  # a file being committed is registered as garbage "created" this far in the future
LEASE_SECONDS = 300.0
LEASE_RENEW_SECONDS = 60.0
BUSY_TIMEOUT_MS = 10_000
GC_BATCH = 1000
WAL_SIZE_LIMIT = 64 * 1024 * 1024


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
        reserve_bytes: int = RESERVE_BYTES,
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
        self._space = Headroom(self.data_dir, reserve_bytes)  # see space.py: a full disk stays usable
        self._maintenance_error: str | None = None  # the last failure logged by _maintenance (logged once)
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
            # A long read (a ZIP download) keeps the WAL from being reset, so it grows while others write; once
            # reset, it is cut back to this instead of keeping its largest size for good.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
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
        with storing(self.data_dir):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.blob_dir.mkdir(exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
        probe_writable(self.tmp_dir)
        if not self.db_path.exists():
            self._create_db()
        conn = self._connect(readonly=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageUnavailable(f"cannot switch {self.db_path} to WAL mode (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    # A new database is made whole before it gets its name (_create_db): one without a version
                    # was emptied or replaced. Starting would make a new install over the old record files.
                    raise StorageDamaged(
                        f"{self.db_path} exists but holds no openkvs database "
                        f"({self.db_path.stat().st_size} bytes): restore it from a backup, or move it away to "
                        "start a new, empty installation"
                    )
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.db_path} has schema version {version}; this openkvs knows up to {SCHEMA_VERSION}"
                    )
                if version < SCHEMA_VERSION:
                    for statement in ";".join(_UPGRADES[version - 1 :]).split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StorageDamaged(f"{self.db_path} is damaged ({exc}): run openkvs check") from exc
            raise
        except BaseException:
            conn.close()
            raise
        self._wconn = conn
        _sweep_tmp(self.tmp_dir)

    def _create_db(self) -> None:
        """A brand-new database: built under a temporary name and linked into place complete, so a database file
        without a schema version is never a new install (see _open_sync). Several processes starting at once on
        a new data_dir: the first link wins, the others use it."""
        tmp = self.data_dir / f"{DB_NAME}.new-{os.getpid()}-{new_id(8)}"
        try:
            with storing(self.data_dir):
                conn = sqlite3.connect(tmp, isolation_level=None)
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("BEGIN IMMEDIATE")
                    self._create_schema(conn)
                    conn.execute("COMMIT")
                finally:
                    conn.close()  # the last connection: checkpoints and removes the -wal and -shm files
                if self.fsync:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                try:
                    os.link(tmp, self.db_path)
                except FileExistsError:
                    pass
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
                if self._maintenance_error is not None:
                    log.info("background maintenance works again")
                    self._maintenance_error = None
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # full, read-only, damaged, locked: one line when it starts, not a stream
                if str(exc) != self._maintenance_error:
                    log.warning("background maintenance failed (retrying every %.0f s): %s", self.stats_interval, exc)
                    self._maintenance_error = str(exc)
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
                "INSERT INTO garbage(path, created_at, store_id) SELECT path, ?, store_id FROM records "
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

    def _fetched(self, row: Sequence[Any]) -> RecordMeta:
        """A record read as _RECORD_COLS then ``d.data``: in a file (path) or inline (bytes, maybe none)."""
        path, data = row[8], row[9]
        blob = _File(self.blob_dir / path) if path is not None else _Inline(bytes(data) if data is not None else b"")
        return self._meta(row, blob)

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
                    self._need_space(len(buf))
                    with storing(self.data_dir):
                        f = await anyio.to_thread.run_sync(open, tmp_path, "xb")
                if len(buf) >= WRITE_BUFFER:
                    data, buf = bytes(buf), bytearray()
                    self._need_space(len(data))
                    with storing(self.data_dir):
                        await anyio.to_thread.run_sync(f.write, data)
            if f is not None:
                data, buf = bytes(buf), bytearray()
                self._need_space(len(data))
                with storing(self.data_dir):
                    await anyio.to_thread.run_sync(self._finish_file, f, data)
            decoded_size, crc = body.decoded_size, body.crc32
        except BaseException:
            if f is not None:
                f.close()
            if tmp_path is not None:
                with contextlib.suppress(OSError):  # never created, if the disk is full or read-only
                    tmp_path.unlink(missing_ok=True)
            raise
        if f is not None:
            f.close()

        now = _now_ms()
        row = (key, size, decoded_size, crc & 0xFFFFFFFF, now, content_type, content_encoding)
        if tmp_path is None:
            data = bytes(buf)
            free = self._space.free()
            reusable = await self._reusable() if free - len(data) < self._space.reserve else 0
            if not self._space.enough(len(data), reusable, free):
                raise self._space.refuse()
            await self._write(self._commit_record, store_id, row, data, None)
            return self._meta(row, _Inline(data))
        relpath = self._blob_relpath()
        try:
            await self._write_raw(self._commit_file_record, store_id, row, tmp_path, relpath)
        finally:
            tmp_path.unlink(missing_ok=True)  # already renamed unless something failed
        return self._meta(row, _File(self.blob_dir / relpath))

    def _need_space(self, incoming: int) -> None:
        if not self._space.enough(incoming):
            raise self._space.refuse()

    async def _reusable(self) -> int:
        """Bytes of pages SQLite has freed (deleted inline records) and will reuse before growing the file."""
        return await self._point_read(
            lambda c: c.execute("PRAGMA freelist_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
        )

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
                "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)",
                (relpath, _now_ms() + PENDING_MS, store_id),
            )
            return int(cur.lastrowid)

        pending_id = self._write_sync(register)
        final = self.blob_dir / relpath
        try:
            with storing(self.data_dir):
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
                conn.execute(
                    "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)", (old[2], now, store_id)
                )
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
            return self._fetched(row) if row is not None else None

        return await self._point_read(q)

    async def get_store_and_record(
        self, store_id: str, key: str, owner_id: str | None
    ) -> tuple[Store | None, RecordMeta | None]:
        n = _STORE_NCOLS

        def q(conn: sqlite3.Connection) -> tuple[Store | None, RecordMeta | None]:
            row = conn.execute(_STORE_AND_RECORD, (key, owner_id, store_id)).fetchone()
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
            return store, self._fetched(row[n:])

        return await self._point_read(q)

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        return blob.data if isinstance(blob, _Inline) and len(blob.data) == record.size else None

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = record.blob
        if isinstance(blob, _Inline):
            for chunk in _inline_chunks(blob.data, start, end):
                yield chunk
        elif isinstance(blob, _File):
            start, end = _slice(start, end, record.size)
            async for chunk in _read_file(blob.path, start, end, record.key):
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
                conn.execute(
                    "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)", (old[2], now, store_id)
                )
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
        # The lease first, then the read transaction: every file of this store the snapshot can see is either
        # live or has a garbage id above the watermark. Other stores' garbage is none of its business.
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO leases(id, watermark, expires_at, store_id) "
                "SELECT ?, COALESCE(MAX(id), 0), ?, ? FROM garbage",
                (lease_id, expires, store_id),
            )
        )
        self._leases.add(lease_id)
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = await anyio.to_thread.run_sync(lambda: self._connect(readonly=True))
                snap = await anyio.to_thread.run_sync(_begin_snapshot, self, conn, store_id, selection)
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
                # A lease keeps its own store's garbage above its watermark; rows of version 1 (no store) and
                # leases of version 1 keep, and are kept by, everything.
                return conn.execute(
                    "SELECT g.id, g.path FROM garbage g WHERE g.created_at <= ? AND NOT EXISTS ("
                    " SELECT 1 FROM leases l WHERE l.watermark < g.id"
                    " AND (l.store_id = g.store_id OR l.store_id IS NULL OR g.store_id IS NULL)"
                    ") ORDER BY g.id LIMIT ?",
                    (cutoff, GC_BATCH),
                ).fetchall()

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

    # -- administration (the command line's users list and tokens list) ----------------------------------------

    async def list_users(self) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            return [_user(r) for r in conn.execute("SELECT id, username, created_at FROM users ORDER BY username")]

        return await self._read(q)

    async def list_tokens(self) -> list[TokenInfo]:
        def q(conn: sqlite3.Connection) -> list[TokenInfo]:
            rows = conn.execute(
                "SELECT u.username, t.hash, t.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "ORDER BY u.username, t.created_at, t.hash"
            )
            return [TokenInfo(r[0], r[1][: TokenInfo.ID_LENGTH], _dt(r[2])) for r in rows]

        return await self._read(q)
