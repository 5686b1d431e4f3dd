"""asyncpg connections: which errors mean the database is unavailable (and become ``StorageUnavailable``), a
pooled connection that is thrown away after such an error, and what a pool runs on each new and each released
connection."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg import exceptions as pgx

from ..base import StorageError, StorageFull, StorageUnavailable

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
