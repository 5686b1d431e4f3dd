"""The storage side of the access decision (openkvs/access.py), on both backends: ``look_up_store`` answers like
the separate calls it replaces (get_store / get_store_by_name, get_grant, get_record) and reads a record only for
a caller who may read the store; ``user_grants`` gives a listing's grants in one call."""

from __future__ import annotations

import os
import zlib

import pytest

from openkvs.storage.base import Storage

from .conftest import Body
from .test_contract import new_store, put, read_all

pytestmark = pytest.mark.anyio

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


@pytest.mark.parametrize("size", [0, 10, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024])
async def test_the_owner_gets_store_and_record_like_the_separate_calls(storage: Storage, size: int) -> None:
    alice, store = await new_store(storage, "s")
    data = os.urandom(size)
    await put(storage, store.id, "k", data, "image/png")
    gz = zlib.compress(b"z" * 5000)
    await storage.put_record(store.id, "gz", Body([gz]), "text/plain", "deflate")

    found = await storage.look_up_store(alice.id, store_id=store.id, key="k")
    assert found is not None and found.record_read and found.grant is None
    assert found.store == await storage.get_store(store.id)
    assert found.record == await storage.get_record(store.id, "k")
    held = storage.held_bytes(found.record)
    assert held is None or held == data  # the bytes in hand exactly when they came along, never a part of them
    if size <= 1024:
        assert held == data  # a small record never needs a second read
    assert await read_all(storage, found.record) == data

    encoded = (await storage.look_up_store(alice.id, store_id=store.id, key="gz")).record
    assert encoded.content_encoding == "deflate"
    assert storage.held_bytes(encoded) in (None, gz)  # stored bytes, as uploaded
    missing = await storage.look_up_store(alice.id, store_id=store.id, key="missing")
    assert (missing.store, missing.record, missing.record_read) == (found.store, None, True)
    # by name (case-insensitive), as get_store_by_name
    by_name = await storage.look_up_store(alice.id, owner_id=alice.id, name="S", key="k")
    assert (by_name.store, by_name.record) == (found.store, found.record)
    assert await storage.look_up_store(alice.id, store_id="NoSuchStore000000", key="k") is None
    assert await storage.look_up_store(alice.id, owner_id=alice.id, name="nope") is None
    await storage.delete_store(store.id)
    assert await storage.look_up_store(alice.id, store_id=store.id, key="k") is None


async def test_a_record_is_read_only_for_who_may_read_the_store(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    bob = await storage.create_user("bob")
    carol = await storage.create_user("carol")
    await put(storage, store.id, "k", b"secret")
    await storage.set_grant(store.id, carol.id, True)

    def seen(found) -> tuple:
        return found.grant, found.record_read, found.record.key if found.record else None

    # no grant, a restricted store: the store alone, the record untouched (nobody's, or another user's)
    for user_id in (bob.id, None):
        found = await storage.look_up_store(user_id, store_id=store.id, key="k", readable=ID_READ)
        assert found.store == await storage.get_store(store.id)
        assert seen(found) == (None, False, None)
    # a grant: its level, and the record
    assert seen(await storage.look_up_store(carol.id, store_id=store.id, key="k")) == (True, True, "k")
    await storage.set_grant(store.id, carol.id, False)
    assert seen(await storage.look_up_store(carol.id, store_id=store.id, key="k")) == (False, True, "k")
    assert seen(await storage.look_up_store(carol.id, store_id=store.id)) == (False, False, None)  # no key asked
    # generalAccess: the record for anyone when the level is one that lets this address read
    await storage.update_store(store.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})
    for user_id in (bob.id, None):
        assert seen(await storage.look_up_store(user_id, store_id=store.id, key="k", readable=ID_READ)) == (
            None, True, "k")
        assert seen(await storage.look_up_store(user_id, store_id=store.id, key="k", readable=())) == (
            None, False, None)
    await storage.update_store(store.id, {"general_access": "FOLLOW_USER_SETTING"})
    follow = ("FOLLOW_USER_SETTING",)  # a server whose default opens stores
    assert seen(await storage.look_up_store(None, store_id=store.id, key="k", readable=follow)) == (None, True, "k")
    assert seen(await storage.look_up_store(None, store_id=store.id, key="k", readable=ID_READ)) == (
        None, False, None)


async def test_user_grants_answers_like_get_grant_for_each_store(storage: Storage) -> None:
    alice, mine = await new_store(storage, "mine")
    bob = await storage.create_user("bob")
    _, read = await new_store(storage, "read", "carol")
    _, write = await new_store(storage, "write", "carol")
    _, other = await new_store(storage, "other", "carol")
    await storage.set_grant(read.id, alice.id, False)
    await storage.set_grant(write.id, alice.id, True)
    await storage.set_grant(other.id, bob.id, True)  # someone else's grant
    ids = [mine.id, read.id, write.id, other.id, "NoSuchStore000000"]
    grants = await storage.user_grants(alice.id, ids)
    assert grants == {s: g for s in ids if (g := await storage.get_grant(s, alice.id)) is not None}
    assert {s: g.can_write for s, g in grants.items()} == {read.id: False, write.id: True}
    assert await storage.user_grants(alice.id, []) == {}
    assert await storage.user_grants(bob.id, ids) == {other.id: await storage.get_grant(other.id, bob.id)}
