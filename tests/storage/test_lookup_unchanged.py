"""SQLite keeps ``look_up_store``'s answers while the database is unchanged (PRAGMA data_version): every commit,
by this storage's writer or by any other connection or process, makes the next look-up read again. What a caller
sees must be what a fresh query would give, right after each kind of change an access decision depends on."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from openkvs.storage.sqlite import SQLiteStorage

from .test_contract import new_store, put

pytestmark = pytest.mark.anyio

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


@pytest.fixture
async def sqlite_storage(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with SQLiteStorage(tmp_path / "data") as st:
        yield st


async def test_answers_follow_each_change_made_through_storage(sqlite_storage: SQLiteStorage) -> None:
    storage = sqlite_storage
    alice, store = await new_store(storage, "s")
    bob = await storage.create_user("bob")
    await put(storage, store.id, "k", b"one")

    async def look(user_id: str, key: str = "k"):  # type: ignore[no-untyped-def]
        return await storage.look_up_store(user_id, store_id=store.id, key=key, readable=ID_READ)

    for _ in range(2):  # asked twice: the second answer is the kept one
        found = await look(alice.id)
        assert storage.held_bytes(found.record) == b"one"
        assert (await look(bob.id)).record_read is False
    await put(storage, store.id, "k", b"two")  # the record replaced
    assert storage.held_bytes((await look(alice.id)).record) == b"two"
    await storage.set_grant(store.id, bob.id, False)  # a grant given
    found = await look(bob.id)
    assert (found.grant, found.record_read, storage.held_bytes(found.record)) == (False, True, b"two")
    await storage.set_grant(store.id, bob.id, True)
    assert (await look(bob.id)).grant is True
    await storage.remove_grant(store.id, bob.id)  # and taken back
    assert (await look(bob.id)).record_read is False
    await storage.update_store(store.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})  # anyone with the ID
    assert (await look(bob.id)).record_read is True
    await storage.update_store(store.id, {"url_signing_secret_key": "signing-new"})
    assert (await look(alice.id)).store.url_signing_secret_key == "signing-new"
    await storage.delete_record(store.id, "k")
    found = await look(alice.id)
    assert (found.record, found.record_read) == (None, True)
    await storage.delete_store(store.id)
    assert await look(alice.id) is None


async def test_a_commit_by_another_process_is_seen(sqlite_storage: SQLiteStorage) -> None:
    storage = sqlite_storage
    alice, store = await new_store(storage, "s")
    bob = await storage.create_user("bob")
    await put(storage, store.id, "k", b"one")
    found = await storage.look_up_store(bob.id, store_id=store.id, key="k", readable=ID_READ)
    assert found.record_read is False
    again = await storage.look_up_store(bob.id, store_id=store.id, key="k", readable=ID_READ)
    assert again.record_read is False
    # Another process (a second worker, `openkvs grants add`) commits a grant straight into the database file.
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('INSERT INTO grants(store_id, user_id, can_write) VALUES (?, ?, 0)', (sys.argv[2], sys.argv[3])); "
        "c.commit()"
    )
    subprocess.run([sys.executable, "-c", script, str(storage.db_path), store.id, bob.id], check=True, timeout=60)
    found = await storage.look_up_store(bob.id, store_id=store.id, key="k", readable=ID_READ)
    assert (found.grant, found.record_read, storage.held_bytes(found.record)) == (False, True, b"one")
    # and another connection in this process
    conn = sqlite3.connect(storage.db_path)
    conn.execute("UPDATE stores SET general_access = 'RESTRICTED', url_signing_secret_key = 'x' WHERE id = ?",
                 (store.id,))
    conn.commit()
    conn.close()
    assert (await storage.look_up_store(alice.id, store_id=store.id, key="k")).store.url_signing_secret_key == "x"
