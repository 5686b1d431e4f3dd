"""The life of record files, from upload to deletion: a body bigger than ``inline_max`` is spilled to tmp/, moved
into blobs/ when its record commits (registered as pending garbage meanwhile, so a crash leaves nothing that is
never reclaimed), becomes garbage when its record is replaced or deleted, and is deleted by ``collect_garbage``
once the grace period is over and no snapshot's lease still needs it. Also the space checks that keep a full
disk usable (space.py) for record bytes. The package docstring explains the leases' watermarks."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from openkvs import metrics

from ..base import RecordBody
from ..ids import new_id
from .blobs import OBJECT_PATH, BlobFile, own_path, sweep_tmp
from .connections import Database
from .space import Headroom, probe_writable, storing
from .tables import now_ms, to_ms

log = logging.getLogger(__package__)

WRITE_BUFFER = 1024 * 1024  # bytes gathered in memory before one write() to a spill file
PENDING_MS = 24 * 3600 * 1000  # a file being committed is registered as garbage "created" this far in the future
LEASE_SECONDS = 300.0
GC_BATCH = 1000

# commit_record(conn, store_id, row, data, relpath, pending_id): tables.commit_record, in the writer thread
CommitRecord = Callable[[sqlite3.Connection, str, tuple[Any, ...], bytes | None, str | None, int | None], None]


class RecordFiles:
    def __init__(
        self, db: Database, data_dir: Path, *, fsync: bool, inline_max: int, gc_grace_seconds: float, space: Headroom
    ) -> None:
        self.db = db
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.tmp_dir = data_dir / "tmp"
        self.fsync = fsync
        self.inline_max = inline_max
        self.gc_grace_seconds = gc_grace_seconds
        self.space = space
        self.leases: set[str] = set()  # leases of this process's open snapshots (renewed in the background)
        # With --blob-store: deletes objects of the bucket by blob id (sqlite/objects.py). Without, garbage that is
        # an object (path s3:<id>) waits for a process that has the bucket.
        self.delete_objects: Callable[[list[int]], Awaitable[None]] | None = None

    def prepare(self) -> None:
        """At start-up (in a worker thread): the directories, and a data dir that can't be written refused."""
        with storing(self.data_dir):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.blob_dir.mkdir(exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
        probe_writable(self.tmp_dir)

    def sweep(self) -> None:
        sweep_tmp(self.tmp_dir)

    # -- writing -----------------------------------------------------------------------------------------------

    async def spill(self, body: RecordBody) -> tuple[int, bytes, Path | None]:
        """Read ``body``: (its size, its bytes, None) when it fits in ``inline_max``, else (its size, b"", the tmp/
        file holding it). The space above the reserve is checked before each write to the file."""
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
        except BaseException:
            if f is not None:
                f.close()
            if tmp_path is not None:
                with contextlib.suppress(OSError):  # never created, if the disk is full or read-only
                    tmp_path.unlink(missing_ok=True)
            raise
        if f is not None:
            f.close()
        return size, bytes(buf), tmp_path

    def _need_space(self, incoming: int) -> None:
        if not self.space.enough(incoming):
            raise self.space.refuse()

    async def need_inline_space(self, incoming: int) -> None:
        """Room for an inline record of ``incoming`` bytes, counting the pages SQLite will reuse first."""
        free = self.space.free()
        reusable = await self._reusable() if free - incoming < self.space.reserve else 0
        if not self.space.enough(incoming, reusable, free):
            raise self.space.refuse()

    async def _reusable(self) -> int:
        """Bytes of pages SQLite has freed (deleted inline records) and will reuse before growing the file."""
        return await self.db.point_read(
            lambda c: c.execute("PRAGMA freelist_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
        )

    def _finish_file(self, f: Any, data: bytes) -> None:
        if data:
            f.write(data)
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    async def commit(
        self, store_id: str, row: tuple[Any, ...], tmp_path: Path, commit_record: CommitRecord
    ) -> BlobFile:
        """Move the spilled file ``tmp_path`` into blobs/ and write its record (``commit_record``) with it."""
        name = new_id(24)
        relpath = f"{name[0:2]}/{name[2:4]}/{name}"
        try:
            await self.db.write_raw(self._commit_sync, store_id, row, tmp_path, relpath, commit_record)
        finally:
            tmp_path.unlink(missing_ok=True)  # already renamed unless something failed
        return BlobFile(self.blob_dir / relpath)

    def _commit_sync(
        self,
        conn: sqlite3.Connection,
        store_id: str,
        row: tuple[Any, ...],
        tmp_path: Path,
        relpath: str,
        commit_record: CommitRecord,
    ) -> None:
        """In the writer thread: register the file as pending garbage, move it into blobs/, then commit the
        record and unregister it. A crash at any point leaves either the old record and a reclaimable file, or
        the new record with its file."""

        def register(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)",
                (relpath, now_ms() + PENDING_MS, store_id),
            )
            assert cur.lastrowid is not None  # an INSERT sets it
            return cur.lastrowid

        write = self.db.write_sync
        pending_id = write(register)
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
            write(commit_record, store_id, row, None, relpath, pending_id)
        except BaseException:
            final.unlink(missing_ok=True)
            try:
                write(lambda c: c.execute("DELETE FROM garbage WHERE id = ?", (pending_id,)))
            except Exception:
                pass  # the pending row is reclaimed later; the file is gone already
            raise

    # -- leases ------------------------------------------------------------------------------------------------

    async def lease(self, store_id: str) -> str:
        """A snapshot's lease on ``store_id``'s files, taken before its read transaction begins: every file of
        this store the snapshot can see is either live or has a garbage id above the watermark. Other stores'
        garbage is none of its business."""
        lease_id = new_id()
        expires = now_ms() + int(LEASE_SECONDS * 1000)
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO leases(id, watermark, expires_at, store_id) "
                "SELECT ?, COALESCE(MAX(id), 0), ?, ? FROM garbage",
                (lease_id, expires, store_id),
            )
        )
        self.leases.add(lease_id)
        return lease_id

    async def release(self, lease_id: str) -> None:
        self.leases.discard(lease_id)
        try:
            await self.db.write(lambda c: c.execute("DELETE FROM leases WHERE id = ?", (lease_id,)))
        except Exception:
            log.warning("could not delete lease %s (it expires by itself)", lease_id, exc_info=True)

    async def renew_leases(self) -> None:
        leases = list(self.leases)
        if not leases:
            return
        expires = now_ms() + int(LEASE_SECONDS * 1000)
        await self.db.write(
            lambda conn: conn.executemany(
                "UPDATE leases SET expires_at = ? WHERE id = ?", [(expires, lease) for lease in leases]
            )
        )

    # -- garbage -----------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: datetime | None = None, grace: float | None = None) -> int:
        """Delete files no reader can need any more; returns how many garbage rows were reclaimed. ``now`` (an
        aware datetime; default the clock) and ``grace`` (seconds; default ``gc_grace_seconds``) are for tests."""
        metrics.GC_RUNS.inc()
        now_at = to_ms(now)
        cutoff = now_at - int((self.gc_grace_seconds if grace is None else grace) * 1000)
        total = 0
        while True:

            def pick(conn: sqlite3.Connection) -> list[tuple[int, str]]:
                conn.execute("DELETE FROM leases WHERE expires_at < ?", (now_at,))
                # A lease keeps its own store's garbage above its watermark; rows of version 1 (no store) and
                # leases of version 1 keep, and are kept by, everything.
                return conn.execute(
                    "SELECT g.id, g.path FROM garbage g WHERE g.created_at <= ? AND NOT EXISTS ("
                    " SELECT 1 FROM leases l WHERE l.watermark < g.id"
                    " AND (l.store_id = g.store_id OR l.store_id IS NULL OR g.store_id IS NULL)"
                    f") AND (? OR substr(g.path, 1, {len(OBJECT_PATH)}) <> ?) ORDER BY g.id LIMIT ?",
                    (cutoff, self.delete_objects is not None, OBJECT_PATH, GC_BATCH),
                ).fetchall()

            batch = await self.db.write(pick)
            if not batch:
                return total

            def unlink_all(paths: list[str]) -> int:
                freed = 0
                for p in paths:
                    if not own_path(p):  # a row openkvs didn't write (check names it): blobs/ + p is any file
                        log.warning("garbage path %r is not a record file's: not deleted", p)
                        continue
                    try:
                        path = self.blob_dir / p
                        with contextlib.suppress(FileNotFoundError):
                            freed += path.stat().st_size
                        path.unlink(missing_ok=True)
                    except OSError:
                        log.warning("could not delete %s", p, exc_info=True)
                return freed

            objects = [int(p[len(OBJECT_PATH) :]) for _, p in batch if p.startswith(OBJECT_PATH) and own_path(p)]
            if objects and self.delete_objects is not None:
                await self.delete_objects(objects)  # before the rows go: a failure keeps them for the next pass
            files = [p for _, p in batch if not p.startswith(OBJECT_PATH)]
            metrics.GC_FREED_BYTES.inc(await anyio.to_thread.run_sync(unlink_all, files))
            ids = [(i,) for i, _ in batch]
            await self.db.write(lambda conn, ids=ids: conn.executemany("DELETE FROM garbage WHERE id = ?", ids))
            total += len(batch)
            if len(batch) < GC_BATCH:
                return total
