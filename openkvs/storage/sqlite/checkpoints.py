"""The WAL checkpoints of one SQLite database, on a thread of their own, beside the writes.

SQLite checkpoints by itself in the connection that commits, once the WAL holds 1,000 pages: inside that COMMIT.
So the writer thread copied the WAL into the database file and fsynced it while every queued write waited. A
1,000-item dataset push adds ~110 pages of 4 KiB: a checkpoint every ~9 pushes, and in a run of pushes a third of
the writer thread's time (py-spy); without it the same client pushed 183,000 items/s instead of 119,000
(bench/push_threads.py). The writer connection turns it off (``wal_autocheckpoint = 0``, connections.py), and
after each commit ``after_commit`` looks how many WAL frames the database file lacks: from FRAMES on (SQLite's own
threshold) a PASSIVE checkpoint runs here, on a connection of its own, while writes go on. WAL mode lets a
checkpoint run beside a writer: it copies the frames committed before it began, waits for no lock, and leaves the
frames a reader still needs (the next commit asks again). Acknowledged writes are in the WAL already: a checkpoint
moves them, it never decides whether they last.

How many frames the file lacks is read from the WAL index (the ``-shm`` file, in SQLite's documented format,
https://sqlite.org/walformat.html, in the host's byte order): the index header's ``mxFrame`` (the last frame
committed) less the checkpoint info's ``nBackfill`` (the frames copied). A read that races a writer's update may
be off by a commit: it only decides when to checkpoint. Where the index can't be read, every commit asks for one
(one runs at a time).

The WAL begins again from its start only at a write that finds every frame copied, and a checkpoint beside the
writes never sees that: it copies the frames committed before it began while new ones arrive. So under a steady
stream of writes the WAL grew without end (600 MB after 1,200 pushes of 1,000 items), each frame written to new
blocks of the file. Once the WAL holds RESTART_FRAMES, the writer copies the rest itself, in its thread, after a
commit and before the next (not a commit on the event loop thread: connections.py ``write_small``): the
checkpoints beside the writes have copied all but the last frames, the next write begins the WAL again, and
``journal_size_limit`` cuts the file back. A reader that still needs old frames keeps them, as it did with
SQLite's own checkpoints."""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("openkvs")

FRAMES = 1000  # WAL frames the database file may lack before a checkpoint: SQLite's wal_autocheckpoint default
RESTART_FRAMES = 4 * FRAMES  # a WAL this long is copied to its end by the writer, so that it begins again
_INDEX = struct.Struct("=16xI76xI")  # mxFrame at 16 (the first copy of the index header), nBackfill at 96


class Checkpoints:
    def __init__(self, connect: Callable[[], sqlite3.Connection], shm: Path) -> None:
        """``connect``: a new connection to the database (made in the checkpoint thread, when first needed);
        ``shm``: its WAL index file."""
        self._connect = connect
        self._shm = shm
        self._fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="openkvs-checkpoint")

    def _index(self) -> tuple[int, int] | None:
        """The WAL's frames (the last one committed) and those the database file lacks; None where the WAL index
        can't be read."""
        try:
            if self._fd is None:
                with self._lock:  # (the event loop's thread asks too: connections.py write_small)
                    if self._fd is None:
                        self._fd = os.open(self._shm, os.O_RDONLY)
            head = os.pread(self._fd, _INDEX.size, 0)
        except OSError:
            return None
        if len(head) < _INDEX.size:
            return None
        last, copied = _INDEX.unpack(head)
        return last, last - copied if last >= copied else last  # (less: the WAL began again since the copy)

    def lacking(self) -> int | None:
        """The WAL frames that the database file lacks; None where the WAL index can't be read."""
        index = self._index()
        return None if index is None else index[1]

    def restart_due(self) -> bool:
        """Whether the WAL holds RESTART_FRAMES: the next commit should be the writer thread's, which copies the
        rest (a WAL written only by commits on the event loop thread would never begin again)."""
        index = self._index()
        return index is not None and index[0] >= RESTART_FRAMES

    def after_commit(self, writer: sqlite3.Connection | None) -> None:
        """After a commit of the writer connection, on the thread that committed: once the WAL holds
        RESTART_FRAMES, the rest is copied here on ``writer`` (None: not on this thread, the next commit's), so
        that the next write begins it again; else a checkpoint begins beside the writes if the database file lacks
        FRAMES or more of the WAL's frames. One checkpoint at a time, either way."""
        index = self._index()
        last, lacking = index if index is not None else (0, FRAMES)
        here = writer if last >= RESTART_FRAMES else None
        if lacking < FRAMES and here is None:
            return
        with self._lock:
            if self._running or self._closed:
                return
            self._running = True
        if here is None:
            self._thread.submit(self._run)
            return
        try:
            here.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # (as in _run: the WAL keeps the writes, and they were committed; the next asks)
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            with self._lock:
                self._running = False

    def _run(self) -> None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # (disk full, say: the WAL keeps the writes; the next commit asks again)
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            with self._lock:
                self._running = False

    def close(self) -> None:
        """Wait for a checkpoint that runs, and close the connection: before the writer's own close, the last
        connection's, which checkpoints the rest and removes the WAL."""
        with self._lock:
            self._closed = True
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
