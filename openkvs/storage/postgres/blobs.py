"""``openkvs blobs fsck`` and ``openkvs blobs migrate`` for PostgreSQL metadata with a bucket (``--blob-store``):
the queries; what they do and the order of things are bucket/admin.py's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import asyncpg

from ..base import NotFound, RecordMeta
from ..bucket import BlobStore
from ..bucket.admin import FsckReport, MigrateProgress, Names, check_target, copy_to_bucket
from ..bucket.admin import fsck as fsck_bucket
from ..bucket.admin import migrate as migrate_records
from ..bucket.uploads import RecordChanged
from .chunks import CHUNK_SIZE, write_chunks
from .tables import IN_BUCKET, RECORD_COLS, to_record

if TYPE_CHECKING:  # (for the annotations only: backend.py imports this module)
    from .backend import PostgresStorage

log = logging.getLogger(__package__)

__all__ = ["FsckReport", "MigrateProgress", "fsck", "migrate"]


def _bucket(storage: PostgresStorage, what: str) -> BlobStore:
    if storage.blob_store is None or storage.uploads is None:
        raise ValueError(f"openkvs blobs {what} needs --blob-store")
    return storage.blob_store


async def fsck(storage: PostgresStorage, fix: bool = False) -> FsckReport:
    async def known(conn: asyncpg.Connection) -> Names:
        ids = await conn.fetch(
            """SELECT blob_id FROM garbage WHERE in_bucket UNION ALL SELECT blob_id FROM uploads
               UNION ALL SELECT blob_id FROM records WHERE chunk_size = $1 AND size > 0""",
            IN_BUCKET,
        )
        records = await conn.fetch(
            "SELECT store_id, key, blob_id, size FROM records WHERE chunk_size = $1 AND size > 0", IN_BUCKET
        )
        return {r["blob_id"] for r in ids}, [tuple(r) for r in records]

    return await fsck_bucket(_bucket(storage, "fsck"), lambda: storage._db.run(known, tx=True), fix)


async def _records(
    storage: PostgresStorage, where: str, args: tuple[object, ...]
) -> AsyncIterator[tuple[str, RecordMeta, None]]:
    """(store id, record, None) of the records matching ``where`` (parameters from $3), in (store, key) order, a page at
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
            yield r["store_id"], to_record(r), None
        last = (rows[-1]["store_id"], rows[-1]["key"])


# Switch a record to the new blob if it still points at the old one; the old blob to the garbage.
_SWITCH = """WITH up AS (
        UPDATE records SET blob_id = $4, chunk_size = $5 WHERE store_id = $1 AND key = $2 AND blob_id = $3
        RETURNING size),
    g AS (INSERT INTO garbage (blob_id, created_at, in_bucket)
          SELECT $3, clock_timestamp(), $6 FROM up)
    SELECT count(*) FROM up"""


async def migrate(
    storage: PostgresStorage, to: str, progress: Callable[[MigrateProgress], None] | None = None
) -> MigrateProgress:
    """Move every record's bytes to ``to`` ("bucket": records above inline_max; "database": all of them)."""
    _bucket(storage, "migrate")
    check_target(to)
    args: tuple[object, ...] = ()
    if to == "bucket":
        where, args = f"size > $3 AND chunk_size <> {IN_BUCKET}", (storage.inline_max,)
    else:
        where = f"size > 0 AND chunk_size = {IN_BUCKET}"

    async def move(store_id: str, meta: RecordMeta, _: None) -> bool:
        return await _move(storage, to, store_id, meta)

    return await migrate_records(_records(storage, where, args), move, progress)


async def _move(storage: PostgresStorage, to: str, store_id: str, meta: RecordMeta) -> bool:
    """Copy one record's bytes to ``to`` and switch its row; False if it was written or deleted meanwhile."""
    old = meta.blob.blob_id
    pieces = storage.read_blob(meta).__aiter__()
    assert storage.uploads is not None

    if to == "bucket":

        async def switch(new: int, size: int) -> None:
            async def go(conn: asyncpg.Connection) -> None:
                if await conn.fetchval("DELETE FROM uploads WHERE blob_id = $1 RETURNING true", new) is None:
                    raise RecordChanged  # swept: nothing switched (a next run copies it again)
                if not await conn.fetchval(_SWITCH, store_id, meta.key, old, new, IN_BUCKET, False):
                    raise RecordChanged

            await storage._db.run(go, tx=True)

        return await copy_to_bucket(storage.uploads, store_id, pieces, switch)

    async def to_database(conn: asyncpg.Connection) -> None:
        copy, _ = await write_chunks(conn, pieces, bytearray())
        if not await conn.fetchval(_SWITCH, store_id, meta.key, old, copy, CHUNK_SIZE, True):
            raise RecordChanged  # rolls the chunks back too

    try:
        await storage._db.run(to_database, tx=True)
        return True
    except (RecordChanged, NotFound):  # written or deleted meanwhile: its new bytes are where they belong
        return False
