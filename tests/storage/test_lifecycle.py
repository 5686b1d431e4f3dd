"""Migrations and garbage collection on the ``Storage`` interface, the same for both backends: ``migrate``,
``collect_garbage(grace=)`` and ``drop`` (what ``openkvs migrate`` and the tests use, without asking which backend
it is)."""

from __future__ import annotations

import pytest

from openkvs.storage.base import Storage

from .conftest import Body, chunked

pytestmark = pytest.mark.anyio

BIG = 300 * 1024  # spilled to a file on SQLite, several chunks on PostgreSQL


async def test_migrate_returns_the_version_and_is_idempotent(storage: Storage) -> None:
    first = await storage.migrate()
    assert isinstance(first, int) and first >= 1
    assert await storage.migrate() == first
    user = await storage.create_user("after-migrate")  # still open and usable
    assert (await storage.get_user_by_name("after-migrate")) == user


async def test_collect_garbage_with_no_grace_reclaims_at_once(storage: Storage) -> None:
    user = await storage.create_user("gc")
    store = await storage.create_store(user.id, "gc", None, "k")
    await storage.put_record(store.id, "k", Body(chunked(b"a" * BIG)), "application/octet-stream", None)
    await storage.put_record(store.id, "k", Body(chunked(b"b" * BIG)), "application/octet-stream", None)
    assert await storage.collect_garbage() == 0  # within the configured grace period
    assert await storage.collect_garbage(grace=0) >= 1
    assert await storage.collect_garbage(grace=0) == 0
    record = await storage.get_record(store.id, "k")
    assert record is not None
    assert b"".join([c async for c in storage.read_blob(record)]) == b"b" * BIG


async def test_drop_deletes_everything(storage: Storage) -> None:
    user = await storage.create_user("dropped")
    store = await storage.create_store(user.id, "s", None, "k")
    await storage.put_record(store.id, "k", Body(chunked(b"x" * BIG)), "application/octet-stream", None)
    await storage.aclose()
    await storage.drop()
    await storage.open()  # starts afresh
    assert await storage.get_user_by_name("dropped") is None
    assert await storage.get_store(store.id) is None
