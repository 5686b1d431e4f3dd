"""asyncpg connections, the mechanism only (no table is named here): which errors mean the database is
unavailable (and become ``StorageUnavailable``), a pooled connection that is thrown away after such an error, what
a pool runs on each new and each released connection, and ``Database``: the connect settings and the three pools
of one namespace, with the calls that run a query on the main pool."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from asyncpg import exceptions as pgx

from openkvs import metrics

from ..base import StorageError, StorageFull, StorageUnavailable

log = logging.getLogger(__package__)  # "openkvs.storage.postgres", the name log records had before the split

T = TypeVar("T")

RETRY_DELAYS = (0.0, 0.05, 0.25)  # a read's retries after a connection failure: the other connections of a
# restarted server die too

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pgx.PostgresConnectionError,  # ConnectionDoesNotExistError, ConnectionFailureError, ...
    pgx.OperatorInterventionError,  # AdminShutdownError (pg_terminate_backend), CannotConnectNowError, ...
    pgx.InsufficientResourcesError,  # TooManyConnectionsError
    pgx.InterfaceError,  # connection closed / pool closing / "another operation is in progress" after a loss
    pgx.InternalClientError,
    OSError,  # ConnectionRefusedError, ConnectionResetError, socket errors
    asyncio.TimeoutError,  # connect timeout
)


def unavailable(exc: BaseException) -> StorageError:
    """The StorageError for a failure of the class above: PostgreSQL's disk full is no outage (507, not 503)."""
    err: StorageError
    if isinstance(exc, pgx.DiskFullError):
        err = StorageFull(f"PostgreSQL: {exc}")
    else:
        err = StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def discard(conn: asyncpg.Connection) -> None:
    """Close a connection at once unless asyncpg already did (a closed one detaches itself from its pool)."""
    try:
        if not conn.is_closed():
            conn.terminate()
    except pgx.InterfaceError:
        pass


@asynccontextmanager
async def pooled(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection that is thrown away (not reused) if it failed with a connection-class error: after a
    backend was killed mid-operation asyncpg may keep it open in a broken protocol state."""
    conn = await pool.acquire()
    try:
        yield conn
    except CONNECTION_ERRORS:
        discard(conn)
        raise
    finally:
        try:
            # asyncpg shields the release itself (a cancelled caller can't leave the connection half-returned);
            # the timeout bounds a release that hangs on a broken connection.
            await pool.release(conn, timeout=10)
        except Exception:  # broken: make sure it is gone
            discard(conn)


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a pool runs on every release. asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` each time: a round trip per query here, i.e. as many as the queries themselves. This
    backend takes no session advisory locks, opens no cursor outside a transaction, never LISTENs and never SETs
    a session setting, so the only state that can be left is an open transaction."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# asyncpg < 0.30 has no ``reset`` argument (it then runs its default)
POOL_RESET: dict[str, Any] = (
    {"reset": _reset_connection} if "reset" in inspect.signature(asyncpg.create_pool).parameters else {}
)


# Writers and delete_store lock the store row before record rows, so they should not deadlock; should PostgreSQL
# still abort one as a deadlock victim, it is retried up to this many times.
DEADLOCK_RETRIES = 5


async def deadlock_retried(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, again after PostgreSQL aborted it as a deadlock victim (see DEADLOCK_RETRIES)."""
    for n in range(DEADLOCK_RETRIES):
        try:
            return await attempt()
        except pgx.DeadlockDetectedError:
            if n == DEADLOCK_RETRIES - 1:
                raise StorageUnavailable(f"{what} deadlocked repeatedly") from None
            metrics.STORAGE_RETRIES.labels("deadlock").inc()
    raise AssertionError("unreachable")


class Database:
    """The connections of one PostgreSQL namespace (schema): ``connect_one`` makes a single connection (for
    migrations), ``open`` creates the pools, ``close`` closes them. The main pool serves the short queries
    (``run``, ``fetch``, ``fetchrow``, ``execute``); long transactions get a pool each, so that open downloads
    (snapshots) can't take the connections that big uploads need, nor the reverse, nor either the short
    queries'."""

    def __init__(
        self, dsn: str, namespace: str, *, min_pool: int, max_pool: int, max_snapshots: int, connect_timeout: float
    ) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.min_pool = min_pool
        self.max_pool = max_pool
        self.max_snapshots = max_snapshots
        self.connect_timeout = connect_timeout
        self.application_name = f"openkvs:{namespace}"
        self.pool: asyncpg.Pool | None = None
        self.upload_pool: asyncpg.Pool | None = None
        self.snapshot_pool: asyncpg.Pool | None = None
        # Part of the main pool's connections serve ``run`` directly (see _Direct); the pool keeps the rest.
        self.direct = _Direct(self, max_pool // 2)
        # statements ``fetchrow`` runs prepared on the direct connections (the look-ups by ID: backend.py)
        self.prepared: set[str] = set()

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.connect_timeout,
            "server_settings": {"search_path": f'"{self.namespace}"', "application_name": self.application_name},
            "init": init_connection,
            **POOL_RESET,
        }

    async def connect_one(self) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, server_settings={"search_path": f'"{self.namespace}"'}
            )
        except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:  # down, no such database, bad password: one line
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
        return conn

    async def open(self) -> None:
        try:
            pooled_max = self.max_pool - self.direct.limit
            self.pool = await asyncpg.create_pool(
                self.dsn, min_size=min(self.min_pool, pooled_max), max_size=pooled_max, **self._connect_kwargs()
            )
            self.direct.open()
            self.upload_pool = await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self.max_pool, **self._connect_kwargs()
            )
            self.snapshot_pool = await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self.max_snapshots, **self._connect_kwargs()
            )
        except CONNECTION_ERRORS as exc:
            await self.close()
            raise unavailable(exc) from exc

    async def close(self) -> None:
        pools = [p for p in (self.pool, self.upload_pool, self.snapshot_pool) if p is not None]
        self.pool = self.upload_pool = self.snapshot_pool = None
        await self.direct.close()
        for p in pools:
            try:
                await asyncio.wait_for(p.close(), 10)
            except Exception:
                p.terminate()

    @staticmethod
    def _open(pool: asyncpg.Pool | None) -> asyncpg.Pool:
        if pool is None:
            raise StorageUnavailable("storage is not open")
        return pool

    def sample_metrics(self) -> None:
        for name, pool in (("main", self.pool), ("uploads", self.upload_pool), ("snapshots", self.snapshot_pool)):
            size, idle = (pool.get_size(), pool.get_idle_size()) if pool is not None else (0, 0)
            if name == "main":
                direct = self.direct  # (those being opened are not connections yet)
                size, idle = size + direct.opened - direct.connecting, idle + len(direct.idle)
            metrics.STORAGE_CONNECTIONS.labels(name, "busy").set(size - idle)
            metrics.STORAGE_CONNECTIONS.labels(name, "idle").set(idle)

    def main(self) -> asyncpg.Pool:
        return self._open(self.pool)

    def uploads(self) -> asyncpg.Pool:
        return self._open(self.upload_pool)

    def snapshots(self) -> asyncpg.Pool:
        return self._open(self.snapshot_pool)

    async def run(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        tx: bool = False,
        retry: bool = False,
        tried: int = 0,
    ) -> T:
        """Run ``fn`` on a pooled connection (in a transaction if ``tx``), translating connection failures.
        ``retry``: ``fn`` only reads, so one more attempt after a connection failure is safe; it gets past a pooled
        connection that died (server restart, pg_terminate_backend) before the event loop noticed. ``tried``: the
        attempts already made (``fetchrow``'s first)."""
        delays = RETRY_DELAYS if retry else ()
        for attempt in range(tried, len(delays) + 1):
            try:
                direct = self.direct.take()
                if direct is not None:
                    return await self.direct.use(direct, fn, tx)
                async with pooled(self.main()) as conn:
                    if tx:
                        async with conn.transaction():
                            return await fn(conn)
                    return await fn(conn)
            except CONNECTION_ERRORS as exc:
                if attempt < len(delays) and self.pool is not None:
                    log.info("retrying a read after a connection failure: %r", exc)
                    metrics.STORAGE_RETRIES.labels("connection").inc()
                    await asyncio.sleep(delays[attempt])
                    continue
                raise unavailable(exc) from exc
        raise AssertionError("unreachable")

    def fetch(self, sql: str, *args: Any) -> Awaitable[list[asyncpg.Record]]:
        """A read-only query (retried once after a connection failure): see ``_read``."""
        return self._read(sql, args, True)

    def fetchrow(self, sql: str, *args: Any) -> Awaitable[asyncpg.Record | None]:
        """A read-only query's first row (retried once after a connection failure): see ``_read``."""
        return self._read(sql, args, False)

    async def _read(self, sql: str, args: tuple[Any, ...], many: bool) -> Any:
        """``fetch`` (``many``) or ``fetchrow``. On an idle direct connection the first attempt runs here, without
        ``run``'s and ``_Direct.use``'s layers (two coroutines and a lambda: ~6k instructions of a record GET's
        look-up, bench/cg_get.py), keeping their handling of each outcome. The statements in ``prepared`` (asked
        often: the look-ups) are prepared once per direct connection (_Direct.read)."""
        direct = self.direct
        conn = direct.take()
        if conn is None:
            return await self.run(_reader(sql, args, many), retry=True)
        try:
            if sql in self.prepared:
                result = await direct.read(conn, sql, args, many)
            else:
                result = await (conn.fetch(sql, *args) if many else conn.fetchrow(sql, *args))
        except CONNECTION_ERRORS as exc:  # as run and _Direct.use: the connection goes, then the next attempts
            direct.lost(conn)
            if self.pool is None:
                raise unavailable(exc) from exc
            log.info("retrying a read after a connection failure: %r", exc)
            metrics.STORAGE_RETRIES.labels("connection").inc()
            await asyncio.sleep(RETRY_DELAYS[0])
            return await self.run(_reader(sql, args, many), retry=True, tried=1)
        except pgx.PostgresError:  # the server's answer: the connection is fine
            direct.give_back(conn)
            raise
        except BaseException:  # cancelled, say: a query may still be running on it
            direct.lost(conn)
            raise
        direct.give_back(conn)
        return result

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.run(lambda c: c.execute(sql, *args))


def _reader(sql: str, args: tuple[Any, ...], many: bool) -> Callable[[asyncpg.Connection], Awaitable[Any]]:
    """The read as a function of a connection (for ``run``)."""
    if many:
        return lambda c: c.fetch(sql, *args)
    return lambda c: c.fetchrow(sql, *args)


class _Direct:
    """Some of the main pool's connections, handed to ``Database.run`` straight from a list: a query there skips
    asyncpg.Pool's machinery for each use (a proxy object, a shielded task and a reset coroutine on release, an
    idle timer set and cancelled), which cost about as much CPU as a point query itself. ``run`` takes one when one
    is idle and otherwise goes through the pool, which waits for a free connection as before; so the two together
    never hold more than ``max_pool`` connections. They are opened in the background as ``run`` finds none idle.

    A connection goes back to the list only after a query that ended normally or with an error the server sent
    (a constraint, a deadlock: the transaction is rolled back and the connection ready); after a lost connection,
    a timeout or a cancellation (a query may still be running) it is closed, and a new one opened later."""

    def __init__(self, db: Database, limit: int) -> None:
        self.db = db
        self.limit = max(0, limit)
        self.idle: list[asyncpg.Connection] = []
        self.opened = 0  # connecting, idle or in use
        self.connecting = 0
        self.closed = True
        self._tasks: set[asyncio.Task[None]] = set()
        # connection -> SQL -> its statement prepared there (``fetchrow``); dropped with the connection
        self.prepared: dict[asyncpg.Connection, dict[str, asyncpg.prepared_stmt.PreparedStatement]] = {}

    def open(self) -> None:
        self.closed = False

    def take(self) -> asyncpg.Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.is_closed():
                return conn
            self.opened -= 1  # lost while idle (the server restarted): the event loop noticed
        if self.opened < self.limit and not self.closed:  # one more, for later requests
            self.opened += 1
            task = asyncio.ensure_future(self._connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def _connect(self) -> None:
        db = self.db
        self.connecting += 1
        try:
            conn = await asyncpg.connect(
                db.dsn,
                timeout=db.connect_timeout,
                server_settings={"search_path": f'"{db.namespace}"', "application_name": db.application_name},
            )
            await init_connection(conn)
        except BaseException as exc:
            self.connecting -= 1
            self.opened -= 1
            if isinstance(exc, Exception):
                log.info("could not open a connection: %r", exc)  # the pool serves meanwhile
                return
            raise
        self.connecting -= 1
        self.give_back(conn)

    def give_back(self, conn: asyncpg.Connection) -> None:
        if self.closed or conn.is_closed() or conn.is_in_transaction():
            self.lost(conn)
        else:
            self.idle.append(conn)

    def lost(self, conn: asyncpg.Connection) -> None:
        """A connection that may be broken or busy (an error, a cancellation): closed, a new one opened later."""
        self.opened -= 1
        self.prepared.pop(conn, None)
        discard(conn)

    async def read(self, conn: asyncpg.Connection, sql: str, args: Sequence[Any], many: bool) -> Any:
        """``conn.fetch`` (``many``) or ``conn.fetchrow`` of ``sql`` by a statement prepared once on ``conn``:
        asyncpg's statement cache look-up and its three coroutines cost ~6k instructions a call (a record GET's
        look-up). After the tables changed under it (a migration elsewhere: asyncpg says so), it is dropped and
        the query runs the usual way, which prepares it again."""
        kept = self.prepared.get(conn)
        if kept is None:
            kept = self.prepared[conn] = {}
        stmt = kept.get(sql)
        if stmt is None:
            stmt = kept[sql] = await conn.prepare(sql)
        try:
            return await (stmt.fetch(*args) if many else stmt.fetchrow(*args))
        except (pgx.InvalidCachedStatementError, pgx.OutdatedSchemaCacheError):
            kept.pop(sql, None)
            return await (conn.fetch(sql, *args) if many else conn.fetchrow(sql, *args))

    async def use(
        self, conn: asyncpg.Connection, fn: Callable[[asyncpg.Connection], Awaitable[T]], tx: bool
    ) -> T:
        reusable = False
        try:
            if tx:
                async with conn.transaction():
                    result = await fn(conn)
            else:
                result = await fn(conn)
            reusable = True
            return result
        except pgx.PostgresError as exc:  # the server's answer: the connection is fine, unless it says it's gone
            reusable = not isinstance(exc, CONNECTION_ERRORS)
            raise
        except StorageError:  # raised by ``fn`` itself (NotFound...) between its queries
            reusable = True
            raise
        finally:
            if reusable:
                self.give_back(conn)
            else:
                self.lost(conn)

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self.idle = self.idle, []
        self.prepared.clear()
        for conn in idle:
            self.opened -= 1
            try:
                await asyncio.wait_for(conn.close(), 10)
            except Exception:
                discard(conn)
