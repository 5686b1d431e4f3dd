"""``look_up_store`` reuses the Store it made from a store row while the row reads the same (both backends): every
change to the store must show in the very next look-up, whichever field an access decision or a response uses."""

from __future__ import annotations

import pytest

from openkvs.storage.base import Storage

from .test_contract import new_store, put

pytestmark = pytest.mark.anyio

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


async def test_each_change_to_the_store_shows_in_the_next_look_up(storage: Storage) -> None:
    alice, store = await new_store(storage, "s")
    bob = await storage.create_user("bob")
    await put(storage, store.id, "k", b"one")

    async def look(user_id: str):  # type: ignore[no-untyped-def]
        return await storage.look_up_store(user_id, store_id=store.id, key="k", readable=ID_READ)

    for _ in range(2):  # the second look-up may reuse the first one's Store
        found = await look(alice.id)
        assert (found.store.name, found.store.title, found.store.general_access) == ("s", None, store.general_access)
    await storage.update_store(store.id, {"name": "renamed", "title": "A title"})
    found = await look(alice.id)
    assert (found.store.name, found.store.title) == ("renamed", "A title")
    assert (await look(bob.id)).record_read is False
    await storage.update_store(store.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})
    found = await look(bob.id)
    assert (found.store.general_access, found.record_read) == ("ANYONE_WITH_ID_CAN_READ", True)
    await storage.update_store(store.id, {"url_signing_secret_key": "signing-new"})
    assert (await look(alice.id)).store.url_signing_secret_key == "signing-new"
    storage.count_access(store.id, reads=3)
    await storage.flush_stats()
    assert (await look(alice.id)).store.stats.read_count == 3
    await put(storage, store.id, "k2", b"two")  # the store's record count and size change with its records
    found = await look(alice.id)
    assert (found.store.stats.record_count, found.store.stats.storage_bytes) == (2, 6)


async def test_two_stores_alike_but_for_their_id_stay_apart(storage: Storage) -> None:
    alice, first = await new_store(storage, "one")
    _, second = await new_store(storage, "two")
    for store in (first, second, first, second):
        found = await storage.look_up_store(alice.id, store_id=store.id)
        assert (found.store.id, found.store.name) == (store.id, store.name)
