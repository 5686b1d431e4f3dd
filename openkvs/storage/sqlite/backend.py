"""``SQLiteStorage``, the backend class: the SQL of records; opening and closing. The SQL of users, tokens, stores
and grants is ``catalog.py``'s, connections and threads ``connections.py``'s, the record files' life (spill,
commit, leases, garbage) ``files.py``'s, the background task and the access counters' flush ``maintenance.py``'s.
The package docstring describes the layout on disk, the concurrency and how bytes are reclaimed."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from openkvs import metrics

from ..base import (
    KVS,
    KeyItem,
    KeyPage,
    KeySelection,
    RecordBody,
    RecordMeta,
    Snapshot,
    Storage,
    StoreLookup,
    StoreMemo,
)
from ..bucket import BlobStore
from ..stats import StatsBuffer
from .blobs import InBucket, Inline, read_held
from .catalog import SQLiteCatalog
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
    LOOKUP,
    RECORD_COLS,
    STORE_CHANGED,
    STORE_NCOLS,
    TABLES_VERSION,
    ZIP_HEAD_FILL,
    commit_record,
    create_database,
    fill_zip_heads,
    now_ms,
    record_delta,
    selection_sql,
    to_record,
    to_record_read,
    to_store,
    upgrade,
)

if TYPE_CHECKING:
    from ..bucket.admin import FsckReport, MigrateProgress

log = logging.getLogger(__package__)  # "openkvs.storage.sqlite", the name log records had before the split

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000


# look_up_store's answers kept while the database is unchanged: how many, and the largest inline record kept with
# one (at most LOOKUPS_KEPT * LOOKUP_BYTES_KEPT = 8 MiB of record bytes).
LOOKUPS_KEPT = 2048
LOOKUP_BYTES_KEPT = 4096
_MISSING = object()


class SQLiteStorage(SQLiteCatalog, SQLiteQueues, Storage):
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
        self._store_memo = StoreMemo()
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

    async def tables_version(self) -> tuple[int, int]:
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
        levels = (*readable, None, None, None)[:3]
        where = (owner_id, name, kind) if store_id is None else (store_id, kind)
        sql = LOOKUP[(store_id is None, key is not None)]
        params = (user_id, *levels, *where, key) if key is not None else (user_id, *levels, *where)
        # methods with arguments rather than closures: two functions and their cells made per request cost more
        conn = self._db._loop_conn
        if conn is None:
            return await self._point_read(self._look_up_kept, sql, params, user_id, key, readable)  # type: ignore[no-any-return]
        try:  # point_read's common case, without its coroutine: this runs on nearly every request
            return self._look_up_kept(conn, sql, params, user_id, key, readable)
        except sqlite3.Error as exc:
            return await self._db.point_read_failed(conn, exc, self._look_up_kept, sql, params, user_id, key, readable)  # type: ignore[no-any-return]

    def _look_up_kept(self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], user_id: str | None,
                      key: str | None, readable: Sequence[str]) -> StoreLookup | None:
        """look_up_store's answer: the same while nothing was committed since it was read (PRAGMA data_version:
        the same on this connection as long as no other connection, in any process, committed; this one only
        reads). The pragma costs an eighth of the lookup it saves (bench/cg_get.py)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        held = self._lookups
        if held[0] is not conn or held[1] != version:
            held = self._lookups = (conn, version, {})
        answers = held[2]
        asked = (sql, params)
        found = answers.get(asked, _MISSING)
        if found is _MISSING:
            found = self._look_up_read(conn, sql, params, user_id, key, readable)
            blob = found.record.blob if found is not None and found.record is not None else None
            if len(answers) < LOOKUPS_KEPT and (not isinstance(blob, Inline) or len(blob.data) <= LOOKUP_BYTES_KEPT):
                answers[asked] = found
        return found  # type: ignore[return-value]

    def _look_up_read(self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], user_id: str | None,
                      key: str | None, readable: Sequence[str]) -> StoreLookup | None:
        n = STORE_NCOLS
        row = conn.execute(sql, params).fetchone()
        if row is None:
            return None
        store_row = row[:n]
        store = self._store_memo.store(store_row, to_store, store_row)
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
                "SELECT size, data_id, path, decoded_size FROM records WHERE store_id = ? AND key = ?", (store_id, key)
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
                STORE_CHANGED,
                (now, *[-n for n in record_delta(key, old[0], old[3])], store_id),
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
                snap = await run_to_end(
                    begin_snapshot, self.blob_dir, conn, store_id, selection, lambda: self._db.connect(readonly=True)
                )
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            if self._objects is None:
                yield snap
            else:
                async with self._objects.snapshot(snap) as with_objects:
                    yield with_objects
        finally:
            with anyio.CancelScope(shield=True):
                if snap is not None:  # through the snapshot's limiters: a batch read still running ends first
                    await snap.close()
                elif conn is not None:
                    await run_to_end(conn.close)
                await self._files.release(lease_id)

    # -- record bytes in a bucket (openkvs blobs) --------------------------------------------------------------

    async def check_bucket(self, *, fix: bool = False) -> FsckReport:
        from .objects_admin import fsck  # loaded when used: only openkvs blobs needs the bucket's administration

        return await fsck(self, fix=fix)

    async def move_record_bytes(
        self, to: str, progress: Callable[[MigrateProgress], None] | None = None
    ) -> MigrateProgress:
        from .objects_admin import migrate

        return await migrate(self, to, progress)

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
        ms = time.time_ns() // 1_000_000  # now_ms, without its call: a record GET counts its read
        if reads == 1 and not (writes or deletes or lists):
            self._stats.add_read(store_id, ms)
        else:
            self._stats.add(store_id, ms, reads=reads, writes=writes, deletes=deletes, lists=lists)

    async def flush_stats(self) -> None:
        await write_stats(self._stats, self._write)
