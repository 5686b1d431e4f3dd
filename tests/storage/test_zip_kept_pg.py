"""PostgreSQL's kept ZIP headers (records.zip_head, storage/postgres/zipheads.py): the SQL function that makes them
gives zipwriter.local_header's bytes (edges of time, size, names), every way a row is written or changed keeps
its header right, a schema from before version 9 is upgraded in place and its older rows given their headers
(in the background after a start, and by migrate), the fill stops between statements when asked, and archives
are the old writer's bytes whether or not the headers are there yet (tests/test_zip_kept.py compares random
stores on every backend)."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from openkvs.storage.postgres import TABLES_VERSION, PostgresStorage
from openkvs.storage.postgres.zipheads import FILL_STEP, ZIP_HEAD_FILL, fill_zip_heads
from openkvs.zipwriter import local_header
from tests import zip_reference
from tests.storage.conftest import UNDO_TOTALS_PG

from .test_zip_kept import check_archive, fill, set_times, times

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = "t_" + secrets.token_hex(6)
    try:
        yield name
    finally:
        await PostgresStorage(DSN, namespace=name).drop()


@pytest.fixture
async def pg(schema: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(DSN, namespace=schema)
    try:
        await storage.open()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable in CI ({DSN}): {exc!r}")
        pytest.skip(f"PostgreSQL unreachable ({DSN}): {exc!r}")
    try:
        yield storage
    finally:
        await storage.aclose()


async def connect(schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(DSN, server_settings={"search_path": f'"{schema}"'})


async def heads_right(conn: asyncpg.Connection) -> tuple[int, int]:
    """(rows whose header is zipwriter.local_header of their columns, rows without one); fails on a wrong one."""
    right = missing = 0
    for r in await conn.fetch("SELECT key, decoded_size, crc32, modified_at, zip_head FROM records"):
        if r["zip_head"] is None:
            missing += 1
            continue
        seconds = (r["modified_at"] - EPOCH) // timedelta(seconds=1)
        assert r["zip_head"] == local_header(r["key"], r["decoded_size"], r["crc32"], seconds), r["key"]
        right += 1
    return right, missing


async def test_the_sql_header_is_zipwriters(pg: PostgresStorage) -> None:
    rnd = random.Random(3)
    times_ = [EPOCH + timedelta(milliseconds=ms) for ms in (
        -86_400_000 * 400, 0, 1, 999, 315_532_799_999, 315_532_800_000, 315_532_801_500, 1_700_000_000_999,
        0x7FFFFFFF * 1000, 0x7FFFFFFF * 1000 + 1000, 4_354_819_199_999, 4_354_819_200_000, 4_400_000_000_123,
    )]
    times_ += [EPOCH + timedelta(microseconds=rnd.randrange(-10**15, 5 * 10**15)) for _ in range(300)]
    sizes = [0, 1, 100, 0xFFFFFFFE, 0xFFFFFFFF, 0x100000000, 1 << 40]
    keys = ["k", "é", "😀" * 3, "a/b c.json", "x" * 1000, "y" * 70_000]
    cases = [(rnd.choice(keys), rnd.choice(sizes), rnd.choice([0, 1, 0xFFFFFFFF, rnd.randrange(1 << 32)]), t)
             for t in times_]
    cases += [("k", 5, crc, times_[0]) for crc in (-1, 1 << 32)]  # not an entry zipwriter makes: b""
    conn = await connect(pg.namespace)
    try:
        got = await conn.fetch(
            "SELECT zip_local_header(k, s, c, t) FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[])"
            " WITH ORDINALITY AS w(k, s, c, t, n) ORDER BY n",
            *map(list, zip(*cases, strict=True)),
        )
    finally:
        await conn.close()
    for (key, size, crc, t), (head,) in zip(cases, got, strict=True):
        seconds = (t - EPOCH) // timedelta(seconds=1)
        assert head == local_header(key, size, crc, seconds), (key[:10], size, crc, t)


async def test_every_way_of_writing_keeps_the_header_right(pg: PostgresStorage) -> None:
    rnd = random.Random(4)
    store_id, recs = await fill(pg, rnd, 120)  # alone and in groups, chunks, encoded
    await asyncio.gather(*(  # overwrites in a burst (group commit)
        pg.put_record(store_id, r.key, _body(b"new" * i), "text/plain", None) for i, r in enumerate(recs[:40])
    ))
    await set_times(pg, store_id, recs, rnd)  # UPDATEs of the time behind the upserts' back: the trigger
    conn = await connect(pg.namespace)
    try:
        await conn.execute(  # a row inserted by hand, without a header: the trigger
            "INSERT INTO records (store_id, key, content_type, size, decoded_size, crc32, modified_at, blob_id, "
            "chunk_size) VALUES ($1, 'by hand', 'text/plain', 0, 0, 0, now(), nextval('blob_ids'), 1048576)",
            store_id,
        )
        right, missing = await heads_right(conn)
        assert (right, missing) == (len(recs) + 1, 0)
    finally:
        await conn.close()


def _body(data: bytes) -> Any:
    from .conftest import Body

    return Body([data])


async def _forget_headers(conn: asyncpg.Connection, where: str = "TRUE") -> int:
    """Rows without their header, as before version 9 (the fill's mark set, as the migration does)."""
    n = await conn.fetchval(f"WITH u AS (UPDATE records SET zip_head = NULL WHERE {where} RETURNING 1) "
                            "SELECT count(*) FROM u")
    await conn.execute("DELETE FROM zip_head_fill; INSERT INTO zip_head_fill VALUES ('', '')")
    return int(n)


async def test_rows_without_headers_give_the_same_archive_and_are_filled_by_migrate(pg: PostgresStorage) -> None:
    rnd = random.Random(5)
    store_id, recs = await fill(pg, rnd, 300)
    await set_times(pg, store_id, recs, rnd)
    want = zip_reference.build_archive(await times(pg, store_id, recs))
    kinds = await check_archive(pg, store_id, want, rnd)
    assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
    conn = await connect(pg.namespace)
    try:
        assert await _forget_headers(conn, "random() < 0.2") > 0
        kinds = await check_archive(pg, store_id, want, rnd)  # the slower way for those, the same bytes
        assert kinds.get("records", 0) > 0, kinds
        assert await pg.migrate() == TABLES_VERSION  # openkvs migrate: fills them
        assert await heads_right(conn) == (len(recs), 0)
        assert await conn.fetchval("SELECT count(*) FROM zip_head_fill") == 0
        kinds = await check_archive(pg, store_id, want, rnd)
        assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
    finally:
        await conn.close()


async def test_a_schema_at_version_8_is_upgraded_in_place_and_filled_in_the_background(schema: str) -> None:
    rnd = random.Random(6)
    storage = PostgresStorage(DSN, namespace=schema)
    await storage.open()
    try:
        store_id, recs = await fill(storage, rnd, 200)
    finally:
        await storage.aclose()
    conn = await connect(schema)
    try:
        # back to version 8: what this version added, gone
        await conn.execute(
            "DROP TABLE zip_head_fill; DROP TRIGGER records_zip_head_insert ON records;"
            "DROP TRIGGER records_zip_head_update ON records; DROP FUNCTION records_zip_head();"
            "DROP FUNCTION zip_local_header(text, bigint, bigint, timestamptz);"
            "ALTER TABLE records DROP COLUMN zip_head; UPDATE schema_version SET version = 8;" + UNDO_TOTALS_PG
        )
        storage = PostgresStorage(DSN, namespace=schema)
        await storage.open()  # migrates, then fills in the background
        try:
            assert await conn.fetchval("SELECT max(version) FROM schema_version") == TABLES_VERSION == 12
            for _ in range(600):
                if await conn.fetchval("SELECT count(*) FROM zip_head_fill") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await heads_right(conn) == (len(recs), 0)
            want = zip_reference.build_archive(await times(storage, store_id, recs))
            kinds = await check_archive(storage, store_id, want, rnd)
            assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
            # and a record written now has its header from the upsert
            await storage.put_record(store_id, "new", _body(b"fresh"), "text/plain", None)
            assert await heads_right(conn) == (len(recs) + 1, 0)
        finally:
            await storage.aclose()
    finally:
        await conn.close()


async def test_the_fill_stops_between_statements(pg: PostgresStorage) -> None:
    store_id, _ = await fill(pg, random.Random(7), 3)
    conn = await connect(pg.namespace)
    try:
        n = 3 * ZIP_HEAD_FILL + 10
        await conn.execute(  # many rows at once, copies of one
            "INSERT INTO records (store_id, key, content_type, size, decoded_size, crc32, modified_at, blob_id, "
            "chunk_size) SELECT $1, 'm' || g, 'text/plain', 0, 0, 0, now(), nextval('blob_ids'), 1048576 "
            "FROM generate_series(1, $2) g",
            store_id, n - 3,
        )
        assert await _forget_headers(conn) == n
        stop = asyncio.Event()
        steps = 0

        async def step() -> Any:
            nonlocal steps
            steps += 1
            row = await conn.fetchrow(FILL_STEP)
            if steps == 2:
                stop.set()  # asked to stop while this statement ran: it ended, then the fill stopped
            return row

        filled = await fill_zip_heads(step, stop)
        assert (steps, filled) == (2, 2 * ZIP_HEAD_FILL)
        assert await heads_right(conn) == (2 * ZIP_HEAD_FILL, n - 2 * ZIP_HEAD_FILL)
        # the next fill goes on from there
        assert await fill_zip_heads(lambda: conn.fetchrow(FILL_STEP)) == n - 2 * ZIP_HEAD_FILL
        assert await heads_right(conn) == (n, 0)
        assert await conn.fetchval("SELECT count(*) FROM zip_head_fill") == 0
    finally:
        await conn.close()


async def test_aclose_waits_for_the_fill_statement_in_flight(schema: str) -> None:
    """A storage closed while its background fill runs: the statement in flight ends (its rows filled and the
    position kept), nothing is cancelled, and the next start goes on to the end."""
    storage = PostgresStorage(DSN, namespace=schema)
    await storage.open()
    store_id, _ = await fill(storage, random.Random(8), 2)
    await storage.aclose()
    conn = await connect(schema)
    try:
        n = 20 * ZIP_HEAD_FILL
        await conn.execute(
            "INSERT INTO records (store_id, key, content_type, size, decoded_size, crc32, modified_at, blob_id, "
            "chunk_size) SELECT $1, 'm' || g, 'text/plain', 0, 0, 0, now(), nextval('blob_ids'), 1048576 "
            "FROM generate_series(1, $2) g",
            store_id, n,
        )
        await _forget_headers(conn)
        storage = PostgresStorage(DSN, namespace=schema)
        await storage.open()
        await asyncio.sleep(0.05)
        await storage.aclose()
        right, missing = await heads_right(conn)
        assert right + missing == n + 2 and right % ZIP_HEAD_FILL in (0, 2), (right, missing)
        storage = PostgresStorage(DSN, namespace=schema)
        await storage.open()
        try:
            for _ in range(600):
                if await conn.fetchval("SELECT count(*) FROM zip_head_fill") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await heads_right(conn) == (n + 2, 0)
        finally:
            await storage.aclose()
    finally:
        await conn.close()


async def test_check_finds_a_kept_header_that_does_not_match(pg: PostgresStorage) -> None:
    from openkvs.storage.postgres.check import check

    _, recs = await fill(pg, random.Random(9), 20)
    problems, summary = await check(DSN, pg.namespace)
    assert problems == [] and "kept ZIP headers agree" in summary, (problems, summary)
    conn = await connect(pg.namespace)
    try:
        await conn.execute("UPDATE records SET zip_head = overlay(zip_head PLACING '\\x00'::bytea FROM 1) "
                           "WHERE key = $1", recs[3].key)
    finally:
        await conn.close()
    problems, _ = await check(DSN, pg.namespace)
    assert len(problems) == 1 and recs[3].key in problems[0] and "kept ZIP header" in problems[0], problems
