"""Fixtures for the storage contract suite: one ``storage`` fixture, parametrized over the backends.

Every test gets an empty database. SQLite: a fresh data_dir. PostgreSQL: ``PostgresStorage`` from
``openkvs.storage.postgres`` on ``OPENKVS_TEST_DATABASE_URL``, isolated in a schema of its own per test (the
backend's ``namespace=`` option; migrated and emptied by tests/pgschemas.py, which empties it again for a later
test) or, failing that, wiped by its ``reset()`` method. Where PostgreSQL cannot be used
the postgres tests skip with the reason, except under CI (env ``CI`` set), where a skip is a failure.
"""

from __future__ import annotations

import inspect
import os
import secrets
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openkvs.storage.base import Storage
from openkvs.storage.ids import new_id
from tests.conftest import unavailable

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def two_pg_nodes(bucket: bool = False) -> AsyncIterator[tuple[Any, Any, str]]:
    """Two PostgreSQL storages (two connection pools, as two openkvs nodes) on one new schema, record bytes in a
    bucket of that schema's name if ``bucket``: (a, b, schema). The test is skipped if PostgreSQL (or the bucket)
    is not there; the schema, and the bucket's objects, are removed at the end."""
    pg = pytest.importorskip("openkvs.storage.postgres")
    from tests.conftest import postgres_reachable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", DEFAULT_PG_URL)
    schema = "t_" + secrets.token_hex(6)

    def node() -> Any:
        blob_store = None
        if bucket:
            from openkvs.storage.bucket import S3BlobStore
            from tests.conftest import S3_ENDPOINT, s3_env

            url = s3_env(schema)["OPENKVS_BLOB_STORE"]
            blob_store = S3BlobStore(url, endpoint=S3_ENDPOINT, path_style=True, inline_max=16 * 1024)
        return pg.PostgresStorage(dsn, namespace=schema, max_pool=6, blob_store=blob_store)

    a, b = node(), node()
    try:
        try:
            await a.open()
            await b.open()
        except Exception as exc:
            unavailable(f"cannot open the two nodes: {exc!r}")
        yield a, b, schema
    finally:
        await a.aclose()
        await b.aclose()
        await pg.PostgresStorage(dsn, namespace=schema).drop()
        if bucket:
            import anyio

            from tests.conftest import s3_clear

            await anyio.to_thread.run_sync(s3_clear, schema)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _postgres(request: pytest.FixtureRequest, bucket: bool = False) -> AsyncIterator[Storage]:
    try:
        from openkvs.storage import postgres
    except ImportError as exc:
        unavailable(f"openkvs.storage.postgres does not import: {exc}")
    cls = getattr(postgres, "PostgresStorage", None)
    if cls is None:
        unavailable("openkvs.storage.postgres has no PostgresStorage")
    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", DEFAULT_PG_URL)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(cls).parameters
    from tests import pgschemas

    schema = f"test_{new_id().lower()}"
    if "namespace" in params:
        try:
            schema = kwargs["namespace"] = await pgschemas.take(dsn)
        except Exception as exc:  # server down, wrong DSN
            unavailable(f"cannot make a schema on {dsn!r}: {exc!r}")
    if "gc_grace_seconds" in params:
        kwargs["gc_grace_seconds"] = 60.0
    if bucket:  # record bytes above 16 KiB in the test bucket, so that the contract's big records are objects
        from openkvs.storage.bucket import S3BlobStore
        from tests.conftest import S3_ENDPOINT, s3_env

        prefix = f"p_{new_id().lower()}"  # its own: the schema may have served an earlier test
        url = s3_env(prefix)["OPENKVS_BLOB_STORE"]
        kwargs["blob_store"] = S3BlobStore(url, endpoint=S3_ENDPOINT, path_style=True, inline_max=16 * 1024)
    storage = cls(dsn, **kwargs)
    try:
        await storage.open()
    except Exception as exc:  # server down, wrong DSN
        unavailable(f"cannot open PostgresStorage({dsn!r}): {exc!r}")
    try:
        if "namespace" not in kwargs:
            reset = getattr(storage, "reset", None)
            if reset is None:
                await storage.aclose()
                unavailable("PostgresStorage has neither a namespace= option nor reset(): no per-test isolation")
            await reset()
        yield storage
    finally:
        await storage.aclose()
        if "namespace" in kwargs:
            await pgschemas.give_back(dsn, schema)
        if bucket:
            import anyio

            from tests.conftest import s3_clear

            await anyio.to_thread.run_sync(s3_clear, prefix)


async def _sqlite_bucket(tmp_path: Path) -> AsyncIterator[Storage]:
    """SQLite with record bytes above 16 KiB in the test bucket, under a prefix of its own."""
    import anyio

    from openkvs.storage.bucket import S3BlobStore
    from openkvs.storage.sqlite import SQLiteStorage
    from tests.conftest import S3_ENDPOINT, s3_clear, s3_env

    prefix = f"l_{new_id().lower()}"
    url = s3_env(prefix)["OPENKVS_BLOB_STORE"]
    blobs = S3BlobStore(url, endpoint=S3_ENDPOINT, path_style=True, inline_max=16 * 1024)
    try:
        async with SQLiteStorage(tmp_path / "data", blob_store=blobs) as st:
            yield st
    finally:
        await anyio.to_thread.run_sync(s3_clear, prefix)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres+s3", marks=pytest.mark.postgres),
        "sqlite+s3",
    ]
)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        from openkvs.storage.sqlite import SQLiteStorage

        async with SQLiteStorage(tmp_path / "data") as st:
            yield st
    elif request.param == "sqlite+s3":
        async for st in _sqlite_bucket(tmp_path):
            yield st
    else:
        async for st in _postgres(request, bucket=request.param == "postgres+s3"):
            yield st


class Body:
    """A RecordBody for tests: yields ``chunks`` (identity encoding), counting and checksumming as it goes.
    With ``fail_after=n`` it raises ``BodyAborted`` after yielding n chunks."""

    def __init__(self, chunks: Iterable[bytes] | bytes, *, fail_after: int | None = None) -> None:
        self.chunks = [chunks] if isinstance(chunks, bytes) else list(chunks)
        self.fail_after = fail_after
        self.decoded_size = 0
        self.crc32 = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i >= self.fail_after:
                raise BodyAborted("client went away")
            self.decoded_size += len(chunk)
            self.crc32 = zlib.crc32(chunk, self.crc32)
            yield chunk
        if self.fail_after is not None and self.fail_after >= len(self.chunks):
            raise BodyAborted("client went away")


class BodyAborted(Exception):
    pass


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# What version 10 added (each store's ZIP totals), dropped again: SQL for a database (SQLite) or schema (PostgreSQL)
# taken back to an older version by an upgrade test: STORE_TOTALS but the first, and totals_generation.
_TOTALS = ("key_bytes", "decoded_bytes", "zip64_count", "large_count", "totals_generation")
UNDO_TOTALS_SQLITE = "".join(f"ALTER TABLE stores DROP COLUMN {c};" for c in _TOTALS)
UNDO_TOTALS_PG = "".join(f"ALTER TABLE stores DROP COLUMN {c};" for c in _TOTALS) + (
    "ALTER TABLE records DROP COLUMN prev_decoded_size;"
)
# What SQLite's version 11 added (dataset items several to a row), dropped again (its rows must hold one item each)
UNDO_PACKED_ROWS_SQLITE = "ALTER TABLE dataset_items DROP COLUMN n;"
