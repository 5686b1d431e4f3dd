"""The database side of the PostgreSQL backend: the migrations (``migrate``) and the schema version they reach,
the column lists and row -> ``Store``/``User``/``Grant``/``RecordMeta`` conversions that several queries share, key
selections as SQL, the store look-up (``LOOKUP``, with the small record's bytes: ``held_data``) and the
one-statement record upserts (with the locking they rely on)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from .. import schemas
from ..base import (
    Grant,
    KeySelection,
    RecordMeta,
    StorageError,
    Store,
    StoreStats,
    User,
    prefix_upper_bound,
)
from ..totals import SMALL_RECORD_MAX, ZIP64_SIZE
from .chunks import PgBlob
from .clock import NOW_MS
from .datasets import DATASET_TABLES, FIELD_STATS_COLUMN, MAX_ITEM_COLUMN, PACKED_ROWS_COLUMN
from .queues import QUEUE_TABLES
from .zipheads import ZIP_HEADS

log = logging.getLogger(__package__)  # "openkvs.storage.postgres", the name log records had before the split

TABLES_VERSION = 12

# The totals of its records that each store keeps besides record_count (see storage/totals.py), the same counted
# from the records (the migration to version 10, openkvs check), and what one record adds to storage_bytes and them.
STORE_TOTALS = "record_count, key_bytes, decoded_bytes, zip64_count, large_count"
RECORD_TOTALS = (
    "count(*), coalesce(sum(octet_length(key)), 0)::bigint, coalesce(sum(decoded_size), 0)::bigint, "
    f"count(*) FILTER (WHERE decoded_size >= {ZIP64_SIZE}), count(*) FILTER (WHERE size > {SMALL_RECORD_MAX})"
)
ADDED_TO = ["storage_bytes", *STORE_TOTALS.split(", ")]


def record_adds(key: str, size: str, decoded_size: str) -> list[str]:
    """SQL of what a record (its columns as these expressions) adds to each of ADDED_TO."""
    return [size, "1", f"octet_length({key})", decoded_size, f"({decoded_size} >= {ZIP64_SIZE})::int",
            f"({size} > {SMALL_RECORD_MAX})::int"]


# delete_record's update of the store: less what its deleted row (``d``) added.
DELETE_ADDS = ", ".join(
    f"{c} = {c} - {e}" for c, e in zip(ADDED_TO, record_adds("d.key", "d.size", "d.decoded_size"), strict=True)
)

# Each entry migrates from version i to i+1 (MIGRATIONS[0] creates version 1).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id text PRIMARY KEY,
        username text NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE UNIQUE INDEX users_username ON users (username);

    CREATE TABLE tokens (
        token_hash text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX tokens_user ON tokens (user_id);

    CREATE TABLE stores (
        id text PRIMARY KEY,
        name text,
        user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL,
        modified_at timestamptz NOT NULL,
        accessed_at timestamptz NOT NULL,
        general_access text NOT NULL DEFAULT 'FOLLOW_USER_SETTING',
        schema jsonb,
        url_signing_secret_key text NOT NULL,
        read_count bigint NOT NULL DEFAULT 0,
        write_count bigint NOT NULL DEFAULT 0,
        delete_count bigint NOT NULL DEFAULT 0,
        list_count bigint NOT NULL DEFAULT 0,
        storage_bytes bigint NOT NULL DEFAULT 0,
        generation bigint NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX stores_user_name ON stores (user_id, lower(name));
    CREATE INDEX stores_user_created ON stores (user_id, created_at, id);

    CREATE TABLE grants (
        store_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        can_write boolean NOT NULL,
        PRIMARY KEY (store_id, user_id)
    );
    CREATE INDEX grants_user ON grants (user_id);

    CREATE SEQUENCE blob_ids;

    CREATE TABLE blob_chunks (
        blob_id bigint NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (blob_id, seq)
    );
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

    CREATE TABLE records (
        store_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        key text COLLATE "C" NOT NULL,
        content_type text NOT NULL,
        content_encoding text,
        size bigint NOT NULL,
        decoded_size bigint NOT NULL,
        crc32 bigint NOT NULL,
        modified_at timestamptz NOT NULL,
        blob_id bigint NOT NULL,
        chunk_size integer NOT NULL,
        PRIMARY KEY (store_id, key)
    );

    CREATE TABLE garbage (
        blob_id bigint PRIMARY KEY,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX garbage_created ON garbage (created_at);
    """,
    # 2: the record upsert notes the row it replaced in these (set only by ON CONFLICT DO UPDATE, which reads the
    # locked latest version), so one statement both writes and learns which blob went to the garbage.
    """
    ALTER TABLE records ADD COLUMN prev_blob_id bigint, ADD COLUMN prev_size bigint;
    """,
    # 3: datasets and request queues are rows of stores too (``kind``), with names unique per owner and kind.
    """
    ALTER TABLE stores ADD COLUMN kind text NOT NULL DEFAULT 'kvs', ADD COLUMN title text;
    DROP INDEX stores_user_name;
    DROP INDEX stores_user_created;
    CREATE UNIQUE INDEX stores_user_kind_name ON stores (user_id, kind, lower(name));
    CREATE INDEX stores_user_kind_created ON stores (user_id, kind, created_at, id);
    """,
    # 4: request queues' requests and counters (storage/postgres/queues.py).
    QUEUE_TABLES,
    # 5: record bytes in a bucket (--blob-store; chunk_size IN_BUCKET marks such a record). ``uploads``: the
    # intent noted before an object is written (a crash leaves it for the sweeper). ``garbage.in_bucket``: the
    # blob is an object; ``garbage.xid``: the transaction that made it garbage, compared with the ``leases`` of
    # open snapshots (watermark: the xmin of a snapshot taken before theirs), which MVCC can't protect objects for.
    """
    ALTER TABLE records ADD COLUMN prev_chunk_size integer;
    ALTER TABLE garbage ADD COLUMN in_bucket boolean NOT NULL DEFAULT false,
        ADD COLUMN xid xid8 DEFAULT pg_current_xact_id();
    CREATE TABLE uploads (
        blob_id bigint PRIMARY KEY,
        upload_id text,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX uploads_created ON uploads (created_at);
    CREATE TABLE leases (
        id bigserial PRIMARY KEY,
        watermark xid8 NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """,
    DATASET_TABLES,  # 6: dataset items (storage/postgres/datasets.py)
    # 7: each store's record count, kept by the record upserts and delete_record; counted once here. ALTER TABLE
    # locks ``stores`` until the migration commits, and every record writer locks its store row first, so no
    # record changes between the count and the commit.
    """
    ALTER TABLE stores ADD COLUMN record_count bigint NOT NULL DEFAULT 0;
    UPDATE stores s SET record_count = c.n
        FROM (SELECT store_id, count(*) AS n FROM records GROUP BY store_id) c WHERE c.store_id = s.id;
    """,
    FIELD_STATS_COLUMN,  # 8: the field statistics of a dataset, kept at push time (storage/postgres/datasets.py)
    ZIP_HEADS,  # 9: each record's ZIP local header, kept from write time (storage/postgres/zipheads.py)
    # 10: each store's totals for sizing a ZIP download (STORE_TOTALS), kept like record_count (and counted once
    # here, under the same lock); the upserts learn the replaced record's decoded size as they learn its size.
    # totals_generation: the generation they are kept up to (a write by an older node moves only the generation).
    "".join(
        f"ALTER TABLE stores ADD COLUMN {c} bigint NOT NULL DEFAULT 0;"
        for c in [*STORE_TOTALS.split(", ")[1:], "totals_generation"]
    )
    + "ALTER TABLE records ADD COLUMN prev_decoded_size bigint;"
    + f"UPDATE stores s SET ({STORE_TOTALS}) = (SELECT {RECORD_TOTALS} FROM records r WHERE r.store_id = s.id),"
    " totals_generation = generation;",
    MAX_ITEM_COLUMN,  # 11: each dataset's largest item, kept at push time (storage/postgres/datasets.py)
    PACKED_ROWS_COLUMN,  # 12: dataset items several to a row (storage/postgres/datasets.py)
]


async def migrate(conn: asyncpg.Connection, namespace: str) -> int:
    """Create ``namespace`` and its tables or bring them to ``TABLES_VERSION``; returns the version. Safe to run
    from several processes at once (an advisory lock serializes them). Raises StorageError if the database holds a
    newer version than this code knows."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"openkvs-migrate:{namespace}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"')
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        version = await conn.fetchval("SELECT max(version) FROM schema_version")
        version = version or 0
        if version > TABLES_VERSION:
            raise StorageError(
                f"database schema {namespace!r} is at version {version}, newer than this openkvs knows "
                f"({TABLES_VERSION}); upgrade openkvs"
            )
        for v in range(version, TABLES_VERSION):
            await conn.execute(MIGRATIONS[v])
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", v + 1)
            log.info("migrated schema %s to version %d", namespace, v + 1)
        return TABLES_VERSION


def selection_sql(selection: KeySelection, args: list[Any]) -> str | None:
    """SQL conditions on ``key`` for a selection, appending parameters to ``args``; None: selects nothing."""
    conds: list[str] = []
    if selection.exact is not None:
        if selection.prefix is not None and not selection.exact.startswith(selection.prefix):
            return None
        args.append(selection.exact)
        conds.append(f"key = ${len(args)}")
    elif selection.prefix:
        args.append(selection.prefix)
        conds.append(f"key >= ${len(args)}")
        succ = prefix_upper_bound(selection.prefix)
        if succ is not None:
            args.append(succ)
            conds.append(f"key < ${len(args)}")
    return " AND ".join(conds) if conds else "TRUE"


# The schema as text, not jsonb: asyncpg's jsonb codec would parse it on the event loop at every read of the row, and
# a schema may be megabytes; to_store parses it once per store and text (storage/schemas.py).
STORE_COLS = """s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
    s.schema::text AS schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
    s.storage_bytes, s.generation, s.kind, s.title, s.record_count"""
STORE_FROM = "stores s JOIN users u ON u.id = s.user_id"
# STORE_COLS for list_stores: the schema not read (NULL), as a page holds up to 1,000 stores and each schema up to
# 4 MiB (storage/base.py: Store.schema_read)
LIST_COLS = STORE_COLS.replace("s.schema::text AS schema", "NULL::text AS schema")
GRANT_SELECT = "SELECT g.store_id, g.user_id, u.username, g.can_write FROM grants g JOIN users u ON u.id = g.user_id "
# A record whose bytes are an object in the bucket has chunk_size IN_BUCKET and no blob_chunks rows.
IN_BUCKET = 0
IN_BUCKET_SQL = f"({{size}} > 0 AND {{chunk_size}} = {IN_BUCKET})"
RECORD_COLS = "key, content_type, content_encoding, size, decoded_size, crc32, modified_at, blob_id, chunk_size"
GET_INLINE_MAX = 64 * 1024  # get_record returns the bytes of records up to this size with the metadata


def held_data(r: str) -> str:
    """SQL: the bytes of the record row ``r`` when they are one chunk of at most GET_INLINE_MAX (they then come
    with the metadata and read_blob runs no query), else NULL. (A record in the bucket has chunk_size 0.)"""
    return (
        f"CASE WHEN {r}.size > 0 AND {r}.size <= least({r}.chunk_size, {GET_INLINE_MAX}) THEN "
        f"(SELECT c.data FROM blob_chunks c WHERE c.blob_id = {r}.blob_id AND c.seq = 0) END"
    )


def text_array(values: Sequence[str | None]) -> str:
    """A PostgreSQL array literal of ``values`` (None: NULL), sent as one text parameter and cast in the SQL
    (``$n::text::text[]``): asyncpg's own array encoding checks the list and then each element against three
    collections.abc classes, ~4.5k instructions a check (callgrind), more than the rest of a look-up's bind. Every
    element is quoted, with backslashes and double quotes escaped (array_in's rules, the same whatever
    standard_conforming_strings says). Strings with neither (IDs, most keys) are joined in one go: a burst's five
    arrays built element by element cost ~12k instructions a look-up, a quarter of it (bench/cg_lookups.py)."""
    try:
        flat, items, nulls = "".join(values), values, 0  # type: ignore[arg-type]
    except TypeError:  # a None among them
        items = [_NUL if v is None else v for v in values]
        flat, nulls = "".join(items), values.count(None)  # type: ignore[arg-type]
    if '"' in flat or "\\" in flat or not values or nulls and flat.count(_NUL) != nulls:
        return "{" + ",".join("NULL" if v is None else '"' + v.translate(_ESCAPES) + '"' for v in values) + "}"
    text = '{"' + '","'.join(items) + '"}'  # type: ignore[arg-type]
    return text.replace(_QUOTED_NUL, "NULL") if nulls else text


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_NUL = "\x00"  # a None's place in text_array's join: no PostgreSQL text holds a NUL, so no value is one
_QUOTED_NUL = f'"{_NUL}"'


# The version of what a look-up reads of a store (its row and its owner's, the username): both rows' xmin, the
# transaction that wrote them, as text ("store:owner"), which is sent back as it came, in a burst's arrays too (a
# bigint's str() cost ~1.2k instructions a look-up of a burst). A look-up by ID sends the version of the Store it
# holds for that ID (lookups.StoreVersions); when the rows still read the same, the store's columns come back NULL
# and the held Store is used: the check is in the look-up's own statement, so a change committed anywhere before it
# is seen.
STORE_VERSION = "s.xmin::text || ':' || u.xmin::text"
_STORE_COL_NAMES = [c.strip() for c in STORE_COLS.split(",")]


def _versioned_store_cols() -> str:
    """STORE_COLS, each NULL when ``v.same`` (see _version_join); first ``ver`` itself, likewise."""
    cols = ["CASE WHEN v.same THEN NULL ELSE v.ver END AS ver"]
    for c in _STORE_COL_NAMES:  # "s.name", or "s.schema::text AS schema"
        expr, _, alias = c.partition(" AS ")
        cols.append(f"CASE WHEN v.same THEN NULL ELSE {expr} END AS {alias or c.split('.')[1]}")
    return ", ".join(cols)


def _held_version(version: str, held: str, alias: str) -> str:
    """A join giving a row's ``version`` (``ALIAS.ver``) and whether it is ``held`` (``ALIAS.same``), computed once
    a row. OFFSET 0 keeps the planner from pulling the subquery up: pulled up, each of the 21 CASEs that read it got
    its own copy of the version's expression (xid -> text casts, then to bigint), which cost PostgreSQL's backend
    ~15-20 us of CPU a look-up, a third of the statement (bench/pg_micro.py lookupcpu)."""
    return (
        f"CROSS JOIN LATERAL (SELECT x.ver, x.ver = {held} AS same FROM (SELECT {version} AS ver) x OFFSET 0)"
        f" {alias}"
    )


def _version_join(held: str) -> str:
    """The store rows' version (``v.ver``, STORE_VERSION) and whether it is ``held`` (``v.same``)."""
    return _held_version(STORE_VERSION, held, "v")


# The version of a record row: its xmin, the transaction that wrote it (a write, a delete and a new put, a kept
# ZIP header filled in: each a new row version with its writer's xmin). Held like the store's (lookups.py).
RECORD_VERSION = "r.xmin::text"


def _record_cols(held: str | None) -> str:
    """The look-up's record columns: RECORD_COLS prefixed "r_" (stores have some of the same names) and the small
    record's bytes (r_data, see get_record). With ``held`` (a look-up by ID, which sends the version of the record
    it holds, NULL: none), first r_same (the row's version is ``held``: the other columns are NULL then, the
    bytes not read) and r_ver (the row's version; NULL when r_same or no record)."""
    cols = [f"r.{c.strip()} AS r_{c.strip()}" for c in RECORD_COLS.split(",")] + [f"{held_data('r')} AS r_data"]
    if held is None:
        return ", " + ", ".join(cols)
    cols = [f"CASE WHEN rv.same THEN NULL ELSE {c.rsplit(' AS ', 1)[0]} END AS {c.rsplit(' AS ', 1)[1]}" for c in cols]
    return ", rv.same AS r_same, CASE WHEN rv.same THEN NULL ELSE rv.ver END AS r_ver, " + ", ".join(cols)


def _record_join(key: str, may_read: str, held: str | None) -> str:
    """The record row ``r`` (NULLs unless the record exists and the caller may read); with ``held``, its version
    and whether it is ``held`` (``rv``, _held_version)."""
    join = f"LEFT JOIN records r ON r.store_id = s.id AND r.key = {key} AND {may_read}"
    return join if held is None else f"{join} {_held_version(RECORD_VERSION, held, 'rv')}"


def _lookup_sql(by_name: bool, with_record: bool) -> str:
    """SQL of look_up_store: the store's columns, the caller's grant (g_can_write, NULL for none), whether the
    caller may read the store (may_read), then (``with_record``) the record's columns (_record_cols). Parameters:
    $1 the caller's user ID, $2 the general_access levels that let the address read (``text_array``), $3 the
    store ID or $3 the owner's ID and $4 the name, then the kind, then the record key. By ID, the columns start
    with ``ver`` and the store's columns are NULL when the next parameter, the version of the Store the caller
    holds, is the rows' (see STORE_VERSION; NULL: none held); with a record, the last parameter is the version of
    the record held (RECORD_VERSION, NULL: none)."""
    may_read = "(s.user_id = $1 OR g.user_id IS NOT NULL OR s.general_access = ANY($2::text::text[]))"
    where = "s.user_id = $3 AND lower(s.name) = lower($4) AND s.kind = $5" if by_name else "s.id = $3 AND s.kind = $4"
    key = "$6" if by_name else "$5"
    held = "$6::text" if with_record else "$5::text"
    held_record = None if by_name else "$7::text"
    store_cols = STORE_COLS if by_name else _versioned_store_cols()
    return f"""SELECT {store_cols}, g.can_write AS g_can_write, {may_read} AS may_read
            {_record_cols(held_record) if with_record else ""}
        FROM {STORE_FROM} {"" if by_name else _version_join(held)}
            LEFT JOIN grants g ON g.store_id = s.id AND g.user_id = $1
            {_record_join(key, may_read, held_record) if with_record else ""}
        WHERE {where}"""


# (by name, with a record) -> SQL
LOOKUP = {(n, r): _lookup_sql(n, r) for n in (False, True) for r in (False, True)}


def _lookup_many_sql(with_record: bool) -> str:
    """SQL of many look-ups by store ID at once (lookups.py): the columns of LOOKUP[(False, with_record)] after
    ``n``, the look-up's place (from 1) in the arrays; no row for a look-up whose store is not there. Parameters
    (arrays as ``text_array``): $1 the general_access levels that let the address read, $2 the kind, $3 the
    callers' user IDs (NULL: none), $4 the store IDs, $5 the versions of the Stores held (NULL: none), then ($6)
    the record keys and ($7) the versions of the records held (NULL: none). The same for every look-up: the
    levels and the kind."""
    may_read = "(s.user_id = w.uid OR g.user_id IS NOT NULL OR s.general_access = ANY($1::text::text[]))"
    arrays = "$3::text::text[], $4::text::text[], $5::text::text[]"
    arrays += ", $6::text::text[], $7::text::text[]" if with_record else ""
    names = "uid, sid, held, key, rheld, n" if with_record else "uid, sid, held, n"
    return f"""SELECT w.n, {_versioned_store_cols()}, g.can_write AS g_can_write, {may_read} AS may_read
            {_record_cols("w.rheld") if with_record else ""}
        FROM unnest({arrays}) WITH ORDINALITY AS w({names})
            JOIN stores s ON s.id = w.sid AND s.kind = $2
            JOIN users u ON u.id = s.user_id
            {_version_join("w.held")}
            LEFT JOIN grants g ON g.store_id = s.id AND g.user_id = w.uid
            {_record_join("w.key", may_read, "w.rheld") if with_record else ""}"""


# with a record -> SQL
LOOKUP_MANY = {r: _lookup_many_sql(r) for r in (False, True)}


def to_store(row: asyncpg.Record) -> Store:
    return Store(
        id=row["id"],
        name=row["name"],
        user_id=row["user_id"],
        username=row["username"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        accessed_at=row["accessed_at"],
        general_access=row["general_access"],
        schema=schemas.parsed(row["id"], row["schema"]),
        url_signing_secret_key=row["url_signing_secret_key"],
        stats=StoreStats(
            read_count=row["read_count"],
            write_count=row["write_count"],
            delete_count=row["delete_count"],
            list_count=row["list_count"],
            storage_bytes=row["storage_bytes"],
            record_count=row["record_count"],
        ),
        generation=row["generation"],
        kind=row["kind"],
        title=row["title"],
    )



def to_grant(row: asyncpg.Record) -> Grant:
    """A grant read by GRANT_SELECT."""
    return Grant(row["store_id"], row["user_id"], row["username"], row["can_write"])

def to_user(row: asyncpg.Record) -> User:
    return User(id=row["id"], username=row["username"], created_at=row["created_at"])


def to_record(row: asyncpg.Record, data: bytes | None = None, prefix: str = "") -> RecordMeta:
    """A record from its columns (named ``prefix`` + column). ``data``: its bytes when the query brought them
    along; an empty record has them anyway."""
    p = prefix
    if data is None and row[p + "size"] == 0:
        data = b""
    return RecordMeta(
        key=row[p + "key"],
        content_type=row[p + "content_type"],
        content_encoding=row[p + "content_encoding"],
        size=row[p + "size"],
        decoded_size=row[p + "decoded_size"],
        crc32=row[p + "crc32"],
        modified_at=row[p + "modified_at"],
        blob=PgBlob(row[p + "blob_id"], row[p + "chunk_size"], row[p + "size"], data),
    )


RECORD_NCOLS = RECORD_COLS.count(",") + 1


def record_from(cols: Sequence[Any], data: bytes | None) -> RecordMeta:
    """``to_record`` of the RECORD_COLS ``cols``, in their order, by position: a look-up by name in an asyncpg
    Record hashes the name anew (a prefixed one is a new string each time), about half of what making the record
    GET's look-up answer cost (callgrind: 27.5k -> 13.6k instructions an answer)."""
    key, content_type, content_encoding, size, decoded_size, crc32, modified_at, blob_id, chunk_size = cols
    if data is None and size == 0:
        data = b""
    return RecordMeta(
        key, content_type, content_encoding, size, decoded_size, crc32, modified_at,
        PgBlob(blob_id, chunk_size, size, data),
    )


# zip_head: the record's ZIP local header, made by the upserts themselves (zipheads.py), so that the triggers that
# keep it right for other writers have nothing to do for them.
_INSERT_RECORD = """INSERT INTO records (store_id, key, content_type, content_encoding, size, decoded_size, crc32,
            modified_at, blob_id, chunk_size, prev_blob_id, prev_size, prev_decoded_size, zip_head)"""
_ON_CONFLICT = f"""ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
            content_encoding = EXCLUDED.content_encoding, size = EXCLUDED.size,
            decoded_size = EXCLUDED.decoded_size, crc32 = EXCLUDED.crc32,
            modified_at = EXCLUDED.modified_at, blob_id = EXCLUDED.blob_id, chunk_size = EXCLUDED.chunk_size,
            zip_head = EXCLUDED.zip_head,
            prev_blob_id = records.blob_id, prev_size = records.size, prev_chunk_size = records.chunk_size,
            prev_decoded_size = records.decoded_size
        RETURNING {RECORD_COLS}, prev_blob_id, prev_size, prev_chunk_size, prev_decoded_size"""
# What an upsert's row (``up``) adds to each of ADDED_TO: the new record less the one it replaced, if any.
_UPSERT_ADDS = [
    f"{new} - CASE WHEN up.prev_blob_id IS NULL THEN 0 ELSE {old} END"
    for new, old in zip(
        record_adds("up.key", "up.size", "up.decoded_size"),
        record_adds("up.key", "up.prev_size", "up.prev_decoded_size"),
        strict=True,
    )
]
_GARBAGE = f"""g AS (INSERT INTO garbage (blob_id, created_at, in_bucket)
          SELECT up.prev_blob_id, t.now, {IN_BUCKET_SQL.format(size="up.prev_size", chunk_size="up.prev_chunk_size")}
          FROM up, t WHERE up.prev_blob_id IS NOT NULL)"""


# Writing a record is one statement. It locks the store row first (``lk``: ``up`` reads from it, so that runs
# before the record row is touched; no row when the store is gone) and the store row is what every writer of a
# store waits for, so the statement holds it only for its own execution and commit: for a small record the
# statement is its own transaction, so no client round trip happens while the lock is held (it used to be held
# over three). ON CONFLICT DO UPDATE locks the record row and reads its latest committed version, so
# prev_blob_id/prev_size name exactly the blob this write replaced, even when a writer of the same key committed
# after this statement's snapshot was taken (NULL: the key was new, and the store's record_count grows by one);
# prev_decoded_size likewise for the store's other totals.
_UPSERT_TAIL = f"""
    lk AS (SELECT id FROM stores WHERE id = $1 FOR NO KEY UPDATE),
    up AS (
        {_INSERT_RECORD}
        SELECT $1, $2, $3, $4, $5, $6, $7, t.now, b.id, $8, NULL, NULL, NULL,
            zip_local_header($2::text, $6::bigint, $7::bigint, t.now)
        FROM lk, t, b
        {_ON_CONFLICT}
    ),
    {_GARBAGE},
    st AS (
        UPDATE stores SET generation = generation + 1, totals_generation = generation + 1,
            modified_at = greatest(stores.modified_at, t.now),
            {", ".join(f"{c} = {c} + {e}" for c, e in zip(ADDED_TO, _UPSERT_ADDS, strict=True))}
        FROM up, t WHERE id = $1
    )"""
# A record of at most one chunk: the chunk ($9, NULL when empty) goes in with the same statement.
UPSERT_SMALL = f"""WITH t AS (SELECT {NOW_MS} AS now),
    b AS MATERIALIZED (SELECT nextval('blob_ids') AS id),
    {_UPSERT_TAIL},
    c AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT b.id, 0, $9::bytea FROM b, lk WHERE $9::bytea IS NOT NULL)
    SELECT * FROM up"""
# A bigger record whose chunks the transaction already wrote under blob id $9.
UPSERT_BIG = f"""WITH t AS (SELECT {NOW_MS} AS now), b AS (SELECT $9::bigint AS id),
    {_UPSERT_TAIL}
    SELECT * FROM up"""
_GROUP_ADDS = ", ".join(f"{c} = stores.{c} + d.{c}" for c in ADDED_TO)
_GROUP_SUMS = ", ".join(f"sum({e}) AS {c}" for c, e in zip(ADDED_TO, _UPSERT_ADDS, strict=True))
# Small records of one store ($1), each key at most once, in one statement (group commit, groups.py): the same
# locking and bookkeeping as UPSERT_SMALL for many rows. $2: the chunk size; $3..$9 one array per column (key,
# content_type, content_encoding, size, decoded_size, crc32, the chunk or NULL when empty). The store row is
# updated once, with the group's totals (``d``: writes, and the sums of what each row adds to ADDED_TO).
UPSERT_GROUP = f"""WITH t AS (SELECT {NOW_MS} AS now),
    lk AS (SELECT id FROM stores WHERE id = $1 FOR NO KEY UPDATE),
    i AS MATERIALIZED (
        SELECT w.*, nextval('blob_ids') AS blob_id
        FROM lk, unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bytea[])
            AS w(key, content_type, content_encoding, size, decoded_size, crc32, data)
    ),
    up AS (
        {_INSERT_RECORD}
        SELECT $1, i.key, i.content_type, i.content_encoding, i.size, i.decoded_size, i.crc32, t.now, i.blob_id, $2,
            NULL, NULL, NULL, zip_local_header(i.key, i.decoded_size, i.crc32, t.now) FROM i, t
        {_ON_CONFLICT}
    ),
    {_GARBAGE},
    d AS (SELECT count(*) AS writes, {_GROUP_SUMS} FROM up),
    st AS (
        UPDATE stores SET generation = generation + d.writes, totals_generation = generation + d.writes,
            modified_at = greatest(stores.modified_at, t.now), {_GROUP_ADDS}
        FROM d, t WHERE id = $1 AND d.writes > 0
    ),
    c AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT i.blob_id, 0, i.data FROM i WHERE i.data IS NOT NULL)
    SELECT * FROM up"""
