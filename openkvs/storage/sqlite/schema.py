"""The database side of the SQLite backend: the schema (DDL and its version), the SELECTs that several methods
share, row -> ``User``/``Store`` conversion, timestamps as integer milliseconds, key selections as SQL, and
sqlite3 errors that mean "unavailable" translated to ``StorageUnavailable``."""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..base import (
    prefix_upper_bound,
    KeySelection,
    StorageDamaged,
    StorageFull,
    StorageUnavailable,
    Store,
    StoreStats,
    User,
)

SCHEMA_VERSION = 2
DB_NAME = "openkvs.sqlite3"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL REFERENCES users(id),
    name                    TEXT,
    general_access          TEXT NOT NULL,
    schema                  TEXT,
    url_signing_secret_key  TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    modified_at             INTEGER NOT NULL,
    accessed_at             INTEGER NOT NULL,
    generation              INTEGER NOT NULL DEFAULT 0,
    read_count              INTEGER NOT NULL DEFAULT 0,
    write_count             INTEGER NOT NULL DEFAULT 0,
    delete_count            INTEGER NOT NULL DEFAULT 0,
    list_count              INTEGER NOT NULL DEFAULT 0,
    storage_bytes           INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS stores_user_name ON stores(user_id, name COLLATE NOCASE) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS stores_user_created ON stores(user_id, created_at, id);
CREATE TABLE IF NOT EXISTS grants (
    store_id    TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    can_write   INTEGER NOT NULL,
    PRIMARY KEY (store_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_user ON grants(user_id, store_id);
-- One row per record, clustered by (store_id, key) in byte order: a keys page or a snapshot batch is one range
-- scan. The bytes live in record_data (inline, data_id) or in blobs/ (path).
CREATE TABLE IF NOT EXISTS records (
    store_id          TEXT NOT NULL,
    key               TEXT NOT NULL COLLATE BINARY,
    size              INTEGER NOT NULL,
    decoded_size      INTEGER NOT NULL,
    crc32             INTEGER NOT NULL,
    modified_at       INTEGER NOT NULL,
    content_type      TEXT NOT NULL,
    content_encoding  TEXT,
    data_id           INTEGER,
    path              TEXT,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record_data (
    id    INTEGER PRIMARY KEY,
    data  BLOB NOT NULL
);
-- Files to delete. created_at in the future marks a file being committed right now (deleted with the row on
-- success, reclaimed if the process died in between). store_id: whose file it was (NULL in rows of version 1).
CREATE TABLE IF NOT EXISTS garbage (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    store_id    TEXT
);
-- A snapshot's lease keeps the files of its store (store_id) whose garbage id is above the watermark.
CREATE TABLE IF NOT EXISTS leases (
    id          TEXT PRIMARY KEY,
    watermark   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    store_id    TEXT
);
"""

# A database at version N (N >= 1) runs _UPGRADES[N - 1] ... to reach SCHEMA_VERSION; a new one runs _SCHEMA.
_UPGRADES = (
    # 1 -> 2: leases per store, so that a download of one store keeps no other store's dead files.
    "ALTER TABLE garbage ADD COLUMN store_id TEXT; ALTER TABLE leases ADD COLUMN store_id TEXT",
)
assert len(_UPGRADES) == SCHEMA_VERSION - 1

_STORE_SELECT = """
SELECT s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
       s.schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
       s.storage_bytes, s.generation
FROM stores s JOIN users u ON u.id = s.user_id
"""

_RECORD_COLS = "key, size, decoded_size, crc32, modified_at, content_type, content_encoding, data_id, path"
_STORE_NCOLS = 16  # the columns of _STORE_SELECT


def _lookup_sql(by_name: bool, with_record: bool) -> str:
    """SQL of look_up_store: the store's columns, the caller's grant (can_write, NULL for none), then
    (``with_record``) the record's columns and its inline bytes, NULLs unless the record exists and the caller
    may read the store. Parameters: ?1 the caller's user ID, ?2-?4 the general_access levels that let the
    address read (padded with NULLs), ?5 the store ID or ?5 the owner's ID and ?6 the name, then the record key.
    (Three comparisons rather than ``IN (?2, ?3, ?4)``: SQLite builds a temporary index for an IN list of
    parameters, a quarter of the query's time.)"""
    may_read = (
        "(s.user_id = ?1 OR g.user_id IS NOT NULL"
        " OR s.general_access = ?2 OR s.general_access = ?3 OR s.general_access = ?4)"
    )
    where = "s.user_id = ?5 AND s.name = ?6 COLLATE NOCASE" if by_name else "s.id = ?5"
    key = "?7" if by_name else "?6"
    record_cols = (
        ", r.key, r.size, r.decoded_size, r.crc32, r.modified_at, r.content_type, r.content_encoding, r.data_id,"
        " r.path, d.data"
    )
    record_join = (
        f" LEFT JOIN records r ON r.store_id = s.id AND r.key = {key} AND {may_read}"
        " LEFT JOIN record_data d ON d.id = r.data_id"
    )
    return (
        _STORE_SELECT.replace("\nFROM", f", g.can_write{record_cols if with_record else ''}\nFROM")
        + " LEFT JOIN grants g ON g.store_id = s.id AND g.user_id = ?1"
        + (record_join if with_record else "")
        + f" WHERE {where}"
    )


# (by name, with a record) -> SQL
_LOOKUP = {(n, r): _lookup_sql(n, r) for n in (False, True) for r in (False, True)}

_UNAVAILABLE_MARKERS = ("locked", "busy", "unable to open", "disk i/o")  # may pass: 503, retry
_FULL_MARKERS = ("disk is full", "readonly")  # nothing new can be stored: 507
_DAMAGED_MARKERS = ("not a database", "malformed")  # permanent until repaired


# -- helpers ---------------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _to_ms(now: datetime | float | None) -> int:
    if now is None:
        return _now_ms()
    if isinstance(now, datetime):
        return (now - _EPOCH) // timedelta(milliseconds=1)
    return int(now * 1000)


@functools.lru_cache(maxsize=65_536)  # the same few timestamps (a store's, a hot record's) come back constantly
def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _selection_sql(selection: KeySelection) -> tuple[str, list[Any]]:
    """A WHERE fragment (range conditions, so the primary key is used) and its parameters."""
    if selection.exact is not None:
        if selection.prefix and not selection.exact.startswith(selection.prefix):
            return "0", []
        return "key = ?", [selection.exact]
    if selection.prefix:
        upper = prefix_upper_bound(selection.prefix)
        if upper is None:
            return "key >= ?", [selection.prefix]
        return "key >= ? AND key < ?", [selection.prefix, upper]
    return "1", []


def _translate(exc: sqlite3.Error) -> Exception:
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


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], username=row[1], created_at=_dt(row[2]))


def _store(row: Sequence[Any]) -> Store:
    return Store(
        id=row[0],
        name=row[1],
        user_id=row[2],
        username=row[3],
        created_at=_dt(row[4]),
        modified_at=_dt(row[5]),
        accessed_at=_dt(row[6]),
        general_access=row[7],
        schema=json.loads(row[8]) if row[8] is not None else None,
        url_signing_secret_key=row[9],
        stats=StoreStats(
            read_count=row[10], write_count=row[11], delete_count=row[12], list_count=row[13], storage_bytes=row[14]
        ),
        generation=row[15],
    )
