"""Record GET has one path (the router, openkvs.access.decide, records._get_record) and asks storage once per
request whatever the caller and the record's size: the store, the caller's grant and the record come in one
query when the caller may read them. Counted here per kind of request, in process, on both backends; what the
answers look like on the wire is tests/api/test_records.py's and test_access.py's job."""

from __future__ import annotations

import os
from typing import Any

import pytest

from openkvs import auth, signing
from openkvs.storage.base import Storage

from .inprocess import CountingStorage, app_client
from .storage.conftest import Body, chunked, storage  # noqa: F401 - the fixture, over both backends

pytestmark = pytest.mark.anyio

BIG = os.urandom(64 * 1024 + 1)  # past what comes along with the lookup


async def _world(backend: Storage) -> dict[str, Any]:
    """alice owns a restricted store (bob may read it) and a store anyone with its ID may read; carol has no
    grant. Each has a token."""
    tokens = {}
    users = {}
    for name in ("alice", "bob", "carol"):
        users[name] = await backend.create_user(name)
        tokens[name] = auth.new_token()
        await backend.add_token(users[name].id, auth.hash_token(tokens[name]))
    alice = users["alice"].id
    private = await backend.create_store(alice, "private", None, auth.new_signing_key())
    public = await backend.create_store(alice, "public", None, auth.new_signing_key())
    await backend.update_store(public.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})
    await backend.set_grant(private.id, users["bob"].id, False)
    for store in (private, public):
        await backend.put_record(store.id, "small", Body([b"hello"]), "text/plain", None)
        await backend.put_record(store.id, "big", Body(chunked(BIG)), "application/octet-stream", None)
    return {"tokens": tokens, "private": private, "public": public}


@pytest.fixture
async def world(storage: Storage):  # noqa: F811 - the imported fixture
    counting = CountingStorage(storage)
    w = await _world(storage)
    async with app_client(counting) as (client, _):
        for token in w["tokens"].values():  # the token cache is warm, as it is for a client's second request
            assert (await client.get("/v2/key-value-stores", headers=_bearer(token))).status_code == 200
        yield client, counting, w


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _get(world, caller: str | None, store: str, key: str, **params: str) -> tuple[Any, list[str]]:
    client, counting, w = world
    store_ref = w[store].id if store in ("private", "public") else store
    counting.calls.clear()
    r = await client.get(f"/v2/key-value-stores/{store_ref}/records/{key}", params=params,
                         headers=_bearer(w["tokens"].get(caller) if caller else None))
    return r, list(counting.calls)


async def test_the_owner_asks_storage_once_whatever_the_record(world) -> None:
    r, calls = await _get(world, "alice", "private", "small")
    assert (r.status_code, r.content, calls) == (200, b"hello", ["look_up_store"])
    r, calls = await _get(world, "alice", "private", "big")
    assert (r.status_code, r.content) == (200, BIG)
    assert calls.count("look_up_store") == 1 and set(calls) <= {"look_up_store", "read_blob"}, calls
    r, calls = await _get(world, "alice", "private", "missing")
    assert (r.status_code, r.json()["error"]["type"], calls) == (404, "record-not-found", ["look_up_store"])
    r, calls = await _get(world, "alice", "NoSuchStore000000", "small")
    assert (r.status_code, calls) == (404, ["look_up_store"])
    r, calls = await _get(world, "alice", "~private", "small")  # by the caller's own store name
    assert (r.status_code, r.content, calls) == (200, b"hello", ["look_up_store"])


async def test_others_ask_storage_once_too(world) -> None:
    r, calls = await _get(world, "bob", "private", "small")  # a read grant
    assert (r.status_code, r.content, calls) == (200, b"hello", ["look_up_store"])
    for caller in ("carol", None):  # generalAccess, with and without a token
        r, calls = await _get(world, caller, "public", "small")
        assert (r.status_code, r.content, calls) == (200, b"hello", ["look_up_store"]), caller
    r, calls = await _get(world, "carol", "private", "small")  # no access: nothing of the record is read
    assert (r.status_code, calls) == (403, ["look_up_store"])
    r, calls = await _get(world, None, "private", "small")
    assert (r.status_code, calls) == (401, ["look_up_store"])


async def test_a_signed_read_asks_for_the_record_once_the_signature_is_checked(world) -> None:
    w = world[2]
    signature = signing.record_signature(w["private"].url_signing_secret_key, "small")
    r, calls = await _get(world, None, "private", "small", signature=signature)
    assert (r.status_code, r.content, calls) == (200, b"hello", ["look_up_store", "get_record"])
    r, calls = await _get(world, None, "private", "small", signature=signature[:-2] + "xx")
    assert (r.status_code, calls) == (403, ["look_up_store"])


async def test_an_address_no_store_can_have_asks_nothing(world) -> None:
    r, calls = await _get(world, "alice", "no-such-id!", "small")
    assert (r.status_code, calls) == (404, [])


async def test_a_listing_asks_for_the_callers_grants_once(world) -> None:
    """Not one grant lookup per listed store."""
    client, counting, w = world
    backend = counting.inner
    carol = await backend.get_user_by_name("carol")
    shared = []
    for i in range(5):
        store = await backend.create_store(carol.id, f"shared-{i}", None, auth.new_signing_key())
        await backend.set_grant(store.id, (await backend.get_user_by_name("bob")).id, i % 2 == 0)
        shared.append(store.id)
    counting.calls.clear()
    r = await client.get("/v2/key-value-stores", headers=_bearer(w["tokens"]["bob"]))
    items = {s["id"]: s for s in r.json()["data"]["items"]}
    assert set(shared) <= set(items) and w["private"].id in items
    # the signing key goes to who may write: bob's WRITE grants, not his READ ones
    assert {sid for sid in shared if "urlSigningSecretKey" in items[sid]} == set(shared[0::2])
    assert "urlSigningSecretKey" not in items[w["private"].id]
    assert len(counting.calls) == 2, counting.calls
