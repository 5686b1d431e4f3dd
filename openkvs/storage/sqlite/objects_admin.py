"""``openkvs blobs fsck`` and ``openkvs blobs migrate`` for SQLite metadata with a bucket (``--data-dir`` with
``--blob-store``): the queries; what they do and the order of things are bucket/admin.py's.

A record is moved only if its row still holds what was copied (its path, inline row and modification time, read
before the copy): a record written meanwhile keeps its new bytes and the copy is dropped."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..base import RecordMeta
from ..bucket import BlobStore
from ..bucket.admin import FsckReport, MigrateProgress, Names, check_target, copy_to_bucket
from ..bucket.admin import fsck as fsck_bucket
from ..bucket.admin import migrate as migrate_records
from ..bucket.uploads import IntentSwept, RecordChanged
from .blobs import OBJECT_PATH
from .objects import object_path, take_intent
from .tables import RECORD_COLS, now_ms, to_record_read

if TYPE_CHECKING:  # (for the annotations only: backend.py imports this module)
    from .backend import SQLiteStorage

__all__ = ["FsckReport", "MigrateProgress", "fsck", "migrate"]

_IS_OBJECT = f"substr(path, 1, {len(OBJECT_PATH)}) = '{OBJECT_PATH}'"
_BLOB_ID = f"CAST(substr(path, {len(OBJECT_PATH) + 1}) AS INTEGER)"


def _bucket(storage: SQLiteStorage, what: str) -> BlobStore:
    if storage.blob_store is None or storage.uploads is None:
        raise ValueError(f"openkvs blobs {what} needs --blob-store")
    return storage.blob_store


async def fsck(storage: SQLiteStorage, fix: bool = False) -> FsckReport:
    def known(conn: sqlite3.Connection) -> Names:
        conn.execute("BEGIN")  # one moment for every name
        try:
            ids = conn.execute(
                f"SELECT {_BLOB_ID} FROM records WHERE {_IS_OBJECT} UNION ALL "
                f"SELECT {_BLOB_ID} FROM garbage WHERE {_IS_OBJECT} UNION ALL SELECT blob_id FROM uploads"
            ).fetchall()
            records = conn.execute(
                f"SELECT store_id, key, {_BLOB_ID}, size FROM records WHERE {_IS_OBJECT} ORDER BY store_id, key"
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return {i for (i,) in ids}, records

    return await fsck_bucket(_bucket(storage, "fsck"), lambda: storage._db.read(known), fix)


# The identity of a record's bytes: its path, its inline row and its modification time (an inline row's id may be
# used again once deleted; a rewrite with the same path is impossible, each gets a new name).
_IDENTITY = "path IS ? AND data_id IS ? AND modified_at = ?"


Identity = tuple[str | None, int | None, int]  # path, data_id, modified_at


async def _records(
    storage: SQLiteStorage, where: str, args: tuple[Any, ...]
) -> AsyncIterator[tuple[str, RecordMeta, Identity]]:
    """(store id, record, its identity) of the records matching ``where``, in (store, key) order, a page at a
    time (no transaction held between pages)."""
    last = ("", "")
    while True:
        rows = await storage._db.read(
            lambda c, last=last: c.execute(
                f"SELECT r.store_id, {', '.join('r.' + c for c in RECORD_COLS.split(', '))}, d.data FROM records r "
                f"LEFT JOIN record_data d ON d.id = r.data_id WHERE {where} AND (r.store_id, r.key) > (?, ?) "
                "ORDER BY r.store_id, r.key LIMIT 100",
                (*args, *last),
            ).fetchall()
        )
        if not rows:
            return
        for r in rows:
            yield r[0], to_record_read(r[1:], storage.blob_dir), (r[9], r[8], r[5])
        last = (rows[-1][0], rows[-1][1])


async def migrate(
    storage: SQLiteStorage, to: str, progress: Callable[[MigrateProgress], None] | None = None
) -> MigrateProgress:
    """Move every record's bytes to ``to`` ("bucket": records above the bucket's inline_max; "database": all of
    them: inline up to the backend's inline_max, files above)."""
    bucket = _bucket(storage, "migrate")
    check_target(to)
    is_object = _IS_OBJECT.replace("path", "r.path")
    args: tuple[Any, ...] = ()
    if to == "bucket":
        where, args = f"r.size > ? AND (r.path IS NULL OR NOT {is_object})", (bucket.inline_max,)
    else:
        where = is_object

    async def move(store_id: str, meta: RecordMeta, identity: Identity) -> bool:
        return await _move(storage, to, store_id, meta, identity)

    return await migrate_records(_records(storage, where, args), move, progress)


class _Copy:
    """A record's bytes read back, as the body of a write (``RecordFiles.spill``)."""

    decoded_size = crc32 = 0  # not used: the record keeps its own

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self.pieces = pieces

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.pieces


async def _move(storage: SQLiteStorage, to: str, store_id: str, meta: RecordMeta, identity: Identity) -> bool:
    """Copy one record's bytes to ``to`` and switch its row; False if it was written or deleted meanwhile."""
    pieces = storage.read_blob(meta).__aiter__()
    if to == "bucket":
        assert storage.uploads is not None

        async def switch(blob_id: int, size: int) -> None:
            await storage._db.write(_to_object, store_id, meta.key, identity, blob_id)

        return await copy_to_bucket(storage.uploads, store_id, pieces, switch)
    files = storage._files
    _, data, tmp_path = await files.spill(_Copy(pieces))
    try:
        if tmp_path is None:
            await files.need_inline_space(len(data))
            await storage._db.write(_to_database, store_id, (meta.key, identity), data, None, None)
        else:
            await files.commit(store_id, (meta.key, identity), tmp_path, _to_database)
    except RecordChanged:
        return False
    return True


def _switch(
    conn: sqlite3.Connection, store_id: str, key: str, identity: Identity, path: str | None, data_id: int | None
) -> None:
    """Point the record at its bytes' new place (``path`` or ``data_id``) if it is still what was copied; its old
    bytes freed (inline) or to the garbage (a file or an object)."""
    old_path, old_data_id, modified_at = identity
    cur = conn.execute(
        f"UPDATE records SET path = ?, data_id = ? WHERE store_id = ? AND key = ? AND {_IDENTITY}",
        (path, data_id, store_id, key, old_path, old_data_id, modified_at),
    )
    if cur.rowcount != 1:
        raise RecordChanged
    if old_data_id is not None:
        conn.execute("DELETE FROM record_data WHERE id = ?", (old_data_id,))
    if old_path is not None:
        conn.execute(
            "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)", (old_path, now_ms(), store_id)
        )


def _to_object(conn: sqlite3.Connection, store_id: str, key: str, identity: Identity, blob_id: int) -> None:
    try:
        take_intent(conn, blob_id)
    except IntentSwept:  # nothing switched: a next run copies it again
        raise RecordChanged from None
    _switch(conn, store_id, key, identity, object_path(blob_id), None)


def _to_database(
    conn: sqlite3.Connection,
    store_id: str,
    row: tuple[str, Identity],
    data: bytes | None,
    relpath: str | None,
    pending_id: int | None,
) -> None:
    """Inline (``data``) or a file (``relpath``, registered as ``pending_id`` while it was moved into blobs/)."""
    key, identity = row
    data_id = conn.execute("INSERT INTO record_data(data) VALUES (?)", (data,)).lastrowid if data is not None else None
    _switch(conn, store_id, key, identity, relpath, data_id)
    if pending_id is not None:
        conn.execute("DELETE FROM garbage WHERE id = ?", (pending_id,))
