"""``openkvs check`` for the PostgreSQL backend: connect, compare the schema version with this openkvs's, and
check that every record's chunks add up to its size (count and total length), without changing anything."""

from __future__ import annotations

import asyncpg
from asyncpg import exceptions as pgx

from .connections import CONNECTION_ERRORS
from .tables import TABLES_VERSION

MAX_LISTED = 100

# Records whose chunks don't add up: a missing or extra chunk, or chunks of the wrong total length. Records whose
# bytes are an object in the bucket (chunk_size 0) are openkvs blobs fsck's to check.
_BAD_RECORDS = """
SELECT r.store_id, r.key, r.size, r.chunk_size, count(c.seq) AS chunks, coalesce(sum(length(c.data)), 0) AS stored
FROM records r LEFT JOIN blob_chunks c ON c.blob_id = r.blob_id
WHERE r.chunk_size > 0
GROUP BY r.store_id, r.key, r.size, r.chunk_size
HAVING coalesce(sum(length(c.data)), 0) <> r.size OR count(c.seq) <> (r.size + r.chunk_size - 1) / r.chunk_size
ORDER BY r.store_id, r.key
LIMIT $1
"""


async def check(dsn: str, namespace: str) -> tuple[list[str], str]:
    """(problems, one line of what was checked)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10, server_settings={"search_path": f'"{namespace}"'})
    except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:
        return [f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}"], ""
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            try:
                version = await conn.fetchval("SELECT max(version) FROM schema_version")
            except pgx.UndefinedTableError:
                return [f"schema {namespace!r} holds no openkvs database (run openkvs migrate for a new one)"], ""
            if version != TABLES_VERSION:
                return [f"schema {namespace!r} is at version {version}, this openkvs expects {TABLES_VERSION}"], ""
            problems = [
                f"record {r['store_id']}/{r['key']}: {r['chunks']} chunks of {r['stored']} bytes, "
                f"expected {r['size']} bytes in chunks of {r['chunk_size']}"
                for r in await conn.fetch(_BAD_RECORDS, MAX_LISTED)
            ]
            count = await conn.fetchval("SELECT count(*) FROM records")
    except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:
        return [f"PostgreSQL: {type(exc).__name__}: {exc}"], ""
    finally:
        await conn.close()
    return problems, f"PostgreSQL schema {namespace!r} at version {version}; chunks of {count} records add up"
