"""``openkvs check`` for the PostgreSQL backend: connect, compare the schema version with this openkvs's, and
check that every record's chunks add up to its size (count and total length), every store's record count is
its number of records (and its other kept totals, STORE_TOTALS, its records'), every kept ZIP header is the one
its record's columns give, without changing anything. ``fix_counts`` (``openkvs check --fix``) sets the wrong
counts and totals, while servers run."""

from __future__ import annotations

import asyncpg
from asyncpg import exceptions as pgx

from ...plural import counted
from .. import datasets, totals
from ..base import StorageUnavailable
from .connections import CONNECTION_ERRORS
from .tables import IN_BUCKET_SQL, RECORD_TOTALS, STORE_TOTALS, TABLES_VERSION

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

# Stores whose record_count or other kept totals (STORE_TOTALS) are not their records': (id, kept, counted), each an
# array in the order of STORE_TOTALS. All stores: one pass over the records; some ($1): their records only.
_COLS = STORE_TOTALS.split(", ")
_KEPT = f"ARRAY[{', '.join(f's.{c}' for c in _COLS)}]::bigint[]"
_COUNTED = f"ARRAY[{', '.join(f'coalesce(c.{c}, 0)' for c in _COLS)}]::bigint[]"
_FROM_ARRAY = ", ".join(f"($2::bigint[])[{i + 1}]" for i in range(len(_COLS)))  # fix_counts: the counted, $2
_WRONG_COUNTS = f"""
SELECT * FROM (
    SELECT s.id, {_KEPT} AS kept, s.totals_generation = s.generation AS current, {_COUNTED} AS counted
    FROM stores s LEFT JOIN (SELECT store_id, {RECORD_TOTALS} FROM records GROUP BY store_id)
        c(store_id, {STORE_TOTALS}) ON c.store_id = s.id
) w WHERE kept <> counted OR NOT current ORDER BY id
"""
_WRONG_COUNTS_OF = f"""
SELECT * FROM (
    SELECT s.id, {_KEPT} AS kept, s.totals_generation = s.generation AS current, {_COUNTED} AS counted
    FROM stores s, LATERAL (SELECT {RECORD_TOTALS} FROM records r WHERE r.store_id = s.id) c({STORE_TOTALS})
    WHERE s.id = ANY($1::text[])
) w WHERE kept <> counted OR NOT current
"""

# Kept ZIP headers (zipheads.py) that are not the ones the records' columns give.
_BAD_HEADS = """
SELECT store_id, key FROM records
WHERE zip_head IS NOT NULL AND zip_head <> zip_local_header(key, decoded_size, crc32, modified_at)
ORDER BY store_id, key LIMIT $1
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
            problems += [
                f"record {r['store_id']}/{r['key']}: its kept ZIP header is not the one its name, size, CRC and "
                "time give; with the servers stopped, UPDATE records SET zip_head = zip_local_header(key, "
                "decoded_size, crc32, modified_at) WHERE zip_head IS NOT NULL"
                for r in await conn.fetch(_BAD_HEADS, MAX_LISTED)
            ]
            counts = {r[0]: (r[1], r[2]) for r in await conn.fetch(datasets.CHECK_COUNTS_SQL)}
            rows = {r[0]: tuple(r[1:]) for r in await conn.fetch(datasets.CHECK_ROWS_SQL.format(length="octet_length"))}
            problems += datasets.dataset_problems(counts, rows, MAX_LISTED)
            in_bucket = IN_BUCKET_SQL.format(size="size", chunk_size="chunk_size")
            count, objects = await conn.fetchrow(
                f"SELECT count(*) FILTER (WHERE NOT {in_bucket}), count(*) FILTER (WHERE {in_bucket}) FROM records")
            wrong = await conn.fetch(_WRONG_COUNTS)
            problems += [
                f"store {r['id']}: {totals.wrong(totals.Kept(r['kept'], r['current']), r['counted'])}"
                for r in wrong[:MAX_LISTED]
            ]
            if len(wrong) > MAX_LISTED:
                problems.append(f"and {len(wrong) - MAX_LISTED} more stores with a wrong record count or ZIP totals")
    except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:
        return [f"PostgreSQL: {type(exc).__name__}: {exc}"], ""
    finally:
        await conn.close()
    return problems, (
        f"PostgreSQL schema {namespace!r} at version {version}; chunks of {counted(count, 'record')} add up"
        + (f", {counted(objects, 'record')} in a bucket (openkvs blobs fsck checks them)" if objects else "") + "; "
        "record counts agree, and the stores' ZIP totals; "
        "kept ZIP headers agree; "
        f"the items of {counted(len(counts.keys() | rows.keys()), 'dataset')} agree with their counts"
    )


async def fix_counts(dsn: str, namespace: str) -> list[str]:
    """Set the record count of every store whose count is wrong to its number of records; returns one line per
    store changed. Servers may run: the stores found wrong are locked first (every record writer locks its store
    row in the statement that changes a record, and holds it to its commit), then counted by a later statement, so
    the count is exact when it commits."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10, server_settings={"search_path": f'"{namespace}"'})
    except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
    try:
        version = await conn.fetchval("SELECT max(version) FROM schema_version")
        if version != TABLES_VERSION:
            raise StorageUnavailable(f"schema {namespace!r} is at version {version}, run openkvs migrate")
        suspects = [r["id"] for r in await conn.fetch(_WRONG_COUNTS)]
        if not suspects:
            return []
        async with conn.transaction():
            await conn.execute(
                "SELECT id FROM stores WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", suspects
            )
            wrong = await conn.fetch(_WRONG_COUNTS_OF, suspects)  # a new snapshot: after the locks were granted
            await conn.executemany(
                f"UPDATE stores SET ({STORE_TOTALS}) = ({_FROM_ARRAY}), totals_generation = generation WHERE id = $1",
                [(r["id"], r["counted"]) for r in wrong],
            )
    except (*CONNECTION_ERRORS, pgx.PostgresError) as exc:
        raise StorageUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
    finally:
        await conn.close()
    return [f"store {r['id']}: {totals.fixed(totals.Kept(r['kept'], r['current']), r['counted'])}" for r in wrong]
