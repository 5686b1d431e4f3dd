"""SQLite's connections and threads, the mechanism only (no table is named here): one writer connection used in
one worker thread at a time (a capacity limiter of one), a pool of reader connections used in worker threads,
one reader on the event loop thread for point reads, and sqlite3 errors translated to the storage errors.

Every write is a ``BEGIN IMMEDIATE`` transaction, which SQLite serialises across processes (``busy_timeout``
makes the others wait); WAL readers don't wait for writers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..base import StorageDamaged, StorageFull, StorageUnavailable
from .checkpoints import Checkpoints
from .onthread import run_to_end

T = TypeVar("T")

log = logging.getLogger("openkvs")

WAL_SIZE_LIMIT = 64 * 1024 * 1024
# Connections of ended snapshots kept for the next one: a connect (and its first statement's schema read) costs
# ~0.2 ms of CPU, against ~5 us to reuse one: a dataset page read (apify-client's list_items) opens a snapshot.
SNAPSHOTS_KEPT = 4
# A snapshot that reads many large rows (a ZIP of large inline records, a dataset export) reads the database file
# through a memory map: a row past a page lives in a chain of overflow pages, which SQLite otherwise reads with a
# pread each. The pages it touched stay resident while mapped and count in the process's RSS, so the map is dropped
# and made again (``remap``) after about REMAP_BYTES read through it, between two statements.
MMAP_BYTES = 1 << 40  # as much of the file as SQLite maps (it caps this at its own limit, 2 GiB in Debian's build)
REMAP_BYTES = 16 * 1024 * 1024

_UNAVAILABLE_MARKERS = ("locked", "busy", "unable to open", "disk i/o")  # may pass: 503, retry
_FULL_MARKERS = ("disk is full", "readonly")  # nothing new can be stored: 507
_DAMAGED_MARKERS = ("not a database", "malformed")  # permanent until repaired


def set_map(conn: sqlite3.Connection, mapped: bool) -> None:
    """Read ``conn``'s database file through a memory map from its next statement on, or (not ``mapped``) drop the
    map. Also in a read transaction: the snapshot it holds is the same."""
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES if mapped else 0}")


def remap(conn: sqlite3.Connection) -> None:
    """Between statements: drop ``conn``'s map and map again (see REMAP_BYTES). A 125 MiB archive of 64 KiB records
    read through one map: +133 MiB of RSS; with a remap every REMAP_BYTES, +10 MiB at the same speed."""
    set_map(conn, False)
    set_map(conn, True)


def translate(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    ):
        msg = str(exc).lower()
        if any(m in msg for m in _FULL_MARKERS):
            return StorageFull(f"SQLite: {exc}")
        if any(m in msg for m in _DAMAGED_MARKERS):
            return StorageDamaged(f"SQLite: {exc}")
        if any(m in msg for m in _UNAVAILABLE_MARKERS):
            return StorageUnavailable(f"SQLite: {exc}")
    return exc


def _ended(value: T) -> T:
    """A write function's result, with no statement left in progress on the writer connection. A cursor handed
    out keeps its statement open while anything refers to it (the worker thread's work item does, for a moment
    after the loop has the result), and an open write statement (``... RETURNING``, ``PRAGMA wal_checkpoint``)
    makes SQLite refuse every COMMIT of the connection: 'cannot commit transaction - SQL statements in progress'.
    Closing the cursor ends its statement and keeps ``rowcount`` and ``lastrowid``."""
    if isinstance(value, sqlite3.Cursor):
        value.close()
    return value


def _drop_locals(exc: BaseException) -> None:
    """Free the locals of the frames a failed write function left in ``exc``'s traceback: a cursor among them
    would keep its statement open (see ``_ended``), through the ROLLBACK, for as long as the exception lives."""
    traceback.clear_frames(exc.__traceback__)


class _Job:
    """A write waiting for the writer thread (see ``Database.write``)."""

    __slots__ = ("fn", "args", "value", "error", "done")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.done: asyncio.Future[None] | None = None  # for a job that waits on another's group


class Database:
    """The connections of one SQLite database file. ``connect`` makes one; ``start`` takes the writer connection
    (made and brought up to date by the caller) and opens the rest for use; ``close`` closes them all."""

    def __init__(self, path: Path, *, fsync: bool, busy_timeout: float) -> None:
        self.path = path
        self.fsync = fsync
        self.busy_timeout = busy_timeout
        self._wconn: sqlite3.Connection | None = None
        self._wlimiter: anyio.CapacityLimiter | None = None
        self._pool: list[sqlite3.Connection] = []
        self._all_conns: set[sqlite3.Connection] = set()
        self._loop_conn: sqlite3.Connection | None = None  # point reads on the event loop thread
        self._kept: list[sqlite3.Connection] = []  # idle snapshot connections (snapshot_connection)
        self._pool_lock = threading.Lock()
        self._reading = 0  # reader connections in use in worker threads (``close`` waits for none)
        self._no_reader = threading.Condition(self._pool_lock)
        self._queue: list[_Job] = []  # writes waiting for the next group commit
        self._leading = False  # a group is being committed (its leader answers the queued ones after)
        self._next: asyncio.Future[None] | None = None  # the task leading the next group, kept referenced
        self._checkpoints: Checkpoints | None = None  # the WAL's, beside the writes (checkpoints.py)
        self.closed = True

    def connect(self, *, readonly: bool, busy_timeout: float | None = None) -> sqlite3.Connection:
        busy_timeout = self.busy_timeout if busy_timeout is None else busy_timeout
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
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

    def start(self, writer: sqlite3.Connection) -> None:
        """On the event loop: ``writer`` (a ``connect(readonly=False)``) becomes the writer, reads may begin."""
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # (a thread of its own does them: checkpoints.py)
        self._checkpoints = Checkpoints(
            lambda: self.connect(readonly=False, busy_timeout=0), self.path.with_name(self.path.name + "-shm")
        )
        self._wconn = writer
        self._wlimiter = anyio.CapacityLimiter(1)
        self.closed = False

    async def close(self) -> None:
        """Close every connection once no thread uses it: from here on no read or write starts, and the ones
        running (in worker threads, cancelled or not: see ``run_to_end``) end first."""
        with self._pool_lock:
            self.closed = True
            loop_conn, self._loop_conn = self._loop_conn, None
            if loop_conn is not None:
                self._all_conns.discard(loop_conn)
        if loop_conn is not None:
            loop_conn.close()  # here, on the thread of the point reads: none runs now
        if self._wlimiter is None:
            self._close_sync()
        else:
            await run_to_end(self._close_sync, limiter=self._wlimiter)  # the writer's: no write runs

    def _close_sync(self) -> None:
        with self._pool_lock:
            self.closed = True
            while self._reading:
                self._no_reader.wait()
            conns = list(self._all_conns) + self._kept
            self._all_conns.clear()
            self._pool.clear()
            self._kept = []
        for conn in conns:
            conn.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    # -- snapshots ---------------------------------------------------------------------------------------------

    def snapshot_connection(self) -> sqlite3.Connection:
        """In a worker thread: a reader connection of its own for a snapshot (held across awaits, so not one of the
        pool's), kept from an ended snapshot if there is one. Give it back with ``end_snapshot``."""
        with self._pool_lock:
            if self.closed:
                raise StorageUnavailable("storage is closed")
            if self._kept:
                return self._kept.pop()
        return self.connect(readonly=True)

    def end_snapshot(self, conn: sqlite3.Connection) -> None:
        """In a worker thread, once nothing runs on ``conn``: its transaction ended, kept for the next snapshot
        (up to SNAPSHOTS_KEPT) or closed."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA shrink_memory")  # an export's pages (up to cache_size) not held while idle
        except sqlite3.Error:  # not kept in an unknown state: closed, as before there was keeping
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        with self._pool_lock:
            if not self.closed and len(self._kept) < SNAPSHOTS_KEPT:
                self._kept.append(conn)
                return
        conn.close()

    # -- readers -----------------------------------------------------------------------------------------------

    def _read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """In a worker thread: ``fn(conn, *args)`` on a reader connection of the pool, counted in use meanwhile
        (here, in the thread that uses it, so that ``close`` waits for it whatever became of the caller)."""
        with self._pool_lock:
            if self.closed:
                raise StorageUnavailable("storage is closed")
            self._reading += 1
            conn = self._pool.pop() if self._pool else None
        try:
            if conn is None:
                conn = self.connect(readonly=True)
                with self._pool_lock:
                    self._all_conns.add(conn)
            return fn(conn, *args)
        finally:
            try:
                if conn is not None:
                    self._release_read(conn)
            finally:
                with self._pool_lock:
                    self._reading -= 1
                    if not self._reading:
                        self._no_reader.notify_all()

    def _release_read(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except BaseException:  # not back to the pool with a transaction open: closed
            with self._pool_lock:
                self._all_conns.discard(conn)
            conn.close()
            raise
        with self._pool_lock:
            if not self.closed:
                self._pool.append(conn)
                return
            self._all_conns.discard(conn)
        conn.close()

    async def point_read(self, fn: Callable[..., T], *args: Any) -> T:
        """A lookup by a primary or unique key takes microseconds, less than the hop to a worker thread, so it
        runs right here on the event loop thread, on a connection of its own. WAL readers don't wait for writers;
        should the database be busy anyway (recovery, a checkpoint's lock), it never waits here (busy timeout 0)
        but goes the usual way, through a worker thread that may wait."""
        conn = self._loop_conn
        if conn is None:
            if self.closed:
                raise StorageUnavailable("storage is closed")
            conn = self._loop_conn = self.connect(readonly=True, busy_timeout=0)
            with self._pool_lock:
                self._all_conns.add(conn)
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            return await self.point_read_failed(conn, exc, fn, *args)

    async def point_read_failed(self, conn: sqlite3.Connection, exc: sqlite3.Error, fn: Callable[..., T],
                                *args: Any) -> T:
        """``point_read`` after ``fn(conn, *args)`` on the event loop's connection raised ``exc``: a busy or
        locked database goes the usual way (a worker thread that may wait), any other error is translated."""
        if isinstance(exc, sqlite3.OperationalError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if any(m in str(exc).lower() for m in ("locked", "busy")):
                return await self.read(fn, *args)
        raise translate(exc) from exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a reader connection, in a worker thread."""
        try:
            return await run_to_end(self._read_sync, fn, *args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    # -- the writer --------------------------------------------------------------------------------------------

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """In the writer thread: ``fn(conn, *args)`` in one write transaction."""
        conn = self._wconn
        if conn is None:
            raise StorageUnavailable("storage is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _ended(fn(conn, *args))
            conn.execute("COMMIT")
        except BaseException as exc:
            _drop_locals(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._committed()
        return result

    def writer_queue(self) -> int:
        """Writes running in the writer thread or waiting for it."""
        if self._wlimiter is None:
            return 0
        stats = self._wlimiter.statistics()
        return stats.borrowed_tokens + stats.tasks_waiting + len(self._queue)  # + writes queued for a group commit

    def _write_group(self, jobs: list[_Job], committed: list[bool]) -> None:
        """In the writer thread: every job of ``jobs`` in one write transaction (group commit), each in a
        savepoint of its own, so that a job that fails leaves no trace and does not undo the others. A job's
        outcome is set only once COMMIT returned: until then, nobody is told that its write is stored."""
        conn = self._wconn
        if conn is None or self.closed:
            raise StorageUnavailable("storage is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(jobs) == 1:  # alone: no savepoint needed, a failure rolls the transaction back (below)
                job = jobs[0]
                try:
                    job.value = _ended(job.fn(conn, *job.args))
                except Exception as exc:
                    _drop_locals(exc)
                    job.error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
                    conn.execute("ROLLBACK")
                    return
                conn.execute("COMMIT")
                committed.append(True)
                self._committed()
                return
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    job.value = _ended(job.fn(conn, *job.args))
                except Exception as exc:
                    _drop_locals(exc)
                    if not conn.in_transaction:  # SQLite undid the whole transaction (disk full, I/O error)
                        raise  # so the whole group fails with this error (see _lead)
                    conn.execute("ROLLBACK TO job")
                    job.error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
            committed.append(True)
            self._committed()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction, in the writer thread, and return once it is committed.

        Group commit: writes that arrive while the writer thread is busy wait together and are then committed in
        one transaction (``_write_group``): one thread hop, one BEGIN and one COMMIT for all of them, and the pages
        they share (the store's row, the last pages of the tables) written to the WAL once. A write that finds the
        writer idle goes at once, alone, as before. The first write of a group (the leader) runs it and answers
        the others; if more arrived meanwhile, a task runs the next group."""
        if self._wlimiter is None:
            raise StorageUnavailable("storage is not open")
        job = _Job(fn, args)
        self._queue.append(job)
        if self._leading:
            job.done = asyncio.get_running_loop().create_future()
            await job.done  # resolved by the leader once the group holding this job has committed (or failed)
        else:
            await self._lead()
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[no-any-return]

    async def write_small(self, fn: Callable[..., T], *args: Any) -> T:
        """``write`` for a transaction of a few rows (a queue's request marked handled, a head locked): when the
        writer is idle, it runs right here on the event loop thread, as ``point_read`` does, without the two
        thread hops that cost more than the transaction (and, on a busy machine, a wait for a core each). It
        never waits here: should the database be locked (another process's write, a checkpoint) it goes the
        usual way, through the writer thread, which may wait. Not with ``fsync`` (COMMIT would wait for the
        disk), nor once the WAL is long (its copy to the end, with fsyncs, is the writer thread's: checkpoints.py);
        the WAL is checkpointed beside, in a thread of its own, never by these commits."""
        await asyncio.sleep(0)  # a turn for the other tasks first, as the hop would give: a task writing in a loop
        limiter, conn = self._wlimiter, self._wconn  # must not keep the event loop to itself
        if self.fsync or self._leading or self._queue or limiter is None or conn is None or self.closed:
            return await self.write(fn, *args)
        if self._checkpoints is not None and self._checkpoints.restart_due():
            return await self.write(fn, *args)
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:  # write_raw (maintenance) has the writer
            return await self.write(fn, *args)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not any(m in str(exc).lower() for m in ("locked", "busy")):
                    raise translate(exc) from exc
                busy = True
            else:
                busy = False
                try:
                    result = _ended(fn(conn, *args))
                    conn.execute("COMMIT")
                except BaseException as exc:
                    _drop_locals(exc)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):
                        raise translate(exc) from exc
                    raise
                self._committed(on_loop=True)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            limiter.release()
        if busy:
            return await self.write(fn, *args)
        return result

    def _committed(self, on_loop: bool = False) -> None:
        """After a commit of the writer connection: the WAL checkpointed beside the writes once it is long enough,
        or by the writer once it is longer (checkpoints.py); ``on_loop``: a commit of ``write_small`` on the event
        loop thread, which must not wait for that copy and its fsyncs (12-19 ms): the writer thread's next commit
        does it."""
        if self._checkpoints is not None and self._wconn is not None:
            self._checkpoints.after_commit(None if on_loop else self._wconn)

    async def _lead(self) -> None:
        """Commit the queued writes as one group, answer them, and leave any that came meanwhile to a task."""
        self._leading = True
        jobs, self._queue = self._queue, []
        committed: list[bool] = []
        try:
            # to the end, cancelled or not: the limiter stays held, and ``committed`` tells what became of the group
            await run_to_end(self._write_group, jobs, committed, limiter=self._wlimiter)
        except BaseException as exc:
            if not committed:  # BEGIN or COMMIT failed, or the writer is gone: nothing of the group is stored
                failure = translate(exc) if isinstance(exc, sqlite3.Error) else exc
                for job in jobs:
                    job.error = failure if isinstance(failure, Exception) else StorageUnavailable("write interrupted")
            if not isinstance(exc, Exception):
                raise  # cancelled: the others are answered all the same (below)
        finally:
            for job in jobs:
                if job.done is not None and not job.done.done():
                    job.done.set_result(None)
            self._leading = False
            if self._queue:  # arrived while this group was written: their leader is a task of its own
                self._leading = True
                self._next = asyncio.ensure_future(self._lead_queued())

    async def _lead_queued(self) -> None:
        self._leading = False
        await self._lead()

    async def write_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the writer thread; ``fn`` manages its own transactions."""
        if self._wlimiter is None:
            raise StorageUnavailable("storage is not open")
        try:
            return await run_to_end(self._raw_sync, fn, *args, limiter=self._wlimiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _raw_sync(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._wconn
        if conn is None or self.closed:
            raise StorageUnavailable("storage is closed")
        try:
            return _ended(fn(conn, *args))
        finally:
            self._committed()  # (whatever ``fn`` committed)
