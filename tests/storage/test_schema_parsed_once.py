"""A store's schema is parsed once per store and schema text (storage/schemas.py), not at every look-up that reads
the store row again: a schema may be megabytes, and the parse ran on the event loop (on PostgreSQL, asyncpg's
jsonb codec), stalling every other request. A changed schema must still show in the very next look-up."""

from __future__ import annotations

from typing import Any

import pytest

from openkvs.storage.base import DATASET, Storage

from .test_contract import put

pytestmark = pytest.mark.anyio


def kvs_schema(properties: int, title: str = "t") -> dict[str, Any]:
    props = {f"p{i}": {"type": "string", "maxLength": 10} for i in range(properties)}
    collection = {"title": "c", "contentTypes": ["application/json"], "keyPrefix": "c-"}
    collection["jsonSchema"] = {"type": "object", "properties": props}
    return {"actorKeyValueStoreSchemaVersion": 1, "title": title, "collections": {"c": collection}}


async def test_twenty_put_and_look_up_pairs_parse_the_schema_once(storage: Storage) -> None:
    user = await storage.create_user("alice")
    schema = kvs_schema(2000)
    store = await storage.create_store(user.id, "big", schema, "signing")
    seen = []
    for i in range(20):  # each write changes the store row (generation, size), so each look-up reads it again
        await put(storage, store.id, "x", b"v%d" % i)
        found = await storage.look_up_store(user.id, store_id=store.id, key="x")
        assert found.record is not None and found.store.generation > store.generation
        seen.append(found.store.schema)
        found = await storage.look_up_store(user.id, owner_id=user.id, name="big")  # by name: no held version
        seen.append(found.store.schema)
    assert seen[0] == schema
    # One parse: every Store made from the same text holds the same parsed value (a parse makes a new one).
    assert all(s is seen[0] for s in seen)


async def test_a_changed_schema_shows_in_the_next_look_up(storage: Storage) -> None:
    user = await storage.create_user("alice")
    store = await storage.create_store(user.id, "s", kvs_schema(3, "before"), "signing")
    dataset = await storage.create_store(user.id, "d", {"actorSpecification": 1, "title": "one"}, "s", kind=DATASET)
    for _ in range(2):  # the second look-up may reuse the first one's Store and schema
        found = await storage.look_up_store(user.id, store_id=store.id)
        assert found.store.schema["title"] == "before"
        found = await storage.look_up_store(user.id, store_id=dataset.id, kind=DATASET)
        assert found.store.schema["title"] == "one"
    await storage.update_store(store.id, {"schema": kvs_schema(3, "after")})
    await storage.update_store(dataset.id, {"schema": {"actorSpecification": 1, "title": "two"}})
    assert (await storage.look_up_store(user.id, store_id=store.id)).store.schema["title"] == "after"
    found = await storage.look_up_store(user.id, store_id=dataset.id, kind=DATASET)
    assert found.store.schema["title"] == "two"
    await storage.update_store(store.id, {"schema": None})
    assert (await storage.look_up_store(user.id, store_id=store.id)).store.schema is None
    assert (await storage.get_store(store.id)).schema is None  # type: ignore[union-attr]
