"""PostgreSQL backend: every table in one Postgres schema, record bytes in ``blob_chunks`` rows.

Usage::

    storage = PostgresStorage("postgresql://user@host/db", schema="openkvs")
    await storage.open()        # connects, creates or migrates the schema (refuses a newer one), starts tasks
    ...
    await storage.aclose()      # flushes access counters, stops tasks, closes the pools

    await PostgresStorage(dsn, schema=...).migrate()   # what ``openkvs migrate`` runs: migrate, return the version
    await storage.drop_schema()                        # tests: DROP SCHEMA ... CASCADE (works open or closed)
    await storage.collect_garbage(now=..., grace=...)  # one GC pass (the background task runs it every 10 s)
    await storage.flush_stats()                        # write the buffered access counters now

Design:

- Records point at a blob id; the bytes are rows ``blob_chunks(blob_id, seq, data)`` of ``CHUNK_SIZE`` bytes (the
  last one shorter), stored uncompressed out of line (``STORAGE EXTERNAL``). The chunk size of each record is
  kept in its row, so the constant may change without breaking old records.
- ``put_record`` buffers the first chunk; a body that fits in it is written by one statement, its own
  transaction (chunk, record upsert, old blob id to ``garbage``, store row: generation, modifiedAt, storage bytes).
  A bigger body is written in one transaction on a connection of the *stream pool* (uploads and ZIP snapshots live
  there so slow clients cannot starve the short queries): chunk by chunk as the body yields, then the same upsert
  statement. All writers of a store wait for its row lock, which that statement takes and holds only until its
  commit (see ``_UPSERT_TAIL``). If the body raises, the transaction rolls back and nothing is left behind (a
  crash does the same).
- ``garbage(blob_id, created_at)``: GC deletes chunks of garbage older than ``gc_grace_seconds``, so a blob
  handed out by ``get_record`` stays readable for the grace period. A snapshot is one REPEATABLE READ READ ONLY
  transaction: rows that GC deletes after it began stay visible to it (MVCC), whatever the grace.
- Connection failures become ``StorageUnavailable``; asyncpg's pools replace closed connections on acquire.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import anyio
import asyncpg
from asyncpg import exceptions as pgx

from .base import (
    prefix_upper_bound,
    Grant,
    KeyItem,
    KeyPage,
    KeySelection,
    NameNotUnique,
    NotFound,
    RecordBody,
    RecordMeta,
    Snapshot,
    SnapshotTotals,
    Storage,
    StorageError,
    StorageUnavailable,
    Store,
    StoreStats,
    User,
    UsernameTaken,
)
from .ids import new_id
from .stats import StatsBuffer

log = logging.getLogger(__name__)

# Bytes per blob_chunks row. Measured (256 MiB record, best of 3, local PostgreSQL 15, 2 CPUs), in / out MB/s:
# 128 KiB 226/523, 256 KiB 166-260/543-586, 512 KiB 284-290/543-557, 1 MiB 306-329/551-569, 2 MiB 289/518.
# 1 MiB writes fastest (fewer round trips) and keeps memory flat; COPY was slower (136-248 MB/s).
CHUNK_SIZE = 1024 * 1024
READ_PIECE = 1024 * 1024  # read_blob yields pieces of at most this
# Bytes of chunks per query when a snapshot streams a big record (the ZIP download). Measured (20 x 50 MiB through
# the storage API, 3 runs each, MiB/s): 1 MiB 428-472, 2 MiB 448-549, 4 MiB 608-625, 8 MiB 634-720. With the
# prefetch two queries' rows are held at once; 4 MiB keeps that near a batch of small records (PREFETCH_BYTES).
SNAPSHOT_QUERY_BYTES = 4 * 1024 * 1024
GET_INLINE_MAX = 64 * 1024  # get_record returns the bytes of records up to this size with the metadata
PREFETCH_BYTES = 8 * 1024 * 1024  # a snapshot batch holds at most about this many bytes of one-chunk records
SCHEMA_VERSION = 2
STATS_FLUSH_SECONDS = 2.0
GC_INTERVAL_SECONDS = 10.0
BIG = 0xFFFFFFFF

_NOW_MS = "date_trunc('milliseconds', clock_timestamp())"

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
]

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pgx.PostgresConnectionError,  # ConnectionDoesNotExistError, ConnectionFailureError, ...
    pgx.OperatorInterventionError,  # AdminShutdownError (pg_terminate_backend), CannotConnectNowError, ...
    pgx.InsufficientResourcesError,  # TooManyConnectionsError
    pgx.InterfaceError,  # connection closed / pool closing / "another operation is in progress" after a loss
    pgx.InternalClientError,
    OSError,  # ConnectionRefusedError, ConnectionResetError, socket errors
    asyncio.TimeoutError,  # connect timeout
)

T = TypeVar("T")


def _unavailable(exc: BaseException) -> StorageUnavailable:
    err = StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class PgBlob:
    """The handle in ``RecordMeta.blob``. ``data``: the whole stored bytes when they came with the metadata (a
    record of one chunk, read in the same query); ``read_blob`` then needs no query."""

    blob_id: int
    chunk_size: int
    size: int
    data: bytes | None = field(default=None, repr=False, compare=False)


def _selection_sql(selection: KeySelection, args: list[Any]) -> str | None:
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


_STORE_COLS = """s.id, s.name, s.user_id, u.username, s.created_at, s.modified_at, s.accessed_at, s.general_access,
    s.schema, s.url_signing_secret_key, s.read_count, s.write_count, s.delete_count, s.list_count,
    s.storage_bytes, s.generation"""
_STORE_FROM = "stores s JOIN users u ON u.id = s.user_id"
_RECORD_COLS = "key, content_type, content_encoding, size, decoded_size, crc32, modified_at, blob_id, chunk_size"


def _store(row: asyncpg.Record) -> Store:
    return Store(
        id=row["id"],
        name=row["name"],
        user_id=row["user_id"],
        username=row["username"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        accessed_at=row["accessed_at"],
        general_access=row["general_access"],
        schema=row["schema"],
        url_signing_secret_key=row["url_signing_secret_key"],
        stats=StoreStats(
            read_count=row["read_count"],
            write_count=row["write_count"],
            delete_count=row["delete_count"],
            list_count=row["list_count"],
            storage_bytes=row["storage_bytes"],
        ),
        generation=row["generation"],
    )


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], username=row["username"], created_at=row["created_at"])


def _record(row: asyncpg.Record, data: bytes | None = None, prefix: str = "") -> RecordMeta:
    p = prefix
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


def _blob_range(record: RecordMeta, start: int, end: int | None) -> tuple[PgBlob, int, int]:
    blob = record.blob
    if not isinstance(blob, PgBlob):
        raise TypeError("not a PostgresStorage record")
    size = blob.size
    end = size if end is None else min(end, size)
    start = max(0, start)
    return blob, start, end


async def _iter_chunks(
    fetch: Callable[[str, Sequence[Any]], Awaitable[list[asyncpg.Record]]],
    blob: PgBlob,
    start: int,
    end: int,
    per_query_bytes: int = READ_PIECE,
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a blob, yielded in pieces of <= READ_PIECE. Inline bytes (``blob.data``) are served
    without a query; otherwise chunks are fetched about ``per_query_bytes`` per query, the next query running
    while the caller consumes the current pieces (at most two queries' rows are held)."""
    if start >= end:
        return
    if blob.data is not None:
        for i in range(start, end, READ_PIECE):
            yield blob.data[i : min(i + READ_PIECE, end)]
        return
    cs = blob.chunk_size
    per_query = max(1, per_query_bytes // cs)
    first, last = start // cs, (end - 1) // cs

    def query(seq: int) -> asyncio.Task[list[asyncpg.Record]]:
        upto = min(last, seq + per_query - 1)
        return asyncio.ensure_future(
            fetch(
                "SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
                (blob.blob_id, seq, upto),
            )
        )

    seq = first
    pending: asyncio.Task[list[asyncpg.Record]] | None = query(seq)
    try:
        while pending is not None:
            rows = await pending
            upto = min(last, seq + per_query - 1)
            if len(rows) != upto - seq + 1:
                pending = None
                raise NotFound(f"blob {blob.blob_id} is gone (chunks {seq}..{upto} missing)")
            seq = upto + 1
            pending = query(seq) if seq <= last else None  # prefetch while the caller takes these pieces
            for row in rows:
                data: bytes = row["data"]
                base = row["seq"] * cs
                lo = max(start - base, 0)
                hi = min(end - base, len(data))
                piece = data if (lo == 0 and hi == len(data)) else data[lo:hi]
                for i in range(0, len(piece), READ_PIECE):
                    yield piece[i : i + READ_PIECE]
            del rows
    finally:
        await _settle(pending)


async def _settle(pending: asyncio.Future[Any] | None) -> None:
    """Let an unwanted prefetch finish and drop its result. Never cancel it: cancelling a query on a snapshot's
    connection would abort the snapshot's transaction."""
    if pending is None:
        return
    if not pending.done():
        await asyncio.wait({pending})
    if not pending.cancelled():
        pending.exception()  # retrieved: no "never retrieved" warning


def _discard(conn: asyncpg.Connection) -> None:
    """Close a connection at once unless asyncpg already did (a closed one detaches itself from its pool)."""
    try:
        if not conn.is_closed():
            conn.terminate()
    except pgx.InterfaceError:
        pass


@asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection that is thrown away (not reused) if it failed with a connection-class error: after a
    backend was killed mid-operation asyncpg may keep it open in a broken protocol state."""
    conn = await pool.acquire()
    try:
        yield conn
    except _CONNECTION_ERRORS:
        _discard(conn)
        raise
    finally:
        with anyio.move_on_after(10, shield=True):
            try:
                await pool.release(conn)
            except Exception:  # noqa: BLE001 - broken: make sure it is gone
                _discard(conn)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a pool runs on every release. asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` each time: a round trip per query here, i.e. as many as the queries themselves. This
    backend takes no session advisory locks, opens no cursor outside a transaction, never LISTENs and never SETs
    a session setting, so the only state that can be left is an open transaction."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# asyncpg < 0.30 has no ``reset`` argument (it then runs its default)
_POOL_RESET: dict[str, Any] = (
    {"reset": _reset_connection} if "reset" in inspect.signature(asyncpg.create_pool).parameters else {}
)


# Writing a record is one statement. It locks the store row first (``lk``: ``up`` reads from it, so that runs
# before the record row is touched; no row when the store is gone) and the store row is what every writer of a
# store waits for, so the statement holds it only for its own execution and commit: for a small record the
# statement is its own transaction, so no client round trip happens while the lock is held (it used to be held
# over three). ON CONFLICT DO UPDATE locks the record row and reads its latest committed version, so
# prev_blob_id/prev_size name exactly the blob this write replaced, even when a writer of the same key committed
# after this statement's snapshot was taken (NULL: the key was new).
_UPSERT_TAIL = f"""
    lk AS (SELECT id FROM stores WHERE id = $1 FOR NO KEY UPDATE),
    up AS (
        INSERT INTO records (store_id, key, content_type, content_encoding, size, decoded_size, crc32,
            modified_at, blob_id, chunk_size, prev_blob_id, prev_size)
        SELECT $1, $2, $3, $4, $5, $6, $7, t.now, b.id, $8, NULL, NULL FROM lk, t, b
        ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
            content_encoding = EXCLUDED.content_encoding, size = EXCLUDED.size,
            decoded_size = EXCLUDED.decoded_size, crc32 = EXCLUDED.crc32,
            modified_at = EXCLUDED.modified_at, blob_id = EXCLUDED.blob_id, chunk_size = EXCLUDED.chunk_size,
            prev_blob_id = records.blob_id, prev_size = records.size
        RETURNING {_RECORD_COLS}, prev_blob_id, prev_size
    ),
    g AS (INSERT INTO garbage (blob_id, created_at) SELECT up.prev_blob_id, t.now FROM up, t
          WHERE up.prev_blob_id IS NOT NULL),
    st AS (
        UPDATE stores SET generation = generation + 1, modified_at = greatest(stores.modified_at, t.now),
            storage_bytes = storage_bytes + up.size - coalesce(up.prev_size, 0)
        FROM up, t WHERE id = $1
    )"""
# A record of at most one chunk: the chunk ($9, NULL when empty) goes in with the same statement.
_UPSERT_SMALL = f"""WITH t AS (SELECT {_NOW_MS} AS now),
    b AS MATERIALIZED (SELECT nextval('blob_ids') AS id),
    {_UPSERT_TAIL},
    c AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT b.id, 0, $9::bytea FROM b, lk WHERE $9::bytea IS NOT NULL)
    SELECT * FROM up"""
# A bigger record whose chunks the transaction already wrote under blob id $9.
_UPSERT_BIG = f"""WITH t AS (SELECT {_NOW_MS} AS now), b AS (SELECT $9::bigint AS id),
    {_UPSERT_TAIL}
    SELECT * FROM up"""
# Writers and delete_store lock the store row before record rows, so they should not deadlock; should PostgreSQL
# still abort one as a deadlock victim, it is retried up to this many times.
_DEADLOCK_RETRIES = 5


class PgSnapshot(Snapshot):
    """One REPEATABLE READ READ ONLY transaction on a dedicated connection (see ``PostgresStorage.snapshot``)."""

    def __init__(self, conn: asyncpg.Connection, store_id: str, selection: KeySelection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._closed = False  # set (under the lock) when the transaction ends: a late prefetch must not run
        self._store_id = store_id
        self._selection = selection
        self.generation = 0
        self.totals = SnapshotTotals(0, 0, 0, 0)

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("snapshot closed")
            try:
                return await self._conn.fetch(sql, *args)
            except _CONNECTION_ERRORS as exc:
                raise _unavailable(exc) from exc

    async def _close(self) -> None:
        """Wait for a query in flight (a prefetch nobody awaits any more) and refuse later ones."""
        async with self._lock:
            self._closed = True

    async def _load(self) -> None:
        rows = await self._fetch("SELECT generation FROM stores WHERE id = $1", (self._store_id,))
        if not rows:
            raise NotFound(f"store {self._store_id} not found")
        self.generation = rows[0]["generation"]
        args: list[Any] = [self._store_id]
        cond = _selection_sql(self._selection, args)
        if cond is None:
            return
        rows = await self._fetch(
            f"""SELECT count(*) AS n, coalesce(sum(octet_length(key)), 0) AS kb,
                    coalesce(sum(decoded_size), 0) AS db, count(*) FILTER (WHERE decoded_size >= {BIG}) AS big
                FROM records WHERE store_id = $1 AND {cond}""",
            args,
        )
        r = rows[0]
        self.totals = SnapshotTotals(count=r["n"], key_bytes=int(r["kb"]), decoded_bytes=int(r["db"]), big_count=r["big"])

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        if record.content_encoding is None and isinstance(blob, PgBlob) and blob.data is not None:
            return blob.data
        return None

    async def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        # Records of one chunk come with their bytes (read in the same query), so read_blob needs no query for
        # them: one round trip per batch instead of one per record. A batch stops after the record that brings
        # its inline bytes to PREFETCH_BYTES; bigger records are streamed by read_blob chunk by chunk. The next
        # batch is fetched while the caller works through this one (at most two batches are held).
        base: list[Any] = [self._store_id]
        cond = _selection_sql(self._selection, base)
        if cond is None:
            return

        def query(last: str | None) -> asyncio.Task[list[asyncpg.Record]]:
            args = list(base)
            where = f"store_id = $1 AND {cond}"
            if last is not None:
                args.append(last)
                where += f" AND key > ${len(args)}"
            args.append(batch)
            n_batch = len(args)
            args.append(PREFETCH_BYTES)
            # the window runs over the LIMITed rows only; the chunk is a per-row subquery (an index lookup each)
            sql = f"""WITH lim AS (
                    SELECT {_RECORD_COLS}, (size > 0 AND size <= chunk_size) AS one
                    FROM records WHERE {where} ORDER BY key LIMIT ${n_batch}
                ), m AS (
                    SELECT lim.*, count(*) OVER () AS n, coalesce(sum(CASE WHEN one THEN size ELSE 0 END)
                        OVER (ORDER BY key ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                    FROM lim
                )
                SELECT m.*, CASE WHEN m.one THEN
                    (SELECT c.data FROM blob_chunks c WHERE c.blob_id = m.blob_id AND c.seq = 0) END AS data
                FROM m WHERE m.before < ${len(args)} ORDER BY m.key"""
            return asyncio.ensure_future(self._fetch(sql, args))

        pending: asyncio.Task[list[asyncpg.Record]] | None = query(after)
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if not (len(rows) == rows[0]["n"] < batch):  # more may follow
                    pending = query(rows[-1]["key"])
                metas = []
                for r in rows:
                    data = r["data"]
                    if r["one"] and data is None:
                        raise NotFound(f"blob {r['blob_id']} is gone")
                    metas.append(_record(r, data if data is not None else (b"" if r["size"] == 0 else None)))
                del rows
                yield metas
        finally:
            await _settle(pending)

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob, start, end = _blob_range(record, start, end)
        async for piece in _iter_chunks(self._fetch, blob, start, end, SNAPSHOT_QUERY_BYTES):
            yield piece


class PostgresStorage(Storage):
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "openkvs",
        min_pool: int = 1,
        max_pool: int = 10,
        gc_grace_seconds: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"invalid schema name {schema!r} (lower-case letters, digits, underscores)")
        self.dsn = dsn
        self.schema = schema
        self.min_pool = min_pool
        self.max_pool = max_pool
        self.gc_grace_seconds = gc_grace_seconds
        self.connect_timeout = connect_timeout
        self.application_name = f"openkvs:{schema}"
        self._pool: asyncpg.Pool | None = None
        self._stream_pool: asyncpg.Pool | None = None  # uploads and snapshots (long transactions)
        self._stats = StatsBuffer()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.connect_timeout,
            "server_settings": {"search_path": f'"{self.schema}"', "application_name": self.application_name},
            "init": _init_connection,
            **_POOL_RESET,
        }

    async def _connect_one(self) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, server_settings={"search_path": f'"{self.schema}"'}
            )
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc
        return conn

    async def migrate(self) -> int:
        """Create the schema or bring it to ``SCHEMA_VERSION``; returns the version. Safe to run from several
        processes at once (an advisory lock serializes them). Raises StorageError if the database holds a newer
        version than this code knows."""
        conn = await self._connect_one()
        try:
            return await self._migrate(conn)
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc
        finally:
            await conn.close()

    async def _migrate(self, conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"openkvs-migrate:{self.schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_version")
            version = version or 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema {self.schema!r} is at version {version}, newer than this openkvs knows "
                    f"({SCHEMA_VERSION}); upgrade openkvs"
                )
            for v in range(version, SCHEMA_VERSION):
                await conn.execute(MIGRATIONS[v])
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", v + 1)
                log.info("migrated schema %s to version %d", self.schema, v + 1)
            return SCHEMA_VERSION

    async def open(self) -> None:
        await self.migrate()
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_pool, max_size=self.max_pool, **self._connect_kwargs()
            )
            self._stream_pool = await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self.max_pool, **self._connect_kwargs()
            )
        except _CONNECTION_ERRORS as exc:
            await self._close_pools()
            raise _unavailable(exc) from exc
        self._tasks = [
            asyncio.create_task(self._every(STATS_FLUSH_SECONDS, self.flush_stats), name="openkvs-pg-stats"),
            asyncio.create_task(self._every(GC_INTERVAL_SECONDS, self.collect_garbage), name="openkvs-pg-gc"),
        ]

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep going: the database may be back next time
                log.warning("background %s failed", getattr(fn, "__name__", fn), exc_info=True)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001 - cancelled or failed, either way it is stopped
                pass
        if self._pool is not None:
            try:
                await self.flush_stats()
            except StorageError:
                log.warning("could not flush access counters at close", exc_info=True)
        await self._close_pools()

    async def _close_pools(self) -> None:
        pools = [p for p in (self._pool, self._stream_pool) if p is not None]
        self._pool = self._stream_pool = None
        for p in pools:
            try:
                await asyncio.wait_for(p.close(), 10)
            except Exception:  # noqa: BLE001
                p.terminate()

    async def drop_schema(self) -> None:
        """Drop the whole schema with every table (for tests). Works whether the storage is open or closed."""
        conn = await self._connect_one()
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()

    # -- helpers -----------------------------------------------------------------------------------------------

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        return self._pool

    async def _run(
        self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, tx: bool = False, retry: bool = False
    ) -> T:
        """Run ``fn`` on a pooled connection (in a transaction if ``tx``), translating connection failures.
        ``retry``: ``fn`` only reads, so one more attempt after a connection failure is safe; it gets past a pooled
        connection that died (server restart, pg_terminate_backend) before the event loop noticed."""
        delays = (0.0, 0.05, 0.25) if retry else ()  # the other connections of a restarted server die too
        for attempt in range(len(delays) + 1):
            try:
                async with _connection(self._p()) as conn:
                    if tx:
                        async with conn.transaction():
                            return await fn(conn)
                    return await fn(conn)
            except _CONNECTION_ERRORS as exc:
                if attempt < len(delays) and self._pool is not None:
                    log.info("retrying a read after a connection failure: %r", exc)
                    await asyncio.sleep(delays[attempt])
                    continue
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A read-only query (retried once after a connection failure)."""
        return await self._run(lambda c: c.fetch(sql, *args), retry=True)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """A read-only query (retried once after a connection failure)."""
        return await self._run(lambda c: c.fetchrow(sql, *args), retry=True)

    async def _execute(self, sql: str, *args: Any) -> str:
        return await self._run(lambda c: c.execute(sql, *args))

    # -- users and tokens --------------------------------------------------------------------------------------

    async def create_user(self, username: str) -> User:
        try:
            user_id = new_id()
            row = await self._run(
                lambda c: c.fetchrow(
                    f"INSERT INTO users (id, username, created_at) VALUES ($1, $2, {_NOW_MS}) RETURNING *",
                    user_id,
                    username,
                )
            )
        except pgx.UniqueViolationError as exc:
            raise UsernameTaken(username) from exc
        assert row is not None
        return _user(row)

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self._fetchrow("SELECT * FROM users WHERE username = $1", username)
        return _user(row) if row else None

    async def add_token(self, user_id: str, token_hash: str) -> None:
        try:
            await self._execute(
                f"""INSERT INTO tokens (token_hash, user_id, created_at) VALUES ($1, $2, {_NOW_MS})
                    ON CONFLICT (token_hash) DO UPDATE SET user_id = EXCLUDED.user_id""",
                token_hash,
                user_id,
            )
        except pgx.ForeignKeyViolationError as exc:
            raise NotFound(f"user {user_id} not found") from exc

    async def user_by_token(self, token_hash: str) -> User | None:
        row = await self._fetchrow(
            "SELECT u.* FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1", token_hash
        )
        return _user(row) if row else None

    async def revoke_token(self, token_hash: str) -> bool:
        res = await self._execute("DELETE FROM tokens WHERE token_hash = $1", token_hash)
        return res.endswith(" 1")

    # -- stores ------------------------------------------------------------------------------------------------

    async def _store_by_id(self, conn: asyncpg.Connection, store_id: str) -> Store | None:
        row = await conn.fetchrow(f"SELECT {_STORE_COLS} FROM {_STORE_FROM} WHERE s.id = $1", store_id)
        return _store(row) if row else None

    _INSERT_STORE = f"""INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, schema,
            url_signing_secret_key)
        SELECT $1, $2, u.id, t.now, t.now, t.now, $4, $5 FROM users u, (SELECT {_NOW_MS} AS now) t WHERE u.id = $3"""

    async def create_store(
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str
    ) -> Store:
        store_id = new_id()

        async def go(conn: asyncpg.Connection) -> Store:
            res = await conn.execute(self._INSERT_STORE, store_id, name, user_id, schema, signing_key)
            if res.endswith(" 0"):
                raise NotFound(f"user {user_id} not found")
            store = await self._store_by_id(conn, store_id)
            assert store is not None
            return store

        try:
            return await self._run(go)
        except pgx.UniqueViolationError as exc:
            raise NameNotUnique(name) from exc

    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str
    ) -> tuple[Store, bool]:
        async def go(conn: asyncpg.Connection) -> tuple[Store, bool]:
            for _ in range(10):
                store_id = new_id()
                res = await conn.execute(
                    self._INSERT_STORE + " ON CONFLICT (user_id, lower(name)) DO NOTHING",
                    store_id,
                    name,
                    user_id,
                    schema,
                    signing_key,
                )
                if res.endswith(" 1"):
                    store = await self._store_by_id(conn, store_id)
                    assert store is not None
                    return store, True
                row = await conn.fetchrow(
                    f"SELECT {_STORE_COLS} FROM {_STORE_FROM} WHERE s.user_id = $1 AND lower(s.name) = lower($2)",
                    user_id,
                    name,
                )
                if row is not None:
                    return _store(row), False
                if not await conn.fetchval("SELECT true FROM users WHERE id = $1", user_id):
                    raise NotFound(f"user {user_id} not found")
                # the conflicting store was deleted in between: try again
            raise StorageError("get_or_create_store: too much contention")

        return await self._run(go)

    async def get_store(self, store_id: str) -> Store | None:
        return await self._run(lambda c: self._store_by_id(c, store_id), retry=True)

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        row = await self._fetchrow(
            f"SELECT {_STORE_COLS} FROM {_STORE_FROM} WHERE s.user_id = $1 AND lower(s.name) = lower($2)",
            user_id,
            name,
        )
        return _store(row) if row else None

    async def list_stores(
        self, user_id: str, *, offset: int, limit: int, desc: bool, unnamed: bool, ownership: str | None
    ) -> tuple[int, list[Store]]:
        owned = "s.user_id = $1"
        shared = "s.id IN (SELECT g.store_id FROM grants g WHERE g.user_id = $1)"
        if ownership == "ownedByMe":
            cond = owned
        elif ownership == "sharedWithMe":
            cond = shared
        else:
            cond = f"({owned} OR {shared})"
        if not unnamed:
            cond += " AND s.name IS NOT NULL"
        order = "DESC" if desc else "ASC"

        async def go(conn: asyncpg.Connection) -> tuple[int, list[Store]]:
            total = await conn.fetchval(f"SELECT count(*) FROM stores s WHERE {cond}", user_id)
            rows = await conn.fetch(
                f"""SELECT {_STORE_COLS} FROM {_STORE_FROM} WHERE {cond}
                    ORDER BY s.created_at {order}, s.id {order} OFFSET $2 LIMIT $3""",
                user_id,
                max(0, offset),
                max(0, limit),
            )
            return total, [_store(r) for r in rows]

        # one snapshot for the count and the page
        try:
            async with _connection(self._p()) as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await go(conn)
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        columns = {
            "name": "name",
            "general_access": "general_access",
            "schema": "schema",
            "url_signing_secret_key": "url_signing_secret_key",
        }
        sets: list[str] = []
        args: list[Any] = [store_id]
        for k, v in changes.items():
            if k not in columns:
                raise ValueError(f"cannot change {k!r}")
            args.append(v)
            sets.append(f"{columns[k]} = ${len(args)}")
        sets.append(f"modified_at = {_NOW_MS}")

        async def go(conn: asyncpg.Connection) -> Store:
            res = await conn.execute(f"UPDATE stores SET {', '.join(sets)} WHERE id = $1", *args)
            if res.endswith(" 0"):
                raise NotFound(f"store {store_id} not found")
            store = await self._store_by_id(conn, store_id)
            assert store is not None
            return store

        try:
            return await self._run(go, tx=True)
        except pgx.UniqueViolationError as exc:
            raise NameNotUnique(changes.get("name")) from exc

    async def delete_store(self, store_id: str) -> bool:
        async def go(conn: asyncpg.Connection) -> bool:
            if await conn.fetchval("SELECT true FROM stores WHERE id = $1 FOR UPDATE", store_id) is None:
                return False
            await conn.execute(
                f"INSERT INTO garbage (blob_id, created_at) SELECT blob_id, {_NOW_MS} FROM records WHERE store_id = $1",
                store_id,
            )
            await conn.execute("DELETE FROM stores WHERE id = $1", store_id)
            return True

        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return await self._run(go, tx=True)
            except pgx.DeadlockDetectedError:  # see _DEADLOCK_RETRIES
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise StorageUnavailable("store deletion deadlocked repeatedly") from None
        raise AssertionError("unreachable")

    # -- grants ------------------------------------------------------------------------------------------------

    async def set_grant(self, store_id: str, user_id: str, can_write: bool) -> None:
        try:
            await self._execute(
                """INSERT INTO grants (store_id, user_id, can_write) VALUES ($1, $2, $3)
                   ON CONFLICT (store_id, user_id) DO UPDATE SET can_write = EXCLUDED.can_write""",
                store_id,
                user_id,
                can_write,
            )
        except pgx.ForeignKeyViolationError as exc:
            raise NotFound(f"store {store_id} or user {user_id} not found") from exc

    async def remove_grant(self, store_id: str, user_id: str) -> bool:
        res = await self._execute("DELETE FROM grants WHERE store_id = $1 AND user_id = $2", store_id, user_id)
        return res.endswith(" 1")

    async def list_grants(self, store_id: str) -> list[Grant]:
        rows = await self._fetch(
            """SELECT g.store_id, g.user_id, u.username, g.can_write FROM grants g JOIN users u ON u.id = g.user_id
               WHERE g.store_id = $1 ORDER BY u.username, g.user_id""",
            store_id,
        )
        return [Grant(r["store_id"], r["user_id"], r["username"], r["can_write"]) for r in rows]

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        r = await self._fetchrow(
            """SELECT g.store_id, g.user_id, u.username, g.can_write FROM grants g JOIN users u ON u.id = g.user_id
               WHERE g.store_id = $1 AND g.user_id = $2""",
            store_id,
            user_id,
        )
        return Grant(r["store_id"], r["user_id"], r["username"], r["can_write"]) if r else None

    # -- records -----------------------------------------------------------------------------------------------

    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta:
        it = body.__aiter__()
        buf = bytearray()
        ended = await _fill(it, buf, CHUNK_SIZE + 1)  # body errors propagate: nothing written yet
        if ended:
            # small record: one statement (its own transaction) on the main pool, retried after a deadlock
            data = bytes(buf) if buf else None
            args = (store_id, key, content_type, content_encoding, len(buf), body.decoded_size,
                    body.crc32 & 0xFFFFFFFF, CHUNK_SIZE, data)
            for attempt in range(_DEADLOCK_RETRIES):
                try:
                    row = await self._run(lambda c: c.fetchrow(_UPSERT_SMALL, *args))
                    break
                except pgx.DeadlockDetectedError:
                    if attempt == _DEADLOCK_RETRIES - 1:
                        raise StorageUnavailable("record write deadlocked repeatedly") from None
                except pgx.ForeignKeyViolationError:
                    raise NotFound(f"store {store_id} not found") from None
            if row is None:
                raise NotFound(f"store {store_id} not found")
            return _record(row)

        if self._stream_pool is None:
            raise StorageUnavailable("storage is not open")
        try:
            async with _connection(self._stream_pool) as conn:
                async with conn.transaction():
                    if await conn.fetchval("SELECT true FROM stores WHERE id = $1", store_id) is None:
                        raise NotFound(f"store {store_id} not found")
                    blob_id = await conn.fetchval("SELECT nextval('blob_ids')")
                    seq = 0
                    size = 0
                    while True:
                        while len(buf) >= CHUNK_SIZE:
                            chunk = bytes(buf[:CHUNK_SIZE])
                            del buf[:CHUNK_SIZE]
                            await conn.execute(
                                "INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)", blob_id, seq, chunk
                            )
                            seq += 1
                            size += len(chunk)
                        if ended:
                            break
                        ended = await _fill(it, buf, CHUNK_SIZE)  # a body error rolls the transaction back
                    if buf:
                        await conn.execute(
                            "INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)", blob_id, seq, buf
                        )
                        size += len(buf)
                    # the store row is locked by this last statement: held only until the COMMIT that follows
                    try:
                        row = await conn.fetchrow(
                            _UPSERT_BIG, store_id, key, content_type, content_encoding, size, body.decoded_size,
                            body.crc32 & 0xFFFFFFFF, CHUNK_SIZE, blob_id,
                        )
                    except pgx.ForeignKeyViolationError:
                        raise NotFound(f"store {store_id} not found") from None
                    except pgx.DeadlockDetectedError:
                        raise StorageUnavailable("record write deadlocked") from None
                    if row is None:
                        raise NotFound(f"store {store_id} not found")
                    return _record(row)
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        # A small record comes with its bytes (same query, same snapshot): read_blob then runs no query.
        row = await self._fetchrow(
            f"""SELECT {_RECORD_COLS}, CASE WHEN size > 0 AND size <= least(chunk_size, {GET_INLINE_MAX}) THEN
                    (SELECT c.data FROM blob_chunks c WHERE c.blob_id = r.blob_id AND c.seq = 0) END AS data
                FROM records r WHERE store_id = $1 AND key = $2""",
            store_id,
            key,
        )
        if row is None:
            return None
        data = row["data"]
        return _record(row, data if data is not None else (b"" if row["size"] == 0 else None))

    # The small record's bytes come along (see get_record); record columns are prefixed "r_" (stores have some
    # of the same names).
    _STORE_AND_RECORD = f"""SELECT {_STORE_COLS},
            {", ".join(f"r.{c.strip()} AS r_{c.strip()}" for c in _RECORD_COLS.split(","))},
            CASE WHEN r.size > 0 AND r.size <= least(r.chunk_size, {GET_INLINE_MAX}) THEN
                (SELECT c.data FROM blob_chunks c WHERE c.blob_id = r.blob_id AND c.seq = 0) END AS r_data
        FROM {_STORE_FROM} LEFT JOIN records r ON r.store_id = s.id AND r.key = $2
        WHERE s.id = $1"""

    async def get_store_and_record(self, store_id: str, key: str) -> tuple[Store | None, RecordMeta | None]:
        row = await self._fetchrow(self._STORE_AND_RECORD, store_id, key)
        if row is None:
            return None, None
        if row["r_key"] is None:
            return _store(row), None
        data = row["r_data"]
        return _store(row), _record(row, data if data is not None else (b"" if row["r_size"] == 0 else None), "r_")

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        return blob.data if isinstance(blob, PgBlob) and blob.data is not None and len(blob.data) == blob.size else None

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob, start, end = _blob_range(record, start, end)

        async def fetch(sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
            # a connection per query: a slow reader never holds one between pieces
            return await self._fetch(sql, *args)

        async for piece in _iter_chunks(fetch, blob, start, end):
            yield piece

    async def delete_record(self, store_id: str, key: str) -> bool:
        # One statement, its own transaction (see _UPSERT_TAIL): the store row first, then DELETE ... RETURNING
        # gives the version it deleted (the latest, after waiting for a concurrent writer).
        sql = f"""WITH lk AS (SELECT id FROM stores WHERE id = $1 FOR NO KEY UPDATE),
                d AS (DELETE FROM records r USING lk WHERE r.store_id = $1 AND r.key = $2 RETURNING r.blob_id, r.size),
                t AS (SELECT {_NOW_MS} AS now),
                g AS (INSERT INTO garbage (blob_id, created_at) SELECT d.blob_id, t.now FROM d, t),
                st AS (
                    UPDATE stores SET generation = generation + 1, modified_at = greatest(stores.modified_at, t.now),
                        storage_bytes = storage_bytes - d.size
                    FROM d, t WHERE id = $1
                )
                SELECT count(*) FROM d"""
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                n = await self._run(lambda c: c.fetchval(sql, store_id, key))
                return n > 0
            except pgx.DeadlockDetectedError:
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise StorageUnavailable("record delete deadlocked repeatedly") from None
        raise AssertionError("unreachable")

    async def list_keys(
        self, store_id: str, selection: KeySelection, exclusive_start_key: str | None, limit: int
    ) -> KeyPage:
        args: list[Any] = [store_id]
        cond = _selection_sql(selection, args)
        if cond is None or limit <= 0:
            return KeyPage([], False)
        sql = f"SELECT key, size FROM records WHERE store_id = $1 AND {cond}"
        if exclusive_start_key is not None:
            args.append(exclusive_start_key)
            sql += f" AND key > ${len(args)}"
        args.append(limit + 1)
        sql += f" ORDER BY key LIMIT ${len(args)}"
        rows = await self._fetch(sql, *args)
        items = [KeyItem(r["key"], r["size"]) for r in rows[:limit]]
        return KeyPage(items, len(rows) > limit)

    @asynccontextmanager
    async def snapshot(self, store_id: str, selection: KeySelection) -> AsyncIterator[PgSnapshot]:
        if self._stream_pool is None:
            raise StorageUnavailable("storage is not open")
        pool = self._stream_pool
        try:
            conn = await pool.acquire()
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc
        try:
            try:
                tr = conn.transaction(isolation="repeatable_read", readonly=True)
                await tr.start()
            except _CONNECTION_ERRORS as exc:
                raise _unavailable(exc) from exc
            snap = PgSnapshot(conn, store_id, selection)
            try:
                await snap._load()
                yield snap
            except (StorageUnavailable, *_CONNECTION_ERRORS):
                _discard(conn)
                raise
            finally:
                with anyio.move_on_after(5, shield=True):
                    try:
                        await snap._close()
                        await tr.rollback()
                    except Exception:  # noqa: BLE001 - a broken connection: the pool replaces it
                        pass
        finally:
            with anyio.move_on_after(10, shield=True):
                try:
                    await pool.release(conn)
                except Exception:  # noqa: BLE001
                    _discard(conn)

    # -- garbage -----------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: datetime | None = None, grace: float | None = None) -> int:
        """Delete the chunks of blobs that became garbage more than ``grace`` (default ``gc_grace_seconds``)
        seconds before ``now`` (default: the database clock). Returns how many blobs were freed. Several
        processes may run it at once (SKIP LOCKED)."""
        grace = self.gc_grace_seconds if grace is None else grace
        freed = 0
        while True:

            async def go(conn: asyncpg.Connection) -> int:
                if now is None:
                    ids = await conn.fetch(
                        """SELECT blob_id FROM garbage WHERE created_at < clock_timestamp() - make_interval(secs => $1)
                           ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED""",
                        float(grace),
                    )
                else:
                    ids = await conn.fetch(
                        """SELECT blob_id FROM garbage WHERE created_at < $1
                           ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED""",
                        now - timedelta(seconds=grace),
                    )
                blob_ids = [r["blob_id"] for r in ids]
                if blob_ids:
                    await conn.execute("DELETE FROM blob_chunks WHERE blob_id = ANY($1::bigint[])", blob_ids)
                    await conn.execute("DELETE FROM garbage WHERE blob_id = ANY($1::bigint[])", blob_ids)
                return len(blob_ids)

            n = await self._run(go, tx=True)
            freed += n
            if n < 100:
                return freed

    # -- stats -------------------------------------------------------------------------------------------------

    def count_access(self, store_id: str, *, reads: int = 0, writes: int = 0, deletes: int = 0, lists: int = 0) -> None:
        self._stats.add(store_id, int(time.time() * 1000), reads=reads, writes=writes, deletes=deletes, lists=lists)

    async def flush_stats(self) -> None:
        """Write the buffered access counters (the background task does this every 2 s, and ``aclose``)."""
        pending = self._stats.drain()
        if not pending:
            return
        rows = [
            (
                sid,
                d.reads,
                d.writes,
                d.deletes,
                d.lists,
                datetime.fromtimestamp(d.accessed_at_ms / 1000, tz=timezone.utc),
            )
            for sid, d in sorted(pending.items())  # a fixed lock order: no deadlock between two flushing nodes
        ]

        async def go(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                """UPDATE stores SET read_count = read_count + $2, write_count = write_count + $3,
                       delete_count = delete_count + $4, list_count = list_count + $5,
                       accessed_at = greatest(accessed_at, $6) WHERE id = $1""",
                rows,
            )

        try:
            await self._run(go, tx=True)
        except BaseException:
            self._stats.restore(pending)
            raise


async def _fill(it: AsyncIterator[bytes], buf: bytearray, n: int) -> bool:
    """Read from ``it`` into ``buf`` until it holds at least ``n`` bytes; True if the iterator ended."""
    while len(buf) < n:
        try:
            piece = await it.__anext__()
        except StopAsyncIteration:
            return True
        buf += piece
    return False
