"""Uploads longer than the intent's expiry (bucket/uploads.py), on both metadata backends with a real S3 bucket: the
running upload renews its intent, so the sweeper leaves it alone however long it takes; an upload whose intent
was swept all the same (its process could not renew it) fails instead of committing, and leaves nothing behind.
The time is an injected clock (the renewals' and the sweeper's), not an hour of waiting."""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from openkvs.storage.base import StorageUnavailable
from openkvs.storage.bucket import PART_SIZE
from openkvs.storage.bucket.uploads import UPLOAD_EXPIRY_SECONDS

from .conftest import Body, _postgres, _sqlite_bucket

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param("postgres+s3", marks=pytest.mark.postgres), "sqlite+s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite+s3":
        async for st in _sqlite_bucket(tmp_path):
            yield st
    else:
        async for st in _postgres(request, bucket=True):
            yield st


class Gated:
    """A request body that sends ``first``, then waits for ``gate`` (a client that pauses), then sends ``rest``."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.gate = anyio.Event()
        self.waiting = anyio.Event()
        self.decoded_size = self.crc32 = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate((self.first, self.rest)):
            if i:
                self.waiting.set()
                await self.gate.wait()
            self.decoded_size += len(piece)
            self.crc32 = zlib.crc32(piece, self.crc32)
            yield piece


async def fsck(storage: Any) -> Any:
    if type(storage).__name__ == "SQLiteStorage":
        from openkvs.storage.sqlite.objects_admin import fsck as check
    else:
        from openkvs.storage.postgres.blobs import fsck as check
    return await check(storage)


async def read(storage: Any, key_store: tuple[str, str]) -> bytes:
    meta = await storage.get_record(*key_store)
    return b"".join([p async for p in storage.read_blob(meta)])


async def new_store(s: Any) -> str:
    user = await s.create_user("alice")
    return str((await s.create_store(user.id, None, None, "k")).id)


async def paused_put(s: Any, store: str, body: Gated, minutes: int, renew: bool) -> dict[str, Any]:
    """PUT ``body`` and, while it waits for its gate, let ``minutes`` pass in steps of ten: each step the
    background work of the process (renewing its uploads' intents, if ``renew``) and a garbage collection of
    another process at that time. Returns {"meta": ...} or {"error": ...}."""
    clock = [datetime.now(UTC)]
    s.uploads.clock = lambda: clock[0]
    out: dict[str, Any] = {}

    async def put() -> None:
        try:
            out["meta"] = await s.put_record(store, "k", body, "application/octet-stream", None)
        except Exception as exc:
            out["error"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(put)
        with anyio.fail_after(60):
            await body.waiting.wait()
        for _ in range(minutes // 10):
            clock[0] += timedelta(minutes=10)
            if renew:
                await s.uploads.renew()
            out.setdefault("swept", 0)
            out["swept"] += await s.collect_garbage(now=clock[0])
        body.gate.set()
    return out


async def test_an_upload_longer_than_the_expiry_keeps_its_intent_and_commits(storage) -> None:
    assert UPLOAD_EXPIRY_SECONDS <= 3600  # the 90 minutes below are longer
    s = storage
    store = await new_store(s)
    first, rest = os.urandom(PART_SIZE + 1000), os.urandom(1000)  # a multipart upload, paused after part one
    out = await paused_put(s, store, Gated(first, rest), minutes=90, renew=True)
    assert "error" not in out, out
    assert out["swept"] == 0
    assert await read(s, (store, "k")) == first + rest
    report = await fsck(s)
    assert (report.records_in_bucket, report.orphans, report.missing) == (1, [], [])


async def test_an_upload_whose_intent_was_swept_fails_and_leaves_nothing(storage) -> None:
    """What a long upload did before intents were renewed, and still does if its process cannot renew them."""
    s = storage
    store = await new_store(s)
    old = os.urandom(100_000)
    await s.put_record(store, "k", Body(old), "application/octet-stream", None)
    out = await paused_put(s, store, Gated(os.urandom(PART_SIZE + 1000), b"end"), minutes=70, renew=False)
    assert out["swept"] == 1
    assert isinstance(out.get("error"), StorageUnavailable), out  # a 503: the client retries
    assert await read(s, (store, "k")) == old  # the old record stands
    report = await fsck(s)
    assert (report.objects, report.records_in_bucket, report.orphans, report.missing) == (1, 1, [], [])
