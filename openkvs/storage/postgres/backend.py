"""``PostgresStorage``, the backend class: the SQL of records, garbage collection and access counters; opening and
closing, and the background tasks. The SQL of users, tokens, stores and grants is ``catalog.py``'s, connections
and pools ``connections.py``'s, the migrations and shared SQL ``tables.py``'s, the snapshot's transaction
``snapshot.py``'s. The package docstring shows how to use it and describes the design."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg import exceptions as pgx

from openkvs import metrics

from ..base import (
    KVS,
    KeyItem,
    KeyPage,
    KeySelection,
    NotFound,
    RecordBody,
    RecordMeta,
    Storage,
    StorageError,
    StorageUnavailable,
    StoreLookup,
    StoreMemo,
    no_blob_store,
)
from ..bucket import BlobStore
from ..bucket.uploads import Uploads
from ..stats import StatDelta, StatsBuffer
from . import zipheads
from .catalog import PgCatalog
from .chunks import CHUNK_SIZE, PgBlob, blob_range, fill, iter_chunks, write_chunks
from .connections import CONNECTION_ERRORS, Database, deadlock_retried, pooled, unavailable
from .datasets import PgDatasets
from .groups import Groups, SharedReads
from .lookups import Batched, StoreVersions, lookup_answer
from .objects import LEASE_RENEW_SECONDS, Leases, PgIntents, collect, put_in_bucket
from .queues import PgQueues
from .snapshot import PgSnapshot, open_snapshot
from .tables import (
    DELETE_ADDS,
    GET_INLINE_MAX,
    IN_BUCKET,
    IN_BUCKET_SQL,
    LOOKUP,
    LOOKUP_MANY,
    NOW_MS,
    RECORD_COLS,
    STORE_COLS,
    TABLES_VERSION,
    UPSERT_BIG,
    held_data,
    migrate,
    selection_sql,
    text_array,
    to_record,
    to_store,
)

if TYPE_CHECKING:
    from ..bucket.admin import FsckReport, MigrateProgress

log = logging.getLogger(__package__)  # "openkvs.storage.postgres", the name log records had before the split

STATS_FLUSH_SECONDS = 2.0
GC_INTERVAL_SECONDS = 10.0


class PostgresStorage(PgCatalog, PgQueues, Storage):
    def __init__(
        self,
        dsn: str,
        *,
        namespace: str = "openkvs",
        min_pool: int = 1,
        max_pool: int = 10,
        max_snapshots: int = 10,
        gc_grace_seconds: float = 60.0,
        connect_timeout: float = 10.0,
        blob_store: BlobStore | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", namespace):
            raise ValueError(f"invalid schema name {namespace!r} (lower-case letters, digits, underscores)")
        self.dsn = dsn
        self.namespace = namespace  # the PostgreSQL schema that holds every table (--database-schema)
        self.gc_grace_seconds = gc_grace_seconds
        self._db = Database(
            dsn,
            namespace,
            min_pool=min_pool,
            max_pool=max_pool,
            max_snapshots=max_snapshots,
            connect_timeout=connect_timeout,
        )
        # The SQL below runs through these (see connections.py): a function on a connection of the main pool,
        # read-only queries (retried after a connection failure), a statement; the main pool itself.
        self._run = self._db.run
        self._fetch = self._db.fetch
        self._fetchrow = self._db.fetchrow
        self._execute = self._db.execute
        self._p = self._db.main
        self.application_name = self._db.application_name  # what pg_stat_activity shows for its connections
        self._stats = StatsBuffer()
        self.datasets = PgDatasets(self._db, namespace)  # dataset items (storage/datasets.py)
        self._tasks: list[asyncio.Task[None]] = []
        self._fill_task: asyncio.Task[None] | None = None  # older records' kept ZIP headers (zipheads.py)
        self._stop_fill = asyncio.Event()
        # --blob-store: records above inline_max are objects in the bucket (objects.py); smaller ones stay here
        self.blob_store = blob_store
        self._store_memo = StoreMemo()  # (see StoreMemo: the look-ups by name reuse unchanged stores)
        self._versions = StoreVersions()  # the look-ups by ID: the Stores they hold, and their rows' versions
        self.inline_max = blob_store.inline_max if blob_store is not None else GET_INLINE_MAX
        self._leases = Leases(self._db)
        # the writes of objects running here, whose intents the lease task renews too (bucket/uploads.py)
        self.uploads = Uploads(PgIntents(self._db), blob_store) if blob_store is not None else None
        self._groups = Groups(self._db)  # small record writes, committed in groups per store (groups.py)
        self._shared = SharedReads()  # store look-ups by name in a burst (groups.py)
        # store look-ups by ID in a burst, asked together (lookups.py): (with a record, kind, levels) -> them
        self._lookups: dict[tuple[bool, str, tuple[str, ...]], Batched[tuple[Any, ...], StoreLookup | None]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def tables_version(self) -> tuple[int, int]:
        version = await self._run(lambda c: c.fetchval("SELECT max(version) FROM schema_version"), retry=True)
        return int(version or 0), TABLES_VERSION

    async def migrate(self) -> int:
        """Create the namespace and its tables or bring them to ``TABLES_VERSION``, then give older records their
        kept ZIP headers (what ``openkvs migrate`` runs; ``open`` does that in the background); returns the
        version (see tables.migrate)."""
        conn = await self._db.connect_one()
        try:
            version = await migrate(conn, self.namespace)
            await zipheads.fill_zip_heads(lambda: conn.fetchrow(zipheads.FILL_STEP))
            return version
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            await conn.close()

    async def _migrate(self) -> int:
        conn = await self._db.connect_one()
        try:
            return await migrate(conn, self.namespace)
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            await conn.close()

    async def open(self) -> None:
        await self._migrate()
        await self._db.open()
        if self.blob_store is not None:  # said at start; requests that need the bucket get 503 until it answers
            try:
                await asyncio.wait_for(self.blob_store.check(), 10)
            except (StorageError, TimeoutError) as exc:
                log.warning("the bucket %s can't be used now: %s", self.blob_store.url, exc or "timeout")
        self._tasks = [
            asyncio.create_task(self._every(STATS_FLUSH_SECONDS, self.flush_stats), name="openkvs-pg-stats"),
            asyncio.create_task(self._every(GC_INTERVAL_SECONDS, self.collect_garbage), name="openkvs-pg-gc"),
            asyncio.create_task(self._every(LEASE_RENEW_SECONDS, self._renew), name="openkvs-pg-leases"),
        ]
        self._stop_fill = asyncio.Event()
        self._fill_task = asyncio.create_task(self._fill_zip_heads(), name="openkvs-pg-zip-heads")

    async def fill_zip_heads(self, stop: asyncio.Event | None = None, pause: float = 0.0) -> int:
        """Give older records (from before version 9) their kept ZIP headers, a statement of
        ``zipheads.ZIP_HEAD_FILL`` rows at a time, ``pause`` seconds between them; returns how many were filled.
        Stops between statements once ``stop`` is set."""
        return await zipheads.fill_zip_heads(
            lambda: self._run(lambda c: c.fetchrow(zipheads.FILL_STEP)), stop, pause=pause
        )

    async def _fill_zip_heads(self) -> None:
        """The fill in the background after ``open``, until done or ``aclose`` (which waits for the statement in
        flight: cancelling it would leave the connection for the pool to close mid-statement)."""
        try:
            await self.fill_zip_heads(self._stop_fill, pause=0.005)
        except Exception as exc:  # the database away: downloads read those rows the slower way meanwhile
            log.warning("could not keep the ZIP headers of older records (%s); will retry at the next start", exc)

    async def _renew(self) -> None:
        await self._leases.renew()
        if self.uploads is not None:
            await self.uploads.renew()

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
        fill, self._fill_task = self._fill_task, None
        if fill is not None:
            self._stop_fill.set()
            await asyncio.gather(fill, return_exceptions=True)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:  # cancelled or failed, either way it is stopped
                pass
        await self._groups.aclose()
        await self._shared.aclose()
        for batched in list(self._lookups.values()):
            await batched.aclose()
        if self._db.pool is not None:
            try:
                await self.flush_stats()
            except StorageError:
                log.warning("could not flush access counters at close", exc_info=True)
        await self._db.close()
        if self.blob_store is not None:
            await self.blob_store.aclose()

    async def drop(self) -> None:
        """Drops the namespace with every table. Works whether the storage is open or closed."""
        conn = await self._db.connect_one()
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE')
        finally:
            await conn.close()

    # -- records -----------------------------------------------------------------------------------------------

    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta:
        it = body.__aiter__()
        buf = bytearray()
        if self.uploads is not None and not await fill(it, buf, self.inline_max + 1):
            row = await put_in_bucket(self._db, self.uploads, store_id, key, body, it, buf, content_type,
                                      content_encoding)
            return to_record(row)
        ended = await fill(it, buf, CHUNK_SIZE + 1)  # body errors propagate: nothing written yet
        if ended and len(buf) <= CHUNK_SIZE:  # (more when --blob-inline-max is above CHUNK_SIZE)
            # small record: one statement (its own transaction) on the main pool; writes of the store that come
            # while one is in flight are committed together (group commit, groups.py)
            data = bytes(buf) if buf else None
            args = (store_id, key, content_type, content_encoding, len(buf), body.decoded_size,
                    body.crc32 & 0xFFFFFFFF, CHUNK_SIZE, data)
            row = await self._groups.write(args)
            if row is None:
                raise NotFound(f"store {store_id} not found")
            return to_record(row)

        try:
            async with pooled(self._db.uploads()) as conn:
                async with conn.transaction():
                    if await conn.fetchval("SELECT true FROM stores WHERE id = $1", store_id) is None:
                        raise NotFound(f"store {store_id} not found")
                    blob_id, size = await write_chunks(conn, it, buf)  # a body error rolls the transaction back
                    # the store row is locked by this last statement: held only until the COMMIT that follows
                    try:
                        row = await conn.fetchrow(
                            UPSERT_BIG, store_id, key, content_type, content_encoding, size, body.decoded_size,
                            body.crc32 & 0xFFFFFFFF, CHUNK_SIZE, blob_id,
                        )
                    except pgx.ForeignKeyViolationError:
                        raise NotFound(f"store {store_id} not found") from None
                    except pgx.DeadlockDetectedError:
                        raise StorageUnavailable("record write deadlocked") from None
                    if row is None:
                        raise NotFound(f"store {store_id} not found")
                    return to_record(row)
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc

    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        # A small record comes with its bytes (same query, same snapshot): read_blob then runs no query.
        row = await self._fetchrow(
            f"SELECT {RECORD_COLS}, {held_data('r')} AS data FROM records r WHERE store_id = $1 AND key = $2",
            store_id,
            key,
        )
        return to_record(row, row["data"]) if row is not None else None

    def look_up_store(
        self,
        user_id: str | None,
        *,
        store_id: str | None = None,
        owner_id: str | None = None,
        name: str | None = None,
        key: str | None = None,
        readable: Sequence[str] = (),
        kind: str = KVS,
    ) -> Coroutine[Any, Any, StoreLookup | None]:
        """Storage.look_up_store. Not itself a coroutine function: it hands over the coroutine of the read that
        answers (one layer less to make, and to pass through on each step: ~1k instructions a record GET)."""
        if store_id is not None:
            # look-ups by ID in a burst (the GETs of 32 clients) are asked together (lookups.py)
            shape = (key is not None, kind, tuple(readable))
            batched = self._lookups.get(shape)
            if batched is None:
                batched = self._lookups[shape] = self._batched(*shape)
            return batched.read((user_id, store_id, key))
        args: tuple[Any, ...] = (LOOKUP[(True, key is not None)], user_id, text_array(readable), owner_id, name, kind)
        if key is not None:
            args += (key,)
        # the same look-up in a burst (the writes of 32 clients to one store) is asked once (groups.SharedReads)
        shared = (user_id, store_id, owner_id, name, key, tuple(readable), kind)
        return self._shared.read(shared, lambda: self._look_up(args, key))

    def _batched(
        self, with_record: bool, kind: str, readable: tuple[str, ...]
    ) -> Batched[tuple[Any, ...], StoreLookup | None]:
        """The look-ups by ID of one shape: alone with LOOKUP, together with LOOKUP_MANY. An ask: (the caller's
        user ID, the store ID, the record key or None). Each sends the version of the Store held for its ID
        (StoreVersions), and of the record held for its key, taken when the query is sent."""
        one_sql, many_sql = LOOKUP[(False, with_record)], LOOKUP_MANY[with_record]
        self._db.prepared.update((one_sql, many_sql))
        levels = text_array(readable)
        versions = self._versions

        async def one(ask: tuple[Any, ...]) -> StoreLookup | None:
            user_id, store_id, key = ask
            held = versions.held(store_id, key)
            args = (user_id, levels, store_id, kind, key, held[0], held[2]) if with_record else (
                user_id, levels, store_id, kind, held[0])
            row = await self._fetchrow(one_sql, *args)
            return versions.found(row, 0, with_record, held) if row is not None else None

        async def many(asks: Sequence[tuple[Any, ...]]) -> list[StoreLookup | None]:
            user_ids, store_ids, keys = zip(*asks, strict=True)
            now, held_of = time.monotonic(), versions.held
            held = [held_of(sid, key, now) for sid, key in zip(store_ids, keys, strict=True)]
            arrays = [text_array(user_ids), text_array(store_ids), text_array([h[0] for h in held])]
            if with_record:
                arrays += [text_array(keys), text_array([h[2] for h in held])]
            rows = await self._fetch(many_sql, levels, kind, *arrays)
            found: list[StoreLookup | None] = [None] * len(asks)
            # (LOOKUP_MANY's columns start with n, then those of LOOKUP's)
            for row in rows:
                at = row[0] - 1
                found[at] = versions.found(row, 1, with_record, held[at])
            return found

        return Batched(one, many)

    async def _look_up(self, args: tuple[Any, ...], key: str | None) -> StoreLookup | None:
        row = await self._fetchrow(*args)
        return _found(row, key is not None, 0, self._store_memo) if row is not None else None

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        blob = record.blob
        return blob.data if isinstance(blob, PgBlob) and blob.data is not None and len(blob.data) == blob.size else None

    async def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob, start, end = blob_range(record, start, end)
        if blob.chunk_size == IN_BUCKET and blob.data is None:
            async for piece in self._bucket_read(blob, start, end):
                yield piece
            return

        async def fetch(sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
            # a connection per query: a slow reader never holds one between pieces
            return await self._fetch(sql, *args)

        async for piece in iter_chunks(fetch, blob, start, end):
            yield piece

    async def delete_record(self, store_id: str, key: str) -> bool:
        # One statement, its own transaction (see _UPSERT_TAIL): the store row first, then DELETE ... RETURNING
        # gives the version it deleted (the latest, after waiting for a concurrent writer).
        sql = f"""WITH lk AS (SELECT id FROM stores WHERE id = $1 FOR NO KEY UPDATE),
                d AS (DELETE FROM records r USING lk WHERE r.store_id = $1 AND r.key = $2
                      RETURNING r.blob_id, r.size, r.chunk_size, r.key, r.decoded_size),
                t AS (SELECT {NOW_MS} AS now),
                g AS (INSERT INTO garbage (blob_id, created_at, in_bucket)
                      SELECT d.blob_id, t.now, {IN_BUCKET_SQL.format(size="d.size", chunk_size="d.chunk_size")}
                      FROM d, t),
                st AS (
                    UPDATE stores SET generation = generation + 1, totals_generation = generation + 1,
                        modified_at = greatest(stores.modified_at, t.now), {DELETE_ADDS}
                    FROM d, t WHERE id = $1
                )
                SELECT count(*) FROM d"""
        n = await deadlock_retried("record delete", lambda: self._run(lambda c: c.fetchval(sql, store_id, key)))
        return bool(n > 0)

    async def list_keys(
        self, store_id: str, selection: KeySelection, exclusive_start_key: str | None, limit: int
    ) -> KeyPage:
        args: list[Any] = [store_id]
        cond = selection_sql(selection, args)
        if cond is None or limit <= 0:
            return KeyPage([], False)
        sql = f"SELECT key, size, content_type FROM records WHERE store_id = $1 AND {cond}"
        if exclusive_start_key is not None:
            args.append(exclusive_start_key)
            sql += f" AND key > ${len(args)}"
        args.append(limit + 1)
        sql += f" ORDER BY key LIMIT ${len(args)}"
        rows = await self._fetch(sql, *args)
        items = [KeyItem(r["key"], r["size"], r["content_type"]) for r in rows[:limit]]
        return KeyPage(items, len(rows) > limit)

    @asynccontextmanager
    async def snapshot(self, store_id: str, selection: KeySelection) -> AsyncIterator[PgSnapshot]:
        if self.blob_store is None:  # (records in a bucket, if any, then get StorageUnavailable from _bucket_read)
            async with open_snapshot(self._db.snapshots(), store_id, selection, self._bucket_read) as snap:
                yield snap
            return
        async with self._leases.held_for():  # the lease first, then the snapshot's transaction (objects.py)
            async with open_snapshot(self._db.snapshots(), store_id, selection, self._bucket_read) as snap:
                yield snap

    def _bucket_read(self, blob: PgBlob, start: int, end: int) -> AsyncIterator[bytes]:
        if self.blob_store is None:
            raise no_blob_store(f"blob {blob.blob_id} is")
        return self.blob_store.read(blob.blob_id, start, end)

    # -- record bytes in a bucket (openkvs blobs) --------------------------------------------------------------

    async def check_bucket(self, *, fix: bool = False) -> FsckReport:
        from .blobs import fsck  # loaded when used: only openkvs blobs needs the bucket's administration

        return await fsck(self, fix=fix)

    async def move_record_bytes(
        self, to: str, progress: Callable[[MigrateProgress], None] | None = None
    ) -> MigrateProgress:
        from .blobs import migrate

        return await migrate(self, to, progress)

    # -- garbage -----------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: datetime | None = None, grace: float | None = None) -> int:
        """Delete the chunks of blobs that became garbage more than ``grace`` (default ``gc_grace_seconds``)
        seconds before ``now`` (default: the database clock). Returns how many blobs were freed. Several
        processes may run it at once (SKIP LOCKED)."""
        metrics.GC_RUNS.inc()
        grace = self.gc_grace_seconds if grace is None else grace
        return await collect(self._db, self.blob_store, now, grace)

    def sample_metrics(self) -> None:
        self._db.sample_metrics()

    # -- stats -------------------------------------------------------------------------------------------------

    def count_access(self, store_id: str, *, reads: int = 0, writes: int = 0, deletes: int = 0, lists: int = 0) -> None:
        self._stats.add(store_id, int(time.time() * 1000), reads=reads, writes=writes, deletes=deletes, lists=lists)

    async def flush_stats(self) -> None:
        """Write the buffered access counters (the background task does this every 2 s, and ``aclose``)."""
        await self._stats.flush(self._write_stats)

    async def _write_stats(self, pending: dict[str, StatDelta]) -> None:
        rows = [
            (
                sid,
                d.reads,
                d.writes,
                d.deletes,
                d.lists,
                datetime.fromtimestamp(d.accessed_at_ms / 1000, tz=UTC),
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

        await self._run(go, tx=True)

_STORE_NCOLS = STORE_COLS.count(",") + 1


def _found(row: asyncpg.Record, with_record: bool, first: int, memo: StoreMemo) -> StoreLookup:
    """A look-up by name's answer from its row (tables.LOOKUP), by position: the store's columns from
    ``first``, then g_can_write and may_read, then the record's RECORD_COLS and its bytes (tables.record_from)."""
    end = first + _STORE_NCOLS
    return lookup_answer(memo.store(row[first:end], to_store, row), row, end, with_record)
