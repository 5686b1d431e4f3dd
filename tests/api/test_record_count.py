"""The key-value store object's ``stats.recordCount`` (an openkvs extension, API.md 4.3): exact at once after
every write and delete (unlike the access counters beside it), the same in the store, the list and the official
client's objects, and described in the server's OpenAPI."""

from __future__ import annotations

import os

from apify_client import ApifyClient

from tests.conftest import Server

from . import new_store, rec_path


def test_record_count_in_the_store_object_and_the_list(shared_server: Server) -> None:
    with shared_server.client() as c:
        store = new_store(c)
        sid = store["id"]
        assert store["stats"]["recordCount"] == 0
        steps = [
            ("PUT", "a", b"one", 1),
            ("PUT", "a", b"one again", 1),  # an overwrite
            ("PUT", "big", os.urandom(300_000), 2),  # a file, chunks or an object, by backend
            ("PUT", "c", b"", 3),
            ("DELETE", "a", None, 2),
            ("DELETE", "a", None, 2),  # already gone: 204 and no change
            ("DELETE", "never-was", None, 2),
        ]
        for method, key, body, expected in steps:
            r = c.request(method, rec_path(sid, key), content=body)
            assert r.status_code in (201, 204), r.text
            got = c.get(f"/v2/key-value-stores/{sid}").json()["data"]
            assert got["stats"]["recordCount"] == expected, (method, key)
        by_name = c.get(f"/v2/key-value-stores/~{store['name']}").json()["data"]
        assert by_name["stats"]["recordCount"] == 2
        listing = c.get("/v2/key-value-stores", params={"ownership": "ownedByMe", "limit": 1000}).json()["data"]
        assert [s["stats"]["recordCount"] for s in listing["items"] if s["id"] == sid] == [2]
        keys = c.get(f"/v2/key-value-stores/{sid}/keys").json()["data"]
        assert keys["count"] == 2

    # The official client keeps the field (its models allow extra fields): a script can read it.
    client = ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1)
    got = client.key_value_store(sid).get()
    assert got is not None
    stats = got.stats if not isinstance(got, dict) else got["stats"]
    extra = stats.model_extra if hasattr(stats, "model_extra") else stats
    assert extra["recordCount"] == 2


def test_shared_and_public_readers_see_the_count(shared_server: Server) -> None:
    """The count is part of the store object whoever may read it: a user it is shared with, and anyone with its
    ID once it is public."""
    bob = shared_server.extra_tokens["bob"]
    with shared_server.client() as c:
        store = new_store(c)
        sid = store["id"]
        for key in ("x", "y", "z"):
            assert c.put(rec_path(sid, key), content=b"v").status_code == 201
        assert c.put(f"/v2/key-value-stores/{sid}/grants", json={"username": "bob", "access": "READ"}).status_code < 300
        with shared_server.client(bob) as b:
            shared = b.get("/v2/key-value-stores", params={"ownership": "sharedWithMe", "limit": 1000}).json()["data"]
            assert [s["stats"]["recordCount"] for s in shared["items"] if s["id"] == sid] == [3]
        assert c.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"}).status_code == 200
    with shared_server.anon() as anon:
        assert anon.get(f"/v2/key-value-stores/{sid}").json()["data"]["stats"]["recordCount"] == 3


def test_openapi_describes_record_count(sqlite_server: Server) -> None:
    with sqlite_server.anon() as anon:
        doc = anon.get("/v2/openapi.json").json()
    stats = doc["components"]["schemas"]["KeyValueStoreStats"]["properties"]
    assert stats["recordCount"]["type"] == "integer" and stats["recordCount"]["minimum"] == 0
    assert "openkvs extension" in stats["recordCount"]["description"]
