"""Record bytes in a bucket with SQLite metadata (``--data-dir`` with ``--blob-store``): a single node that keeps
its records' bytes in an S3-compatible bucket. The order of a write is bucket/uploads.py's, the bucket calls are
bucket/__init__.py's; this module is the SQLite side.

- **Where the bytes are.** Records up to the bucket's ``inline_max`` (``--blob-inline-max``) stay in the database
  (inline, or a file above the backend's own ``inline_max``); bigger ones are objects, ``{prefix}blobs/{blob id}``.
  Their ``path`` is ``s3:<blob id>`` (blobs.py ``OBJECT_PATH``), so every rule about a record's bytes holds for
  objects as for files: the replaced or deleted record's path goes to ``garbage``, a snapshot's lease keeps it
  while the snapshot is open (files.py), and ``collect_garbage`` deletes objects (``delete_objects``) as it
  deletes files.
- **Intents** (``uploads``): a row per object being written, committed before the first byte goes up. Its blob id
  comes from ``AUTOINCREMENT``, so an object name is never used twice, even after a crash. The commit of the
  record deletes the intent in the same transaction. The running upload renews it (``renewed_at``); the sweeper
  (``sweep``) first marks intents not renewed for ``UPLOAD_EXPIRY_SECONDS`` as ``swept`` (in one write
  transaction: from then on their commit fails), then aborts and deletes their objects, then deletes the rows.
  A crash between the steps leaves marked rows, which the next sweep finishes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio

from openkvs.zipwriter import LocalBlock

from ..base import RecordBody, RecordMeta, Snapshot, StorageError
from ..bucket import BlobStore
from ..bucket.prefetch import Prefetch
from ..bucket.s3 import READ_PIECE
from ..bucket.uploads import UPLOAD_EXPIRY_SECONDS, IntentSwept, Uploads, fill
from .blobs import OBJECT_PATH, InBucket, clamp_range
from .connections import Database
from .tables import commit_record, now_ms, to_ms, to_record

log = logging.getLogger(__package__)

SWEEP_BATCH = 1000

def object_path(blob_id: int) -> str:
    return f"{OBJECT_PATH}{blob_id}"


class SQLiteIntents:
    """The ``uploads`` table, as bucket/uploads.py's ``IntentTable``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, store_id: str) -> int | None:
        now = now_ms()

        def txn(conn: sqlite3.Connection) -> int | None:
            cur = conn.execute(
                "INSERT INTO uploads(store_id, created_at, renewed_at) SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM stores WHERE id = ?)",
                (store_id, now, now, store_id),
            )
            return cur.lastrowid if cur.rowcount == 1 else None

        return await self.db.write(txn)

    async def started(self, blob_id: int, upload_id: str) -> None:
        await self.db.write(
            lambda c: c.execute("UPDATE uploads SET upload_id = ? WHERE blob_id = ?", (upload_id, blob_id))
        )

    async def upload_id(self, blob_id: int) -> str | None:
        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT upload_id FROM uploads WHERE blob_id = ?", (blob_id,)).fetchone()
            return row[0] if row else None

        return await self.db.point_read(q)

    async def remove(self, blob_id: int) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM uploads WHERE blob_id = ?", (blob_id,)))

    async def renew(self, blob_ids: Sequence[int], at: datetime | None) -> None:
        when = to_ms(at)
        await self.db.write(
            lambda c: c.executemany(
                "UPDATE uploads SET renewed_at = ? WHERE blob_id = ? AND swept = 0", [(when, b) for b in blob_ids]
            )
        )


def take_intent(conn: sqlite3.Connection, blob_id: int) -> None:
    """In a write transaction that points a record at object ``blob_id``: delete its intent, or raise
    IntentSwept if the sweeper marked or removed it."""
    if conn.execute("DELETE FROM uploads WHERE blob_id = ? AND swept = 0", (blob_id,)).rowcount != 1:
        raise IntentSwept


def _commit_object(conn: sqlite3.Connection, store_id: str, row: tuple[Any, ...], blob_id: int) -> None:
    take_intent(conn, blob_id)
    commit_record(conn, store_id, row, None, object_path(blob_id))  # NotFound rolls the DELETE back too


class Replayed:
    """A body whose bytes were all read already (``data``): what the backend's usual write path gets for a record
    that stays in the database. ``decoded_size`` and ``crc32`` are the original body's (its iteration ended)."""

    def __init__(self, data: bytes, body: RecordBody) -> None:
        self.data = data
        self.decoded_size = body.decoded_size
        self.crc32 = body.crc32

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.data:
            yield self.data


class SQLiteObjects:
    """The bucket of a SQLite backend: writing records as objects, reading them, deleting garbage objects,
    sweeping stale intents, snapshots that read objects ahead."""

    def __init__(self, db: Database, bucket: BlobStore) -> None:
        self.db = db
        self.bucket = bucket
        self.uploads = Uploads(SQLiteIntents(db), bucket)

    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta | Replayed:
        """Write a record bigger than the bucket's inline_max as an object and commit it; a smaller one is read
        whole and handed back (``Replayed``) for the backend's usual write path."""
        it = body.__aiter__()
        head = bytearray()
        if await fill(it, head, self.bucket.inline_max + 1):
            return Replayed(bytes(head), body)

        async def commit(blob_id: int, size: int) -> RecordMeta:
            row = (key, size, body.decoded_size, body.crc32 & 0xFFFFFFFF, now_ms(), content_type, content_encoding)
            await self.db.write(_commit_object, store_id, row, blob_id)
            return to_record(row, InBucket(blob_id, size))

        return await self.uploads.put(store_id, it, head, commit)

    def read(self, blob: InBucket, start: int, end: int) -> AsyncIterator[bytes]:
        return self.bucket.read(blob.blob_id, start, end)

    async def read_blob(self, blob: InBucket, start: int, end: int | None) -> AsyncIterator[bytes]:
        start, end = clamp_range(start, end, blob.size)
        async for piece in self.read(blob, start, end):
            yield piece

    async def delete_objects(self, blob_ids: list[int]) -> None:
        await self.bucket.delete(blob_ids)

    async def sweep(self, now: datetime | None = None) -> int:
        """Abort and delete the uploads whose intent was not renewed for UPLOAD_EXPIRY_SECONDS before ``now``
        (default: the clock); returns how many."""
        cutoff = to_ms(now) - int(UPLOAD_EXPIRY_SECONDS * 1000)
        stale = await self.db.point_read(  # (a read first: GC runs every 10 s, mostly with nothing to sweep)
            lambda c: c.execute(
                "SELECT EXISTS (SELECT 1 FROM uploads WHERE swept = 1 UNION ALL "
                "SELECT 1 FROM uploads WHERE swept = 0 AND renewed_at < ?)",
                (cutoff,),
            ).fetchone()[0]
        )
        if not stale:
            return 0
        await self.db.write(
            lambda c: c.execute("UPDATE uploads SET swept = 1 WHERE swept = 0 AND renewed_at < ?", (cutoff,))
        )
        swept = 0
        while True:
            rows = await self.db.read(
                lambda c: c.execute(
                    "SELECT blob_id, upload_id FROM uploads WHERE swept = 1 ORDER BY blob_id LIMIT ?", (SWEEP_BATCH,)
                ).fetchall()
            )
            if not rows:
                return swept
            ids = [r[0] for r in rows]
            await self.bucket.delete(ids, [r[1] or "" for r in rows])
            await self.db.write(lambda c, ids=ids: c.executemany("DELETE FROM uploads WHERE blob_id = ?",
                                                                 [(i,) for i in ids]))
            log.info("swept %d uploads that never committed", len(ids))
            swept += len(ids)
            if len(rows) < SWEEP_BATCH:
                return swept

    async def check(self) -> None:
        """Said at start: requests that need the bucket get 503 until it answers."""
        try:
            await asyncio.wait_for(self.bucket.check(), 10)
        except (StorageError, TimeoutError) as exc:
            log.warning("the bucket %s can't be used now: %s", self.bucket.url, exc or "timeout")

    @asynccontextmanager
    async def snapshot(self, snap: Snapshot) -> AsyncIterator[ObjectSnapshot]:
        """``snap`` reading its objects from the bucket, for as long as it is open."""
        with_objects = ObjectSnapshot(snap, self.read)
        try:
            yield with_objects
        finally:
            with anyio.CancelScope(shield=True):
                await with_objects.prefetch.close()


class ObjectSnapshot(Snapshot):
    """A SQLite snapshot whose records may be objects: their bytes come from the bucket, small ones read ahead
    (bucket/prefetch.py) in the order the ZIP download reads them. The leases keep them (files.py)."""

    def __init__(self, snap: Snapshot, read: Callable[[InBucket, int, int], AsyncIterator[bytes]]) -> None:
        self._snap = snap
        self._read = read
        self.generation = snap.generation
        self.totals = snap.totals
        self.prefetch = Prefetch(read)

    def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        return self._planned(after, batch)

    async def _planned(self, after: str | None, batch: int) -> AsyncIterator[Sequence[RecordMeta]]:
        async for found in self._snap.records(after, batch):
            self._plan(found)
            yield found

    def _plan(self, found: Sequence[RecordMeta]) -> None:
        """The batch's objects read ahead, in its order."""
        columns = getattr(found, "columns", None)
        if columns is None or columns.data is None:  # (bytes all in memory: no object in the batch)
            objects = [(r.blob.blob_id, r.blob, r.size) for r in found if type(r.blob) is InBucket]
            if objects:
                self.prefetch.plan(objects)

    def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[Any]]:
        return self._snap.zip_entries(after, batch)

    def kept_local(self) -> AsyncIterator[Sequence[Any] | LocalBlock] | None:
        """The SQLite snapshot's: a LocalBlock holds only records whose bytes are in the database (an object's
        path is never NULL), and any other batch is a batch of ``records``, its objects planned as there."""
        kept = self._snap.kept_local()
        return None if kept is None else self._planned_kept(kept)

    async def _planned_kept(self, kept: AsyncIterator[Any]) -> AsyncIterator[Sequence[Any] | LocalBlock]:
        async for found in kept:
            if not isinstance(found, LocalBlock):
                self._plan(found)
            yield found

    def kept_central(self) -> AsyncIterator[Any] | None:
        return self._snap.kept_central()  # central headers need no bytes: objects' as well as the rest

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        return self._snap.held_bytes(record)

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = record.blob
        if type(blob) is not InBucket:
            async for piece in self._snap.read_blob(record, start, end):
                yield piece
            return
        start, end = clamp_range(start, end, blob.size)
        whole = await self.prefetch.take(blob.blob_id)
        if whole is not None:
            for i in range(start, end, READ_PIECE):
                yield whole[i : min(i + READ_PIECE, end)]
            return
        async for piece in self._read(blob, start, end):
            yield piece
