"""A PostgreSQL snapshot read on after one of its reads was cancelled in the middle of its query, as a Range
request's prefetch is when the range ends: the snapshot's transaction must not be aborted by it (asyncpg asks
PostgreSQL to cancel a cancelled query, which aborts the transaction it runs in)."""
# ruff: noqa: F811  (the fixtures of test_postgres.py, imported, are the parameters of these tests)

from __future__ import annotations

import asyncio
import secrets

import pytest

from openkvs.storage.base import KeySelection
from openkvs.storage.postgres import PostgresStorage
from tests.storage.test_postgres import (  # noqa: F401  (fixtures)
    admin,
    nodes,
    pg_reachable,
    schema,
    storage,
)

from .conftest import Body

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_read_cancelled_mid_query_leaves_the_snapshot_readable(storage: PostgresStorage, admin) -> None:
    user = await storage.create_user("cancel")
    store = await storage.create_store(user.id, "s", None, "k")
    for key in ("a", "b", "c"):
        await storage.put_record(store.id, key, Body(key.encode() * 100), "text/plain", None)
    mark = secrets.token_hex(8)  # this test's query, told apart from every other worker's
    async with storage.snapshot(store.id, KeySelection()) as snap:
        slow = asyncio.ensure_future(snap._fetch(f"SELECT pg_sleep(1), '{mark}'", ()))  # type: ignore[attr-defined]
        # Cancelled only once PostgreSQL is running it (seen from another connection), so that it is mid-query.
        while not await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", f"%pg_sleep(1), '{mark}'%"
        ):
            await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        metas = [m async for batch in snap.records() for m in batch]
        assert [m.key for m in metas] == ["a", "b", "c"]
        assert b"".join([p async for p in snap.read_blob(metas[0])]) == b"a" * 100
