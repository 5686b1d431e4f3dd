"""Record bytes in a bucket (``--blob-store``), the PostgreSQL side: writing a big record as an object with its
intent row, the snapshots' leases, and collecting garbage objects and stale intents.

- **Write** (the order of things is bucket/uploads.py's): an ``uploads`` row (the intent: blob id, later the
  multipart upload id) is committed before the first byte goes to the bucket; the object is written under the blob
  id; then one transaction deletes the intent and upserts the record (chunk_size ``IN_BUCKET``).
- **Intents** not renewed for ``UPLOAD_EXPIRY_SECONDS`` are swept: the multipart upload aborted, the object
  deleted, the row deleted. A write whose intent was swept under it fails (503) instead of committing a record
  whose object may be gone.
- **Leases:** MVCC keeps blob_chunks rows for an open snapshot, but not objects. A snapshot first commits a lease
  whose watermark is the xmin of a snapshot taken then (every transaction with a smaller id had finished), and
  only then opens its own transaction. A record it can see is replaced or deleted by a transaction that ends after
  it began, whose id is at least the watermark: GC keeps garbage objects whose ``xid`` is at or above any live
  lease's watermark. Leases are renewed while their snapshot is open and ignored once expired (a dead node).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import anyio
import asyncpg

from openkvs import metrics

from ..base import NotFound, RecordBody
from ..bucket import BlobStore
from ..bucket.uploads import UPLOAD_EXPIRY_SECONDS, IntentSwept, Uploads
from .connections import Database, deadlock_retried
from .tables import IN_BUCKET, UPSERT_BIG

log = logging.getLogger(__package__)

LEASE_SECONDS = 300.0  # a snapshot's lease lasts this long unless renewed
LEASE_RENEW_SECONDS = 60.0
BATCH = 500


class PgIntents:
    """The ``uploads`` table: the intents of objects being written (bucket/uploads.py). ``created_at`` is moved
    forward while the upload runs (``renew``): it is the last time the upload was known alive."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, store_id: str) -> int | None:
        blob_id: int | None = await self.db.run(
            lambda c: c.fetchval(
                """INSERT INTO uploads (blob_id, created_at)
                   SELECT nextval('blob_ids'), clock_timestamp() WHERE EXISTS (SELECT 1 FROM stores WHERE id = $1)
                   RETURNING blob_id""",
                store_id,
            )
        )
        return blob_id

    async def started(self, blob_id: int, upload_id: str) -> None:
        await self.db.execute("UPDATE uploads SET upload_id = $2 WHERE blob_id = $1", blob_id, upload_id)

    async def upload_id(self, blob_id: int) -> str | None:
        upload_id: str | None = await self.db.run(
            lambda c: c.fetchval("SELECT upload_id FROM uploads WHERE blob_id = $1", blob_id)
        )
        return upload_id

    async def remove(self, blob_id: int) -> None:
        await self.db.execute("DELETE FROM uploads WHERE blob_id = $1", blob_id)

    async def renew(self, blob_ids: Sequence[int], at: datetime | None) -> None:
        await self.db.execute(
            "UPDATE uploads SET created_at = coalesce($2, clock_timestamp()) WHERE blob_id = ANY($1::bigint[])",
            list(blob_ids),
            at,
        )


async def put_in_bucket(
    db: Database,
    uploads: Uploads,
    store_id: str,
    key: str,
    body: RecordBody,
    it: AsyncIterator[bytes],
    head: bytearray,
    content_type: str,
    content_encoding: str | None,
) -> asyncpg.Record:
    """Write a record's bytes (``head``, then the rest of ``it``) as an object, then commit its metadata; returns
    the upserted row. See bucket/uploads.py for the order of things."""

    async def commit(blob_id: int, size: int) -> asyncpg.Record:
        async def go(conn: asyncpg.Connection) -> asyncpg.Record:
            if await conn.fetchval("DELETE FROM uploads WHERE blob_id = $1 RETURNING true", blob_id) is None:
                raise IntentSwept
            row = await conn.fetchrow(
                UPSERT_BIG, store_id, key, content_type, content_encoding, size, body.decoded_size,
                body.crc32 & 0xFFFFFFFF, IN_BUCKET, blob_id,
            )
            if row is None:
                raise NotFound(f"store {store_id} not found")
            return row

        return await deadlock_retried("record write", lambda: db.run(go, tx=True))

    return await uploads.put(store_id, it, head, commit)


# -- leases --------------------------------------------------------------------------------------------------


class Leases:
    """The leases of this process's open snapshots, renewed by ``renew`` (a background task calls it)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.held: set[int] = set()

    @asynccontextmanager
    async def held_for(self) -> AsyncIterator[None]:
        """A lease for a snapshot opened inside this block (see the module docstring)."""
        lease_id = await self.db.run(
            lambda c: c.fetchval(
                """INSERT INTO leases (watermark, expires_at)
                   VALUES (pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp() + make_interval(secs => $1))
                   RETURNING id""",
                LEASE_SECONDS,
            )
        )
        self.held.add(lease_id)
        try:
            yield
        finally:
            self.held.discard(lease_id)
            with anyio.move_on_after(10, shield=True):
                try:
                    await self.db.execute("DELETE FROM leases WHERE id = $1", lease_id)
                except Exception:
                    log.warning("could not delete lease %s (it expires by itself)", lease_id, exc_info=True)

    async def renew(self) -> None:
        held = list(self.held)
        if held:
            await self.db.execute(
                "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $2) WHERE id = ANY($1)",
                held,
                LEASE_SECONDS,
            )


# -- garbage -------------------------------------------------------------------------------------------------

# Garbage older than the grace ($1) that no live lease needs ($2: the time leases are compared with); objects only
# if this node knows the bucket ($3).
PICK_GARBAGE = f"""SELECT g.blob_id, g.in_bucket FROM garbage g WHERE g.created_at < $1 AND (NOT g.in_bucket OR $3)
    AND NOT (g.in_bucket AND EXISTS (SELECT 1 FROM leases l WHERE l.expires_at > $2 AND g.xid >= l.watermark))
    ORDER BY g.created_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED"""


async def collect(db: Database, bucket: BlobStore | None, now: datetime | None, grace: float) -> int:
    """Free garbage blobs (chunks and objects) and sweep stale intents; returns how many blobs were freed."""
    freed = 0
    while True:

        async def go(conn: asyncpg.Connection) -> int:
            at = now or await conn.fetchval("SELECT clock_timestamp()")
            rows = await conn.fetch(PICK_GARBAGE, at - timedelta(seconds=grace), at, bucket is not None)
            if not rows:
                return 0
            ids = [r["blob_id"] for r in rows]
            objects = [r["blob_id"] for r in rows if r["in_bucket"]]
            if objects and bucket is not None:
                await bucket.delete(objects)  # before the rows go: a failure keeps them for the next pass
            freed_bytes = await conn.fetchval(
                """WITH gone AS (DELETE FROM blob_chunks WHERE blob_id = ANY($1::bigint[])
                                 RETURNING octet_length(data) AS n)
                   SELECT coalesce(sum(n), 0) FROM gone""",
                ids,
            )
            await conn.execute("DELETE FROM garbage WHERE blob_id = ANY($1::bigint[])", ids)
            metrics.GC_FREED_BYTES.inc(freed_bytes)  # the database's bytes (an object's size is the bucket's)
            return len(ids)

        n = await db.run(go, tx=True)
        freed += n
        if n < BATCH:
            break
    if bucket is not None:
        freed += await sweep_intents(db, bucket, now)
    return freed


async def sweep_intents(db: Database, bucket: BlobStore, now: datetime | None) -> int:
    """Abort and delete the uploads whose intent was not renewed for UPLOAD_EXPIRY_SECONDS, and forget expired
    leases."""
    swept = 0
    while True:

        async def go(conn: asyncpg.Connection) -> int:
            at = now or await conn.fetchval("SELECT clock_timestamp()")
            await conn.execute("DELETE FROM leases WHERE expires_at < $1", at)
            rows = await conn.fetch(
                f"""SELECT blob_id, upload_id FROM uploads WHERE created_at < $1
                    ORDER BY created_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED""",
                at - timedelta(seconds=UPLOAD_EXPIRY_SECONDS),
            )
            if rows:
                ids = [r["blob_id"] for r in rows]
                await bucket.delete(ids, [r["upload_id"] or "" for r in rows])
                await conn.execute("DELETE FROM uploads WHERE blob_id = ANY($1::bigint[])", ids)
                log.info("swept %d uploads that never committed", len(ids))
            return len(rows)

        n = await db.run(go, tx=True)
        swept += n
        if n < BATCH:
            return swept

