"""SQLite's ``look_up_store`` runs on the event loop's own connection without ``point_read``'s coroutine; when
that connection fails it still takes ``point_read``'s ways: a busy or locked database is asked again from a
worker thread (the same answer as a fresh query), any other error is translated like every storage error."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from openkvs.storage.base import StorageDamaged
from openkvs.storage.sqlite import SQLiteStorage
from tests.storage.test_contract import new_store, put

pytestmark = pytest.mark.anyio

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


class _Failing:
    """The event loop's connection, failing its next statements with ``message`` (a sqlite3.Connection's own
    methods cannot be replaced)."""

    def __init__(self, conn: sqlite3.Connection, message: str) -> None:
        self.conn = conn
        self.message = message
        self.failed = 0

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, *args: Any) -> Any:
        self.failed += 1
        raise sqlite3.OperationalError(self.message)


@pytest.fixture
async def storage(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with SQLiteStorage(tmp_path / "data") as st:
        yield st


async def _world(storage: SQLiteStorage):  # type: ignore[no-untyped-def]
    alice, store = await new_store(storage, "s")
    await put(storage, store.id, "k", b"one")
    found = await storage.look_up_store(alice.id, store_id=store.id, key="k", readable=ID_READ)
    assert storage._db._loop_conn is not None  # the event loop's connection is open from here on
    return alice, store, found


@pytest.mark.parametrize("message", ["database is locked", "database table is busy"])
async def test_a_busy_loop_connection_is_asked_again_from_a_thread(storage: SQLiteStorage, message: str) -> None:
    alice, store, fresh = await _world(storage)
    await put(storage, store.id, "k", b"two")  # a commit: the kept answer is not the one to give
    conn = storage._db._loop_conn
    assert conn is not None
    failing = storage._db._loop_conn = _Failing(conn, message)  # type: ignore[assignment]
    try:
        found = await storage.look_up_store(alice.id, store_id=store.id, key="k", readable=ID_READ)
    finally:
        storage._db._loop_conn = conn
    assert failing.failed == 1
    assert found is not None and found.store.id == store.id and found.record_read
    assert storage.held_bytes(found.record) == b"two"
    assert found.store.user_id == fresh.store.user_id


async def test_another_error_of_the_loop_connection_is_translated(storage: SQLiteStorage) -> None:
    alice, store, _ = await _world(storage)
    conn = storage._db._loop_conn
    assert conn is not None
    storage._db._loop_conn = _Failing(conn, "database disk image is malformed")  # type: ignore[assignment]
    try:
        with pytest.raises(StorageDamaged):
            await storage.look_up_store(alice.id, store_id=store.id, key="k", readable=ID_READ)
    finally:
        storage._db._loop_conn = conn
