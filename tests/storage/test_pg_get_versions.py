"""PostgreSQL's look-ups by ID send the version of the Store they hold (storage/postgres/lookups.StoreVersions) and
get the store's columns only when its rows changed: whatever another node changes (the store, its owner's name,
its access, a grant, its records) shows in this node's very next look-up, alone or in a burst; record keys with
the characters an array literal quotes come back as they were written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import two_pg_nodes
from .test_contract import new_store, put

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


async def look(node: Any, user_id: str | None, store_id: str, key: str | None = "k", burst: int = 1) -> Any:
    """The look-up alone (burst 1), or the last of ``burst`` look-ups of other keys asked together: the first of a
    burst is asked alone, the others wait for it and are then asked by one statement (tables.LOOKUP_MANY), whose
    held-version path is the one to check. (test_pg_get_records_held uses it too.)"""
    if burst == 1:
        return await node.look_up_store(user_id, store_id=store_id, key=key, readable=ID_READ)
    keys = [*(f"other{i}" for i in range(burst - 1)), key]
    found = await asyncio.gather(
        *(node.look_up_store(user_id, store_id=store_id, key=k, readable=ID_READ) for k in keys)
    )
    return found[-1]


@pytest.mark.parametrize("burst", [1, 6])
async def test_a_change_on_another_node_shows_in_the_next_look_up(burst: int) -> None:
    async with two_pg_nodes() as (a, b, _):
        alice, store = await new_store(a, "s")
        bob = await a.create_user("bob")
        await put(a, store.id, "k", b"one")
        for _ in range(3):  # held by now
            found = await look(a, alice.id, store.id, burst=burst)
            assert (found.store.name, found.store.username, found.record.size) == ("s", "alice", 3)
        await b.update_store(store.id, {"name": "renamed", "title": "T"})
        found = await look(a, alice.id, store.id, burst=burst)
        assert (found.store.name, found.store.title) == ("renamed", "T")
        assert (await look(a, bob.id, store.id, burst=burst)).record_read is False
        await b.update_store(store.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})
        found = await look(a, bob.id, store.id, burst=burst)
        assert (found.store.general_access, found.record_read, found.grant) == ("ANYONE_WITH_ID_CAN_READ", True, None)
        await b.set_grant(store.id, bob.id, True)
        assert (await look(a, bob.id, store.id, burst=burst)).grant is True
        await put(b, store.id, "k", b"second")
        found = await look(a, alice.id, store.id, burst=burst)
        assert (found.record.size, found.store.stats.storage_bytes) == (6, 6)
        async with b._p().acquire() as conn:  # the owner's name, which the look-up joins, changed elsewhere
            await conn.execute("UPDATE users SET username = 'alice2' WHERE id = $1", alice.id)
        assert (await look(a, alice.id, store.id, burst=burst)).store.username == "alice2"
        await b.delete_store(store.id)
        assert await look(a, alice.id, store.id, burst=burst) is None


async def test_a_store_held_too_long_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from openkvs.storage.postgres import lookups

    async with two_pg_nodes() as (a, _, _):
        alice, store = await new_store(a, "s")
        first = (await look(a, alice.id, store.id, key=None)).store
        assert (await look(a, alice.id, store.id, key=None)).store is first  # held and sent: the same Store
        monkeypatch.setattr(lookups, "HELD_SECONDS", -1.0)
        again = (await look(a, alice.id, store.id, key=None)).store
        assert again is not first and again == first


@pytest.mark.parametrize("burst", [1, 6])
async def test_keys_an_array_literal_quotes_are_found(burst: int) -> None:
    keys = ['a"b', "back\\slash", "x,y", "{}", "NULL", " sp ", "é☃", "'q'"]
    async with two_pg_nodes() as (a, _, _):
        alice, store = await new_store(a, "s")
        for i, key in enumerate(keys):
            await put(a, store.id, key, bytes([i + 1]) * (i + 1))
        for i, key in enumerate(keys):
            found = await look(a, alice.id, store.id, key=key, burst=burst)
            assert (found.record.key, found.record.size) == (key, i + 1)
            assert a.held_bytes(found.record) == bytes([i + 1]) * (i + 1)
        assert (await look(a, alice.id, store.id, key="NULL ", burst=burst)).record is None


async def test_a_look_up_after_its_tables_changed_under_its_prepared_statement() -> None:
    """The look-ups by ID run prepared once per connection (connections._Direct.fetchrow): after a change of a
    column's type that the statement returns (a migration run by another node), the next look-up still answers."""
    async with two_pg_nodes() as (a, b, _):
        alice, store = await new_store(a, "s")
        await put(a, store.id, "k", b"one")
        for _ in range(8):  # prepared on the connections that served them
            assert (await look(a, alice.id, store.id)).record.content_type == "application/octet-stream"
        async with b._p().acquire() as conn:
            await conn.execute("ALTER TABLE records ALTER COLUMN content_type TYPE varchar(200)")
        for _ in range(8):
            assert (await look(a, alice.id, store.id)).record.content_type == "application/octet-stream"


async def test_a_look_up_after_the_server_dropped_its_connections() -> None:
    async with two_pg_nodes() as (a, b, schema):
        alice, store = await new_store(a, "s")
        await put(a, store.id, "k", b"one")
        for _ in range(8):
            await look(a, alice.id, store.id)
        async with b._p().acquire() as conn:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 "
                "AND pid <> pg_backend_pid()", a.application_name)
        assert ended >= 1
        await asyncio.sleep(0.2)
        for _ in range(8):
            assert (await look(a, alice.id, store.id)).record.size == 3
