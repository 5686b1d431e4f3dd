"""``openkvs blobs fsck`` and ``openkvs blobs migrate`` for PostgreSQL metadata with a bucket (``--blob-store``).

- ``fsck`` compares the bucket's objects with the metadata: objects that no record, garbage row or intent names
  (orphans: only a bug or a lost intent leaves them; ``fix`` deletes them), records whose object is missing or of
  the wrong size (damage: listed, never "fixed" by guessing).
- ``migrate`` moves records' bytes between the database and the bucket while the server runs: each record is
  copied to its new place, then its row is switched in one statement that checks the row still points at the
  copied blob (a record written meanwhile keeps its new bytes and the copy is dropped). The old blob goes to the
  garbage like a replaced record's, so downloads that read it finish. Records already in place are skipped, so
  an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg

from ..base import NotFound, RecordMeta
from ..bucket import BlobStore
from .backend import PostgresStorage
from .chunks import CHUNK_SIZE, write_chunks
from .objects import forget, put_in_bucket_blob
from .tables import IN_BUCKET, RECORD_COLS, to_record

log = logging.getLogger(__package__)


@dataclass
class FsckReport:
    objects: int = 0
    records_in_bucket: int = 0
    orphans: list[tuple[int, int]] = field(default_factory=list)  # (blob id, size) of objects nobody names
    missing: list[str] = field(default_factory=list)  # records whose object is missing or of the wrong size
    deleted: int = 0


async def fsck(storage: PostgresStorage, fix: bool = False) -> FsckReport:
    bucket = storage.blob_store
    if bucket is None:
        raise ValueError("openkvs blobs fsck needs --blob-store")
    report = FsckReport()
    listed: dict[int, int] = {}
    async for blob_id, obj in bucket.list():  # the listing first: what commits after it is in the metadata below
        listed[blob_id] = obj.size
    report.objects = len(listed)

    async def known(conn: asyncpg.Connection) -> tuple[set[int], list[asyncpg.Record]]:
        ids = await conn.fetch(
            """SELECT blob_id FROM garbage WHERE in_bucket UNION ALL SELECT blob_id FROM uploads
               UNION ALL SELECT blob_id FROM records WHERE chunk_size = $1 AND size > 0""",
            IN_BUCKET,
        )
        records = await conn.fetch(
            "SELECT store_id, key, blob_id, size FROM records WHERE chunk_size = $1 AND size > 0", IN_BUCKET
        )
        return {r["blob_id"] for r in ids}, records

    names, records = await storage._db.run(known, tx=True)
    report.records_in_bucket = len(records)
    for r in records:
        size = listed.get(r["blob_id"])
        if size != r["size"]:
            what = "missing" if size is None else f"{size} bytes instead of {r['size']}"
            report.missing.append(f"record {r['store_id']}/{r['key']}: object {bucket.url} blob {r['blob_id']} {what}")
    report.orphans = sorted((b, size) for b, size in listed.items() if b not in names)
    if fix and report.orphans:
        await bucket.delete([b for b, _ in report.orphans])
        report.deleted = len(report.orphans)
    return report


@dataclass
class MigrateProgress:
    moved: int = 0
    moved_bytes: int = 0
    skipped: int = 0  # written meanwhile: the copy was dropped (a new run finds nothing to do for them)


async def _records(
    storage: PostgresStorage, where: str, args: tuple[object, ...]
) -> AsyncIterator[tuple[str, RecordMeta]]:
    """(store id, record) of the records matching ``where`` (parameters from $3), in (store, key) order, a page at
    a time (no transaction held between pages)."""
    last: tuple[str, str] = ("", "")
    while True:
        rows = await storage._db.fetch(
            f"""SELECT store_id, {RECORD_COLS} FROM records WHERE {where} AND (store_id, key) > ($1, $2)
                ORDER BY store_id, key LIMIT 100""",
            *last,
            *args,
        )
        if not rows:
            return
        for r in rows:
            yield r["store_id"], to_record(r)
        last = (rows[-1]["store_id"], rows[-1]["key"])


# Switch a record to the new blob if it still points at the old one; the old blob to the garbage.
_SWITCH = """WITH up AS (
        UPDATE records SET blob_id = $4, chunk_size = $5 WHERE store_id = $1 AND key = $2 AND blob_id = $3
        RETURNING size),
    g AS (INSERT INTO garbage (blob_id, created_at, in_bucket)
          SELECT $3, clock_timestamp(), $6 FROM up)
    SELECT count(*) FROM up"""


class _Changed(Exception):
    """The record was written while its bytes were copied: roll the switch back."""


async def migrate(
    storage: PostgresStorage, to: str, progress: Callable[[MigrateProgress], None] | None = None
) -> MigrateProgress:
    """Move every record's bytes to ``to`` ("bucket": records above inline_max; "database": all of them)."""
    bucket = storage.blob_store
    if bucket is None:
        raise ValueError("openkvs blobs migrate needs --blob-store")
    done = MigrateProgress()
    args: tuple[object, ...] = ()
    if to == "bucket":
        where, args = f"size > $3 AND chunk_size <> {IN_BUCKET}", (storage.inline_max,)
    elif to == "database":
        where, args = f"size > 0 AND chunk_size = {IN_BUCKET}", ()
    else:
        raise ValueError(f"--to must be bucket or database, not {to!r}")
    async for store_id, meta in _records(storage, where, args):
        if await _move(storage, bucket, to, store_id, meta):
            done.moved += 1
            done.moved_bytes += meta.size
        else:
            done.skipped += 1
        if progress is not None:
            progress(done)
    return done


async def _move(storage: PostgresStorage, bucket: BlobStore, to: str, store_id: str, meta: RecordMeta) -> bool:
    """Copy one record's bytes to ``to`` and switch its row; False if it was written or deleted meanwhile."""
    old = meta.blob.blob_id
    pieces = storage.read_blob(meta).__aiter__()
    new: int | None = None

    async def to_bucket(conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM uploads WHERE blob_id = $1", new)
        if not await conn.fetchval(_SWITCH, store_id, meta.key, old, new, IN_BUCKET, False):
            raise _Changed

    async def to_database(conn: asyncpg.Connection) -> None:
        copy, _ = await write_chunks(conn, pieces, bytearray())
        if not await conn.fetchval(_SWITCH, store_id, meta.key, old, copy, CHUNK_SIZE, True):
            raise _Changed  # rolls the chunks back too

    try:
        if to == "bucket":
            new, _ = await put_in_bucket_blob(storage._db, bucket, store_id, pieces, bytearray())
            await storage._db.run(to_bucket, tx=True)
        else:
            await storage._db.run(to_database, tx=True)
        return True
    except (_Changed, NotFound):  # written or deleted meanwhile: its new bytes are where they belong
        if new is not None:
            await forget(storage._db, bucket, new)
        return False
