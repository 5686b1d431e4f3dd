"""PostgreSQL schemas for tests, each migrated and empty when a test gets it, used again by later tests of the same
test process. Creating openkvs's tables is about 0.2 s of PostgreSQL's time and dropping them another 0.05-0.1 s;
emptying them is about 10 ms. A schema goes back for another test only if the test left its tables, columns,
indexes, constraints, sequences and version as they were created (else it is dropped, as before): a test that takes
the tables back to an older version, or drops one, gets nothing reused."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")

# The schema's definition, without its name: everything but the rows, plus its version row.
_DEFINITION = """
SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (
    SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), '') AS x
    FROM pg_class c
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relnamespace = $1::text::regnamespace
    UNION ALL
    SELECT replace(pg_get_indexdef(i.indexrelid), $2, '') FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = $1::text::regnamespace
    UNION ALL
    SELECT conrelid::regclass::text || ' ' || conname || ' ' || replace(pg_get_constraintdef(oid), $2, '')
    FROM pg_constraint WHERE connamespace = $1::text::regnamespace
    UNION ALL
    SELECT 'trigger ' || tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = $1::text::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'function ' || proname || ' ' || md5(prosrc) FROM pg_proc WHERE pronamespace = $1::text::regnamespace
) parts
"""

_free: list[str] = []  # migrated and empty, ready for the next test
_made: dict[str, tuple[str, list[str], list[str]]] = {}  # every schema made here -> its definition, tables, sequences
_lock = threading.Lock()


async def _connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})


async def _definition(conn: asyncpg.Connection, schema: str) -> str:
    async with conn.transaction():  # one search_path: it decides which names pg_get_*def qualifies
        await conn.execute("SET LOCAL search_path = pg_catalog")
        version = await conn.fetchval(f'SELECT string_agg(version::text, \',\') FROM "{schema}".schema_version')
        return f"{await conn.fetchval(_DEFINITION, schema, schema)} v{version}"


async def take(dsn: str) -> str:
    """A migrated, empty schema (one a test gave back, else a new one)."""
    with _lock:
        if _free:
            return _free.pop()
    from openkvs.storage.postgres.tables import migrate

    schema = "t_" + secrets.token_hex(6)
    conn = await _connect(dsn, schema)
    try:
        await migrate(conn, schema)
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'schema_version'", schema
        )]
        sequences = [r[0] for r in await conn.fetch("SELECT sequencename FROM pg_sequences WHERE schemaname = $1",
                                                     schema)]
        _made[schema] = (await _definition(conn, schema), tables, sequences)
    finally:
        await conn.close()
    return schema


async def give_back(dsn: str, schema: str) -> None:
    """Empty ``schema`` for the next test if the test left its definition as created, else drop it."""
    conn = await asyncpg.connect(dsn)
    try:
        if schema in _made and await _reset(conn, schema):
            with _lock:
                _free.append(schema)
            return
        _made.pop(schema, None)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _reset(conn: asyncpg.Connection, schema: str) -> bool:
    definition, tables, sequences = _made[schema]
    try:
        async with conn.transaction():
            if await _definition(conn, schema) != definition:
                return False
            for t in tables:  # DELETE, not TRUNCATE: TRUNCATE makes new files (as slow as new tables)
                await conn.execute(f'DELETE FROM "{schema}"."{t}"')
            for q in sequences:
                await conn.execute(f'ALTER SEQUENCE "{schema}"."{q}" RESTART')
        return True
    except asyncpg.PostgresError:  # the schema is gone or broken: not reused
        return False


def drop_all(dsn: str) -> None:
    """Drop every schema this test process made (at its end)."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for schema in list(_made):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    with _lock:
        _free.clear()
    if _made:
        blocking(go)
        _made.clear()


def blocking(fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()`` run to its end from synchronous code, whether or not this thread runs an event loop."""
    out: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            out.append(asyncio.run(fn()))  # type: ignore[arg-type]
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if error:
        raise error[0]
    return out[0]
