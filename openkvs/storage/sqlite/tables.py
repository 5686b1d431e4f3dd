"""The SQL side of the SQLite backend: the tables (DDL, their version, creating and upgrading a database), the
SELECTs that several methods share, writing a record (``commit_record``: for small ones and, through files.py,
big ones), row -> ``User``/``Store``/``Grant``/``RecordMeta`` conversion, timestamps as integer milliseconds and key
selections as SQL."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openkvs.zipwriter import local_header

from .. import schemas
from ..base import (
    Grant,
    KeySelection,
    NotFound,
    RecordMeta,
    StorageDamaged,
    StorageError,
    StorageUnavailable,
    Store,
    StoreStats,
    User,
    prefix_upper_bound,
)
from ..ids import new_id
from ..totals import SMALL_RECORD_MAX, ZIP64_SIZE
from .blobs import Inline, stored_at
from .clock import now_ms
from .connections import translate
from .datasets import DATASET_TABLES, FIELD_STATS_COLUMN, PACKED_ROWS_COLUMN
from .queues import QUEUE_TABLES
from .space import storing

TABLES_VERSION = 11
DB_NAME = "openkvs.sqlite3"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The index and trigger of records.zip_head (in CREATE_TABLES and in the upgrade to version 9).
ZIP_HEAD_SQL = """
CREATE INDEX IF NOT EXISTS records_no_zip_head ON records(store_id, key) WHERE zip_head IS NULL;
CREATE TRIGGER IF NOT EXISTS records_zip_head_stale AFTER UPDATE OF key, decoded_size, crc32, modified_at
    ON records WHEN NEW.zip_head IS OLD.zip_head
BEGIN
    UPDATE records SET zip_head = NULL WHERE store_id = NEW.store_id AND key = NEW.key;
END;
"""

# The totals of its records that each store keeps besides record_count (see storage/totals.py): their columns,
# the statement that adds to all of them (commit_record, delete_record: ``record_delta`` gives the values) and the
# same counted from the records (the upgrade to version 10, openkvs check).
# totals_generation: the generation the totals are kept up to, set by the same statements; a write by an older
# openkvs (a node not yet upgraded) moves the generation only, and then the totals are counted, not trusted.
STORE_TOTALS = "record_count, key_bytes, decoded_bytes, zip64_count, large_count"
_NEW_COLUMNS = [*STORE_TOTALS.split(", ")[1:], "totals_generation"]  # (version 10)
STORE_TOTALS_DDL = ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _NEW_COLUMNS)
ADD_TO_STORE = ", ".join(f"{c} = {c} + ?" for c in ["storage_bytes", *STORE_TOTALS.split(", ")])
# A record written or deleted: the store's generation and modifiedAt, then ADD_TO_STORE's parameters. (One string,
# not an f-string per call: sqlite3's statement cache hashes the SQL text of every execute.)
STORE_CHANGED = (
    "UPDATE stores SET generation = generation + 1, totals_generation = generation + 1, modified_at = ?, "
    f"{ADD_TO_STORE} WHERE id = ?"
)
RECORD_TOTALS = (
    "count(*), coalesce(sum(length(CAST(key AS BLOB))), 0), coalesce(sum(decoded_size), 0), "
    f"coalesce(sum(decoded_size >= {ZIP64_SIZE}), 0), coalesce(sum(size > {SMALL_RECORD_MAX}), 0)"
)

CREATE_TABLES = """
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
    storage_bytes           INTEGER NOT NULL DEFAULT 0,
    kind                    TEXT NOT NULL DEFAULT 'kvs',
    title                   TEXT,
    record_count            INTEGER NOT NULL DEFAULT 0,
    {STORE_TOTALS_DDL}
);
CREATE UNIQUE INDEX IF NOT EXISTS stores_user_kind_name ON stores(user_id, kind, name COLLATE NOCASE)
    WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS stores_user_kind_created ON stores(user_id, kind, created_at, id);
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
    zip_head          BLOB,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;
-- zip_head: the record's local header in a ZIP download (zipwriter.local_header), kept from write time so that an
-- archive of many small records is a join of stored bytes (snapshot.py). NULL in rows written before version 9 or
-- whose key, size, CRC or time changed since (the trigger): filled in by fill_zip_heads, the index finds them.
{ZIP_HEAD_SQL}
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
""".replace("{ZIP_HEAD_SQL}", ZIP_HEAD_SQL.strip()).replace("{STORE_TOTALS_DDL}", STORE_TOTALS_DDL) + QUEUE_TABLES

# Intents of objects being written, with --blob-store (storage/sqlite/objects.py): AUTOINCREMENT, so that a blob id
# (an object's name) is never used twice.
UPLOADS_TABLE = """
CREATE TABLE IF NOT EXISTS uploads (
    blob_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    store_id    TEXT NOT NULL,
    upload_id   TEXT,
    created_at  INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    swept       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS uploads_renewed ON uploads(swept, renewed_at)
"""

# A database at version N (N >= 1) runs UPGRADES[N - 1] ... to reach TABLES_VERSION; a new one runs CREATE_TABLES.
UPGRADES = (
    # 1 -> 2: leases per store, so that a download of one store keeps no other store's dead files.
    "ALTER TABLE garbage ADD COLUMN store_id TEXT; ALTER TABLE leases ADD COLUMN store_id TEXT",
    # 2 -> 3: datasets and request queues are rows of stores too (``kind``), with names unique per kind.
    "ALTER TABLE stores ADD COLUMN kind TEXT NOT NULL DEFAULT 'kvs'; ALTER TABLE stores ADD COLUMN title TEXT;"
    " DROP INDEX stores_user_name; DROP INDEX stores_user_created;"
    " CREATE UNIQUE INDEX stores_user_kind_name ON stores(user_id, kind, name COLLATE NOCASE) WHERE name IS NOT NULL;"
    " CREATE INDEX stores_user_kind_created ON stores(user_id, kind, created_at, id)",
    # 3 -> 4: request queues' requests and counters (storage/sqlite/queues.py).
    QUEUE_TABLES,
    # 4 -> 5: dataset items (storage/sqlite/datasets.py)
    DATASET_TABLES,
    # 5 -> 6: each store's record count, kept by commit_record and delete_record; counted once here (one range
    # scan of the records' primary key per store, in the upgrade's write transaction).
    "ALTER TABLE stores ADD COLUMN record_count INTEGER NOT NULL DEFAULT 0;"
    " UPDATE stores SET record_count = (SELECT count(*) FROM records r WHERE r.store_id = stores.id)",
    # 6 -> 7: intents of objects being written, with --blob-store (storage/sqlite/objects.py)
    UPLOADS_TABLE,
    # 7 -> 8: the field statistics of a dataset, kept at push time (storage/sqlite/datasets.py)
    FIELD_STATS_COLUMN,
    # 8 -> 9: each record's ZIP local header, kept from write time (filled in for older rows by fill_zip_heads)
    "ALTER TABLE records ADD COLUMN zip_head BLOB;" + ZIP_HEAD_SQL,
    # 9 -> 10: each store's totals for sizing a ZIP download (STORE_TOTALS), kept like record_count; counted once
    # here, in the upgrade's write transaction (record_count too: the same pass).
    "".join(f"ALTER TABLE stores ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0;" for c in _NEW_COLUMNS)
    + f" UPDATE stores SET ({STORE_TOTALS}) = (SELECT {RECORD_TOTALS} FROM records r WHERE r.store_id = stores.id),"
    " totals_generation = generation",
    # 10 -> 11: dataset items several to a row (storage/sqlite/datasets.py): the rows so far hold one each, the
    # column's default (SQLite's ADD COLUMN rewrites no row)
    PACKED_ROWS_COLUMN,
)
CREATE_TABLES += DATASET_TABLES + ";" + UPLOADS_TABLE + ";" + FIELD_STATS_COLUMN + ";" + PACKED_ROWS_COLUMN
assert len(UPGRADES) == TABLES_VERSION - 1



STORE_SELECT = """
SELECT s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
       s.schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
       s.storage_bytes, s.generation, s.kind, s.title, s.record_count
FROM stores s JOIN users u ON u.id = s.user_id
"""

# STORE_SELECT for list_stores: the schema column not read (NULL), as a page holds up to 1,000 stores and each
# schema up to 4 MiB (storage/base.py: Store.schema_read)
LIST_SELECT = STORE_SELECT.replace(" s.schema,", " NULL,")
GRANT_SELECT = "SELECT g.store_id, g.user_id, u.username, g.can_write FROM grants g JOIN users u ON u.id = g.user_id "
RECORD_COLS = "key, size, decoded_size, crc32, modified_at, content_type, content_encoding, data_id, path"
STORE_NCOLS = 19  # the columns of STORE_SELECT


def lookup_sql(by_name: bool, with_record: bool) -> str:
    """SQL of look_up_store: the store's columns, the caller's grant (can_write, NULL for none), then
    (``with_record``) the record's columns and its inline bytes, NULLs unless the record exists and the caller
    may read the store. Parameters: ?1 the caller's user ID, ?2-?4 the general_access levels that let the
    address read (padded with NULLs), ?5 the store ID or ?5 the owner's ID and ?6 the name, then the kind, then
    the record key. (Three comparisons rather than ``IN (?2, ?3, ?4)``: SQLite builds a temporary index for an
    IN list of parameters, a quarter of the query's time.)"""
    may_read = (
        "(s.user_id = ?1 OR g.user_id IS NOT NULL"
        " OR s.general_access = ?2 OR s.general_access = ?3 OR s.general_access = ?4)"
    )
    # ?N: the kind, last of the store's parameters (by ID a store of another kind is not found either)
    where = "s.user_id = ?5 AND s.name = ?6 COLLATE NOCASE AND s.kind = ?7" if by_name else "s.id = ?5 AND s.kind = ?6"
    key = "?8" if by_name else "?7"
    record_cols = (
        ", r.key, r.size, r.decoded_size, r.crc32, r.modified_at, r.content_type, r.content_encoding, r.data_id,"
        " r.path, d.data"
    )
    record_join = (
        f" LEFT JOIN records r ON r.store_id = s.id AND r.key = {key} AND {may_read}"
        " LEFT JOIN record_data d ON d.id = r.data_id"
    )
    return (
        STORE_SELECT.replace("\nFROM", f", g.can_write{record_cols if with_record else ''}\nFROM")
        + " LEFT JOIN grants g ON g.store_id = s.id AND g.user_id = ?1"
        + (record_join if with_record else "")
        + f" WHERE {where}"
    )


# (by name, with a record) -> SQL
LOOKUP = {(n, r): lookup_sql(n, r) for n in (False, True) for r in (False, True)}


# -- helpers ---------------------------------------------------------------------------------------------------


def to_ms(now: datetime | float | None) -> int:
    if now is None:
        return now_ms()
    if isinstance(now, datetime):
        return (now - EPOCH) // timedelta(milliseconds=1)
    return int(now * 1000)


@functools.lru_cache(maxsize=65_536)  # the same few timestamps (a store's, a hot record's) come back constantly
def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def selection_sql(selection: KeySelection) -> tuple[str, list[Any]]:
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



# A record's modifiedAt from its milliseconds, remembered: record GETs read the same few records again and again,
# and a timedelta and an addition per request cost more than a lookup (datetimes are immutable: sharing is safe).
_record_time = functools.lru_cache(maxsize=4096)(from_ms)


def to_record(row: Sequence[Any], blob: Any, at: int = 0) -> RecordMeta:
    """A record from the seven of RECORD_COLS that start at ``row[at]``, with its blob handle."""
    return RecordMeta(
        key=row[at],
        size=row[at + 1],
        decoded_size=row[at + 2],
        crc32=row[at + 3],
        modified_at=_record_time(row[at + 4]),
        content_type=row[at + 5],
        content_encoding=row[at + 6],
        blob=blob,
    )


def to_record_read(row: Sequence[Any], blob_dir: Path, at: int = 0) -> RecordMeta:
    """A record read as RECORD_COLS then ``d.data``, starting at ``row[at]``: in a file under ``blob_dir`` or an
    object (path), or inline (bytes, maybe none)."""
    path, data = row[at + 8], row[at + 9]
    if path is not None:
        blob: Any = stored_at(blob_dir, path, row[at + 1])
    else:
        blob = Inline(bytes(data) if data is not None else b"")
    return to_record(row, blob, at)


def commit_record(
    conn: sqlite3.Connection,
    store_id: str,
    row: tuple[Any, ...],
    data: bytes | None,
    relpath: str | None,
    pending_id: int | None = None,
) -> None:
    """In the writer's transaction: the record ``row`` (the first seven of RECORD_COLS) of store ``store_id``
    with its bytes inline (``data``) or in the file ``relpath``; the bytes it replaces freed (inline) or put in
    ``garbage`` (a file); the store's generation, modifiedAt, size and record count. ``pending_id``: the garbage
    row that kept the new file while it was moved in (see files.py), deleted now that the record holds it. Raises
    NotFound (the caller rolls back) when the store is gone.

    Four statements for a small record, new or overwritten: a record whose inline bytes are replaced by inline
    bytes keeps its ``record_data`` row, whose bytes are overwritten (readers of the old ones are in a read
    transaction of their own, which still sees them)."""
    key, size = row[0], row[1]
    now = row[4]
    old = conn.execute(
        "SELECT size, data_id, path, decoded_size FROM records WHERE store_id = ? AND key = ?", (store_id, key)
    ).fetchone()
    old_data_id = old[1] if old is not None else None
    data_id = None
    if data is not None and old_data_id is not None:
        data_id = old_data_id
        conn.execute("UPDATE record_data SET data = ? WHERE id = ?", (data, data_id))
    elif data is not None:
        data_id = conn.execute("INSERT INTO record_data(data) VALUES (?)", (data,)).lastrowid
    elif old_data_id is not None:
        conn.execute("DELETE FROM record_data WHERE id = ?", (old_data_id,))
    conn.execute(
        f"INSERT OR REPLACE INTO records(store_id, {RECORD_COLS}, zip_head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (store_id, *row, data_id, relpath, zip_head(row)),
    )
    if old is None:
        delta = record_delta(key, size, row[2])
    else:
        delta = overwrite_delta(size, row[2], old[0], old[3])
        if old[2] is not None:
            conn.execute(
                "INSERT INTO garbage(path, created_at, store_id) VALUES (?, ?, ?)", (old[2], now, store_id)
            )
    if pending_id is not None:
        conn.execute("DELETE FROM garbage WHERE id = ?", (pending_id,))
    if not conn.execute(
        STORE_CHANGED, (now, *delta, store_id)
    ).rowcount:
        raise NotFound(f"store {store_id}")


def record_delta(key: str, size: int, decoded_size: int) -> tuple[int, ...]:
    """What a record adds to its store's storage_bytes and STORE_TOTALS (the parameters of ADD_TO_STORE)."""
    return (size, 1, len(key.encode()), decoded_size, decoded_size >= ZIP64_SIZE, size > SMALL_RECORD_MAX)


def overwrite_delta(size: int, decoded_size: int, old_size: int, old_decoded: int) -> tuple[int, ...]:
    """``record_delta`` of a record less that of the one of the same key it replaces (written out: every PUT)."""
    return (
        size - old_size,
        0,
        0,
        decoded_size - old_decoded,
        (decoded_size >= ZIP64_SIZE) - (old_decoded >= ZIP64_SIZE),
        (size > SMALL_RECORD_MAX) - (old_size > SMALL_RECORD_MAX),
    )


def zip_head(row: Sequence[Any]) -> bytes:
    """records.zip_head of a record whose first columns (RECORD_COLS) are ``row``."""
    return local_header(row[0], row[2], row[3], row[4] // 1000)


ZIP_HEAD_FILL = 2000  # rows per write transaction of fill_zip_heads


def fill_zip_heads(conn: sqlite3.Connection, limit: int = ZIP_HEAD_FILL) -> int:
    """In the writer's transaction: records.zip_head of up to ``limit`` rows that have none (rows from before
    version 9, or changed by an UPDATE since). Returns how many were filled; 0 when none is left."""
    rows = conn.execute(
        "SELECT key, size, decoded_size, crc32, modified_at, store_id FROM records WHERE zip_head IS NULL LIMIT ?",
        (limit,),
    ).fetchall()
    conn.executemany(
        "UPDATE records SET zip_head = ? WHERE store_id = ? AND key = ?", [(zip_head(r), r[5], r[0]) for r in rows]
    )
    return len(rows)


def to_grant(row: Sequence[Any]) -> Grant:
    """A grant read by GRANT_SELECT."""
    return Grant(row[0], row[1], row[2], bool(row[3]))

def to_user(row: Sequence[Any]) -> User:
    return User(id=row[0], username=row[1], created_at=from_ms(row[2]))


def to_store(row: Sequence[Any]) -> Store:
    return Store(
        id=row[0],
        name=row[1],
        user_id=row[2],
        username=row[3],
        created_at=from_ms(row[4]),
        modified_at=from_ms(row[5]),
        accessed_at=from_ms(row[6]),
        general_access=row[7],
        schema=schemas.parsed(row[0], row[8]),
        url_signing_secret_key=row[9],
        stats=StoreStats(
            read_count=row[10], write_count=row[11], delete_count=row[12], list_count=row[13], storage_bytes=row[14],
            record_count=row[18],
        ),
        generation=row[15],
        kind=row[16],
        title=row[17],
    )


# -- creating and upgrading a database --------------------------------------------------------------------


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, each whole (a trigger's body holds semicolons of its own)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out


def create_database(db_path: Path, *, fsync: bool) -> None:
    """A brand-new database: built under a temporary name and linked into place complete, so a database file
    without a version is never a new install (see ``upgrade``). Several processes starting at once on a new
    data_dir: the first link wins, the others use it."""
    tmp = db_path.parent / f"{DB_NAME}.new-{os.getpid()}-{new_id(8)}"
    try:
        with storing(db_path.parent):
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in statements(CREATE_TABLES):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {TABLES_VERSION}")
                conn.execute("COMMIT")
            finally:
                conn.close()  # the last connection: checkpoints and removes the -wal and -shm files
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            try:
                os.link(tmp, db_path)
            except FileExistsError:
                pass
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def upgrade(conn: sqlite3.Connection, db_path: Path) -> None:
    """On the writer connection of an existing database: WAL mode, then its tables brought to ``TABLES_VERSION`` in
    one write transaction. Refuses a database without a version (see ``create_database``) or with a newer one, and
    a damaged one. Closes ``conn`` if it fails."""
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageUnavailable(f"cannot switch {db_path} to WAL mode (got {mode})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # A new database is made whole before it gets its name (create_database): one without a version
                # was emptied or replaced. Starting would make a new install over the old record files.
                raise StorageDamaged(
                    f"{db_path} exists but holds no openkvs database "
                    f"({db_path.stat().st_size} bytes): restore it from a backup, or move it away to "
                    "start a new, empty installation"
                )
            if version > TABLES_VERSION:  # (a StorageError: one line from every command, as on PostgreSQL)
                raise StorageError(
                    f"{db_path} has schema version {version}, newer than this openkvs knows ({TABLES_VERSION}); "
                    "upgrade openkvs"
                )
            if version < TABLES_VERSION:
                for statement in statements(";".join(UPGRADES[version - 1 :])):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {TABLES_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        if any(sign in str(exc) for sign in ("not a database", "malformed", "no such table", "no such column")):
            raise StorageDamaged(f"{db_path} is damaged ({exc}): run openkvs check") from exc
        raise
    except BaseException:
        conn.close()
        raise
