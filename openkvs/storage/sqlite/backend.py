"""``SQLiteStorage``, the backend class: the SQL of users and tokens, stores, grants and records; opening and
closing. Connections and threads are ``connections.py``'s, the record files' life (spill, commit, leases,
garbage) ``files.py``'s, the background task and the access counters' flush ``maintenance.py``'s. The package
docstring describes the layout on disk, the concurrency and how bytes are reclaimed."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from openkvs import metrics

from ..base import (
    KVS,
    Grant,
    KeyItem,
    KeyPage,
    KeySelection,
    NameNotUnique,
    NotFound,
    RecordBody,
    RecordMeta,
    Snapshot,
    Storage,
    Store,
    StoredTotals,
    StoreLookup,
    TokenInfo,
    User,
    UsernameTaken,
)
from ..bucket import BlobStore
from ..ids import new_id
from ..stats import StatsBuffer
from .blobs import InBucket, Inline, read_held
from .connections import Database, translate
from .datasets import SQLiteDatasets
from .files import RecordFiles
from .maintenance import maintain, write_stats
from .objects import SQLiteObjects
from .onthread import run_to_end
from .queues import SQLiteQueues
from .snapshot import SQLiteSnapshot, begin_snapshot
from .space import RESERVE_BYTES, Headroom
from .tables import (
    DB_NAME,
    EPOCH,
    GRANT_SELECT,
    LOOKUP,
    RECORD_COLS,
    STORE_NCOLS,
    STORE_SELECT,
    TABLES_VERSION,
    ZIP_HEAD_FILL,
    commit_record,
    create_database,
    fill_zip_heads,
    from_ms,
    now_ms,
    selection_sql,
    to_grant,
    to_record,
    to_record_read,
    to_store,
    to_user,
    upgrade,
)

log = logging.getLogger(__package__)  # "openkvs.storage.sqlite", the name log records had before the split

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000


# look_up_store's answers kept while the database is unchanged: how many, and the largest inline record kept with
# one (at most LOOKUPS_KEPT * LOOKUP_BYTES_KEPT = 8 MiB of record bytes).
LOOKUPS_KEPT = 2048
LOOKUP_BYTES_KEPT = 4096
_MISSING = object()


class SQLiteStorage(SQLiteQueues, Storage):
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
        blob_store: BlobStore | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self.fsync = fsync
        self.inline_max = inline_max
        self.gc_grace_seconds = gc_grace_seconds
        self.gc_interval = gc_interval
        self.stats_interval = stats_interval
        self.background = background
        self.busy_timeout = busy_timeout
        self._stats = StatsBuffer()
        self._db = Database(self.db_path, fsync=fsync, busy_timeout=busy_timeout)
        self.datasets = SQLiteDatasets(self._db)  # dataset items (storage/datasets.py)
        # The SQL below runs through these (see connections.py): a point read on the event loop thread, a read in
        # a worker thread, a write transaction in the writer thread, and the writer's own transactions.
        self._point_read = self._db.point_read
        self._read = self._db.read
        self._write = self._db.write
        self._files = RecordFiles(
            self._db,
            self.data_dir,
            fsync=fsync,
            inline_max=inline_max,
            gc_grace_seconds=gc_grace_seconds,
            space=Headroom(self.data_dir, reserve_bytes),  # see space.py: a full disk stays usable
        )
        self.blob_dir = self._files.blob_dir
        # --blob-store: records above its inline_max are objects in the bucket (objects.py)
        self.blob_store = blob_store
        self._objects = SQLiteObjects(self._db, blob_store) if blob_store is not None else None
        self.uploads = self._objects.uploads if self._objects is not None else None
        if self._objects is not None:
            self._files.delete_objects = self._objects.delete_objects
        # store ID -> (its row, the Store built from it): a record GET whose store row is unchanged reuses the
        # Store instead of converting 16 columns again. Checked against the row just read, so never stale.
        self._store_memo: dict[str, tuple[tuple[Any, ...], Store]] = {}
        # look_up_store's answers read at one data_version of one connection: (connection, version, answers)
        self._lookups: tuple[Any, int, dict[tuple[str, tuple[Any, ...]], Any]] = (None, -1, {})
        self._task: asyncio.Task[None] | None = None
        self._fill_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if not self._db.closed:
            return
        writer = await self._run_sync(self._open_sync)
        self._db.start(writer)
        if self._objects is not None:
            await self._objects.check()
        if self.background:
            self._task = asyncio.get_running_loop().create_task(
                maintain(
                    self.flush_stats,
                    self.collect_garbage,
                    self._files,
                    interval=self.stats_interval,
                    gc_interval=self.gc_interval,
                    renew_uploads=self.uploads.renew if self.uploads is not None else None,
                )
            )
            self._fill_task = asyncio.get_running_loop().create_task(self._fill_zip_heads_in_background())

    async def _run_sync(self, fn: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(fn)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _open_sync(self) -> sqlite3.Connection:
        """In a worker thread: the database ready, the uploads of crashed processes swept away; returns the
        writer connection."""
        conn = self._migrate_sync()
        self._files.sweep()
        return conn

    def _migrate_sync(self) -> sqlite3.Connection:
        """The data dir and the database ready (created, or its tables upgraded); returns the writer connection."""
        self._files.prepare()
        if not self.db_path.exists():
            create_database(self.db_path, fsync=self.fsync)
        conn = self._db.connect(readonly=False)
        upgrade(conn, self.db_path)
        return conn

    async def migrate(self) -> int:
        await self._run_sync(lambda: self._migrate_sync().close())
        if not self._db.closed:
            await self.fill_zip_heads()
        return TABLES_VERSION

    async def fill_zip_heads(self, pause: float = 0.0) -> int:
        """Give every record without one its records.zip_head (rows from before version 9: see tables.py), a
        write transaction of ZIP_HEAD_FILL rows at a time, ``pause`` seconds between them so that other writes
        go in between. Returns how many were filled. Run in the background after ``open``; a ZIP download reads
        rows without one the slower way meanwhile, so nothing waits for it."""
        filled = 0
        while n := await self._write(fill_zip_heads):
            filled += n
            if n < ZIP_HEAD_FILL:
                break
            await asyncio.sleep(pause)
        return filled

    async def _fill_zip_heads_in_background(self) -> None:
        try:
            filled = await self.fill_zip_heads(pause=0.005)
        except Exception as exc:  # a read-only or full disk: the downloads read those rows the slower way
            log.warning("could not keep the ZIP headers of older records (%s); will retry at the next start", exc)
        else:
            if filled:
                log.info("kept the ZIP headers of %d older records", filled)

    async def schema_version(self) -> tuple[int, int]:
        version = await self._point_read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
        return int(version), TABLES_VERSION

    async def drop(self) -> None:
        """Deletes the database and the record files; the data dir itself stays, with anything else in it."""

        def drop_sync() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            for d in (self.blob_dir, self._files.tmp_dir):
                shutil.rmtree(d, ignore_errors=True)

        await anyio.to_thread.run_sync(drop_sync)

    async def aclose(self) -> None:
        if self._db.closed:
            return
        for task in (self._task, self._fill_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._task = self._fill_task = None
        with anyio.CancelScope(shield=True):
            try:
                await self.flush_stats()
            except Exception:
                log.exception("could not flush access counters at close")
            await self._db.close()
            if self.blob_store is not None:
                await self.blob_store.aclose()

    # -- users and tokens --------------------------------------------------------------------------------------

    async def create_user(self, username: str) -> User:
        user = User(id=new_id(), username=username, created_at=from_ms(now_ms()))

        def txn(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users(id, username, created_at) VALUES (?, ?, ?)",
                    (user.id, username, int((user.created_at - EPOCH) / timedelta(milliseconds=1))),
                )
            except sqlite3.IntegrityError as exc:
                raise UsernameTaken(username) from exc

        await self._write(txn)
        return user

    async def get_user_by_name(self, username: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute("SELECT id, username, created_at FROM users WHERE username = ?", (username,)).fetchone()
            return to_user(row) if row else None

        return await self._point_read(q)

    async def add_token(self, user_id: str, token_hash: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id}")
            conn.execute(
                "INSERT INTO tokens(hash, user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET user_id = excluded.user_id",
                (token_hash, user_id, now_ms()),
            )

        await self._write(txn)

    async def user_by_token(self, token_hash: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT u.id, u.username, u.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.hash = ?",
                (token_hash,),
            ).fetchone()
            return to_user(row) if row else None

        return await self._point_read(q)

    async def revoke_token(self, token_hash: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,)).rowcount > 0
        )

    # -- stores ------------------------------------------------------------------------------------------------

    @staticmethod
    def _store_by_id(conn: sqlite3.Connection, store_id: str) -> Store | None:
        row = conn.execute(STORE_SELECT + " WHERE s.id = ?", (store_id,)).fetchone()
        return to_store(row) if row else None

    @staticmethod
    def _store_by_name(conn: sqlite3.Connection, user_id: str, name: str, kind: str) -> Store | None:
        row = conn.execute(
            STORE_SELECT + " WHERE s.user_id = ? AND s.kind = ? AND s.name = ? COLLATE NOCASE", (user_id, kind, name)
        ).fetchone()
        return to_store(row) if row else None

    @staticmethod
    def _insert_store(
        conn: sqlite3.Connection,
        user_id: str,
        name: str | None,
        schema: dict[str, Any] | None,
        signing_key: str,
        kind: str,
    ) -> Store:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"user {user_id}")
        store_id = new_id()
        now = now_ms()
        try:
            conn.execute(
                "INSERT INTO stores(id, kind, user_id, name, general_access, schema, url_signing_secret_key,"
                " created_at, modified_at, accessed_at) VALUES (?, ?, ?, ?, 'FOLLOW_USER_SETTING', ?, ?, ?, ?, ?)",
                (
                    store_id,
                    kind,
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
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> Store:
        return await self._write(self._insert_store, user_id, name, schema, signing_key, kind)

    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> tuple[Store, bool]:
        def txn(conn: sqlite3.Connection) -> tuple[Store, bool]:
            # BEGIN IMMEDIATE serialises this with every other writer of every process: look, then insert.
            existing = self._store_by_name(conn, user_id, name, kind)
            if existing is not None:
                return existing, False
            return self._insert_store(conn, user_id, name, schema, signing_key, kind), True

        return await self._write(txn)

    async def get_store(self, store_id: str) -> Store | None:
        return await self._point_read(self._store_by_id, store_id)

    async def get_store_by_name(self, user_id: str, name: str, *, kind: str = KVS) -> Store | None:
        return await self._point_read(self._store_by_name, user_id, name, kind)

    async def list_stores(
        self,
        user_id: str,
        *,
        offset: int,
        limit: int,
        desc: bool,
        unnamed: bool,
        ownership: str | None,
        kind: str = KVS,
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
        where += " AND s.kind = ?"
        params.append(kind)
        if not unnamed:
            where += " AND s.name IS NOT NULL"
        order = "DESC" if desc else "ASC"

        def q(conn: sqlite3.Connection) -> tuple[int, list[Store]]:
            conn.execute("BEGIN")
            try:
                total = conn.execute(f"SELECT COUNT(*) FROM stores s WHERE {where}", params).fetchone()[0]
                rows = conn.execute(
                    # stores made in the same millisecond in the order they were made (rowid), not by random ID
                    f"{STORE_SELECT} WHERE {where} ORDER BY s.created_at {order}, s.rowid {order} LIMIT ? OFFSET ?",
                    [*params, limit, offset],
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return total, [to_store(r) for r in rows]

        return await self._read(q)

    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        columns = {
            "name": "name",
            "title": "title",
            "general_access": "general_access",
            "schema": "schema",
            "url_signing_secret_key": "url_signing_secret_key",
        }
        unknown = set(changes) - set(columns)
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")

        def txn(conn: sqlite3.Connection) -> Store:
            sets, params = ["modified_at = ?"], [now_ms()]
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
                (now_ms(), store_id),
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

    async def list_grants(self, store_id: str) -> list[Grant]:
        def q(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(GRANT_SELECT + "WHERE g.store_id = ? ORDER BY u.username", (store_id,))
            return [to_grant(r) for r in rows]

        return await self._read(q)

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        def q(conn: sqlite3.Connection) -> Grant | None:
            r = conn.execute(
                GRANT_SELECT + "WHERE g.store_id = ? AND g.user_id = ?", (store_id, user_id)
            ).fetchone()
            return to_grant(r) if r else None

        return await self._point_read(q)

    async def user_grants(self, user_id: str, store_ids: Sequence[str]) -> dict[str, Grant]:
        ids = list(dict.fromkeys(store_ids))
        if not ids:
            return {}

        def q(conn: sqlite3.Connection) -> dict[str, Grant]:
            rows = conn.execute(
                GRANT_SELECT + f"WHERE g.user_id = ? AND g.store_id IN ({', '.join('?' * len(ids))})",
                (user_id, *ids),
            )
            return {r[0]: to_grant(r) for r in rows}

        return await self._read(q)

    # -- records -----------------------------------------------------------------------------------------------

    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta:
        if self._objects is not None:  # a big record becomes an object; a small one comes back, read
            written = await self._objects.put_record(store_id, key, body, content_type, content_encoding)
            if isinstance(written, RecordMeta):
                return written
            body = written
        size, data, tmp_path = await self._files.spill(body)
        row = (key, size, body.decoded_size, body.crc32 & 0xFFFFFFFF, now_ms(), content_type, content_encoding)
        if tmp_path is None:
            await self._files.need_inline_space(len(data))
            await self._write(commit_record, store_id, row, data, None)
            return to_record(row, Inline(data))
        return to_record(row, await self._files.commit(store_id, row, tmp_path, commit_record))

    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        def q(conn: sqlite3.Connection) -> RecordMeta | None:
            row = conn.execute(
                f"SELECT {RECORD_COLS}, d.data FROM records r LEFT JOIN record_data d ON d.id = r.data_id "
                "WHERE r.store_id = ? AND r.key = ?",
                (store_id, key),
            ).fetchone()
            return to_record_read(row, self.blob_dir) if row is not None else None

        return await self._point_read(q)

    async def look_up_store(
        self,
        user_id: str | None,
        *,
        store_id: str | None = None,
        owner_id: str | None = None,
        name: str | None = None,
        key: str | None = None,
        readable: Sequence[str] = (),
        kind: str = KVS,
    ) -> StoreLookup | None:
        n = STORE_NCOLS
        levels = (*readable, None, None, None)[:3]
        where = (owner_id, name, kind) if store_id is None else (store_id, kind)
        sql = LOOKUP[(store_id is None, key is not None)]
        params = (user_id, *levels, *where, key) if key is not None else (user_id, *levels, *where)

        def cached(conn: sqlite3.Connection) -> StoreLookup | None:
            # The same answer while nothing was committed since it was read (PRAGMA data_version: the same on
            # this connection as long as no other connection, in any process, committed; this one only reads).
            # The pragma costs an eighth of the lookup it saves (bench/cg_get.py).
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            held = self._lookups
            if held[0] is not conn or held[1] != version:
                held = self._lookups = (conn, version, {})
            answers = held[2]
            asked = (sql, params)
            found = answers.get(asked, _MISSING)
            if found is _MISSING:
                found = q(conn)
                blob = found.record.blob if found is not None and found.record is not None else None
                if len(answers) < LOOKUPS_KEPT and (
                    not isinstance(blob, Inline) or len(blob.data) <= LOOKUP_BYTES_KEPT
                ):
                    answers[asked] = found
            return found  # type: ignore[return-value]

        def q(conn: sqlite3.Connection) -> StoreLookup | None:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            store_row = row[:n]
            sid = store_row[0]
            memo = self._store_memo.get(sid)
            if memo is not None and memo[0] == store_row:
                store = memo[1]
            else:
                store = to_store(store_row)
                if len(self._store_memo) >= 1024:
                    self._store_memo.clear()
                self._store_memo[sid] = (store_row, store)
            grant = row[n]
            found = StoreLookup(store, None if grant is None else bool(grant))
            if key is not None:
                if row[n + 1] is not None:  # the LEFT JOIN found the record, so the caller may read
                    found.record = to_record_read(row, self.blob_dir, n + 1)
                    found.record_read = True
                else:  # no such record, or not this caller's to read: the join's rule, in Python
                    found.record_read = (
                        store.user_id == user_id or grant is not None or store.general_access in readable
                    )
            return found

        return await self._point_read(cached)

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        return blob.data if isinstance(blob, Inline) and len(blob.data) == record.size else None

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if self._objects is not None and isinstance(record.blob, InBucket):
            async for chunk in self._objects.read_blob(record.blob, start, end):
                yield chunk
            return
        async for chunk in read_held(record, start, end, "storage", "; use the snapshot's read_blob"):
            yield chunk

    async def delete_record(self, store_id: str, key: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            old = conn.execute(
                "SELECT size, data_id, path FROM records WHERE store_id = ? AND key = ?", (store_id, key)
            ).fetchone()
            if old is None:
                return False
            now = now_ms()
            conn.execute("DELETE FROM records WHERE store_id = ? AND key = ?", (store_id, key))
            if old[1] is not None:
                conn.execute("DELETE FROM record_data WHERE id = ?", (old[1],))
            if old[2] is not None:
                conn.execute(
                    "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)", (old[2], now, store_id)
                )
            conn.execute(
                "UPDATE stores SET generation = generation + 1, modified_at = ?, storage_bytes = storage_bytes - ?, "
                "record_count = record_count - 1 WHERE id = ?",
                (now, old[0], store_id),
            )
            return True

        return await self._write(txn)

    async def list_keys(
        self, store_id: str, selection: KeySelection, exclusive_start_key: str | None, limit: int
    ) -> KeyPage:
        cond, params = selection_sql(selection)
        if exclusive_start_key is not None:
            cond += " AND key > ?"
            params.append(exclusive_start_key)

        def q(conn: sqlite3.Connection) -> KeyPage:
            rows = conn.execute(
                f"SELECT key, size, content_type FROM records WHERE store_id = ? AND {cond} ORDER BY key LIMIT ?",
                [store_id, *params, limit + 1],
            ).fetchall()
            return KeyPage([KeyItem(k, s, t) for k, s, t in rows[:limit]], is_truncated=len(rows) > limit)

        return await self._read(q)

    # -- snapshots ---------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def snapshot(self, store_id: str, selection: KeySelection) -> AsyncIterator[Snapshot]:
        # The lease first, then the read transaction (see files.py).
        lease_id = await self._files.lease(store_id)
        conn: sqlite3.Connection | None = None
        snap: SQLiteSnapshot | None = None
        try:
            try:
                conn = await anyio.to_thread.run_sync(lambda: self._db.connect(readonly=True))
                snap = await run_to_end(begin_snapshot, self.blob_dir, conn, store_id, selection)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            if self._objects is None:
                yield snap
            else:
                async with self._objects.snapshot(snap) as with_objects:
                    yield with_objects
        finally:
            with anyio.CancelScope(shield=True):
                if conn is not None:  # through the snapshot's limiter: a batch read still running ends first
                    await run_to_end(conn.close, limiter=snap.limiter if snap is not None else None)
                await self._files.release(lease_id)

    # -- garbage -----------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: datetime | None = None, grace: float | None = None) -> int:
        freed = await self._files.collect_garbage(now, grace)
        if self._objects is not None:
            freed += await self._objects.sweep(now)
        return freed

    def sample_metrics(self) -> None:
        metrics.WRITER_QUEUE.set(self._db.writer_queue())

    # -- stats -------------------------------------------------------------------------------------------------

    def count_access(
        self, store_id: str, *, reads: int = 0, writes: int = 0, deletes: int = 0, lists: int = 0
    ) -> None:
        self._stats.add(store_id, now_ms(), reads=reads, writes=writes, deletes=deletes, lists=lists)

    async def flush_stats(self) -> None:
        await write_stats(self._stats, self._write)

    # -- administration (the command line's users list and tokens list) ----------------------------------------

    async def stored_totals(self) -> StoredTotals:
        def q(conn: sqlite3.Connection) -> StoredTotals:
            # the records from each store's kept count: a scrape of /metrics reads one row per store, not every record
            kinds = conn.execute(
                "SELECT kind, count(*), coalesce(sum(storage_bytes), 0), coalesce(sum(record_count), 0) FROM stores "
                "GROUP BY kind"
            ).fetchall()
            records = sum(r for *_, r in kinds)
            return StoredTotals({k: n for k, n, _, _ in kinds}, {k: b for k, _, b, _ in kinds}, records)

        return await self._read(q)

    async def list_users(self) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            return [to_user(r) for r in conn.execute("SELECT id, username, created_at FROM users ORDER BY username")]

        return await self._read(q)

    async def list_tokens(self) -> list[TokenInfo]:
        def q(conn: sqlite3.Connection) -> list[TokenInfo]:
            rows = conn.execute(
                "SELECT u.username, t.hash, t.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "ORDER BY u.username, t.created_at, t.hash"
            )
            return [TokenInfo(r[0], r[1][: TokenInfo.ID_LENGTH], from_ms(r[2])) for r in rows]

        return await self._read(q)
