"""The official apify-client (sync and async) against openkvs: what real users run."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from apify_client import ApifyClient, ApifyClientAsync

from . import unique


def _get(obj, name):
    """Field of a client model (pydantic, snake_case) or a dict (camelCase)."""
    if isinstance(obj, dict):
        camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
        return obj.get(name, obj.get(camel))
    return getattr(obj, name)


@pytest.fixture(scope="module")
def client(shared_server) -> ApifyClient:
    return ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1)


def test_store_lifecycle(shared_server, client):
    name = unique("oc")
    stores = client.key_value_stores()
    created = stores.get_or_create(name=name)
    sid = _get(created, "id")
    assert _get(created, "name") == name
    again = stores.get_or_create(name=name)
    assert _get(again, "id") == sid
    got = client.key_value_store(sid).get()
    assert got is not None and _get(got, "id") == sid
    assert _get(got, "created_at") is not None and _get(got, "created_at").tzinfo is not None
    assert client.key_value_store("AAAAAAAAAAAAAAAAA").get() is None
    listed = stores.list(limit=1000)
    assert sid in [_get(s, "id") for s in _get(listed, "items")]
    assert _get(stores.list(limit=1, desc=True), "count") == 1
    new_name = unique("oc2")
    updated = client.key_value_store(sid).update(name=new_name, general_access="RESTRICTED")
    assert _get(updated, "name") == new_name
    assert str(_get(updated, "general_access")).endswith("RESTRICTED")
    # by name too
    assert _get(client.key_value_store(f"alice~{new_name}").get(), "id") == sid
    client.key_value_store(sid).delete()
    assert client.key_value_store(sid).get() is None


def test_records(shared_server, client):
    sid = _get(client.key_value_stores().get_or_create(name=unique("oc")), "id")
    kvs = client.key_value_store(sid)
    big_text = "lorem ipsum dolor " * 20_000  # big enough that the client compresses the body
    big_bytes = os.urandom(300_000)
    values = {
        "dict": {"a": 1, "nested": {"b": [1, 2, 3]}, "ü": "ünï"},
        "bigdict": {"items": list(range(50_000))},
        "str": "hello",
        "bigstr": big_text,
        "bytes": b"\x00\x01binary",
        "bigbytes": big_bytes,
    }
    for key, value in values.items():
        kvs.set_record(key, value)
    for key, value in values.items():
        rec = kvs.get_record(key)
        assert rec is not None, key
        assert rec["key"] == key
        if isinstance(value, dict):
            assert rec["value"] == value, key
            assert rec["content_type"].startswith("application/json")
        elif isinstance(value, str):
            assert rec["value"] == value, key
            assert rec["content_type"].startswith("text/plain")
        else:
            assert bytes(rec["value"]) == value, key
    # the bytes on the server are the same as without the client
    with shared_server.client() as c:
        r = c.get(f"/v2/key-value-stores/{sid}/records/bigbytes", headers={"accept-encoding": "identity"})
        assert r.content == big_bytes
        assert c.get(f"/v2/key-value-stores/{sid}/records/bigstr").text == big_text
    assert kvs.set_record("explicit", b"<p>x</p>", content_type="text/html") is None
    assert kvs.get_record("explicit")["content_type"].startswith("text/html")
    assert kvs.record_exists("str") is True
    assert kvs.record_exists("nope") is False
    assert kvs.get_record("nope") is None
    kvs.delete_record("str")
    kvs.delete_record("str")
    assert kvs.record_exists("str") is False
    assert kvs.get_record_as_bytes("bytes")["value"] == b"\x00\x01binary"


def test_keys_and_public_urls(shared_server, client):
    sid = _get(client.key_value_stores().get_or_create(name=unique("oc")), "id")
    kvs = client.key_value_store(sid)
    keys = [f"p-{i:03d}" for i in range(25)] + ["q-1", "q-2"]
    for k in keys:
        kvs.set_record(k, k)
    page = kvs.list_keys(limit=10, prefix="p-")
    assert [_get(i, "key") for i in _get(page, "items")] == keys[:10]
    assert _get(page, "is_truncated") is True
    assert _get(page, "next_exclusive_start_key") == "p-009"
    assert [_get(i, "key") for i in kvs.iterate_keys(prefix="p-", chunk_size=7)] == keys[:25]
    assert [_get(i, "key") for i in kvs.iterate_keys()] == keys
    assert [_get(i, "key") for i in kvs.iterate_keys(prefix="q-", limit=1)] == ["q-1"]
    url = kvs.get_record_public_url("q-2")
    assert url.startswith(shared_server.url)
    with httpx.Client(timeout=30) as anon:
        r = anon.get(url)
        assert r.status_code == 200, (url, r.text)
        assert r.text == "q-2"
        keys_url = kvs.create_keys_public_url(prefix="q-")
        r = anon.get(keys_url)
        assert r.status_code == 200, (keys_url, r.text)
        assert [i["key"] for i in r.json()["data"]["items"]] == ["q-1", "q-2"]
        for item in r.json()["data"]["items"]:
            assert anon.get(item["recordPublicUrl"]).text == item["key"]


def test_async_client(shared_server):
    async def main() -> None:
        client = ApifyClientAsync(
            shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1
        )
        store = await client.key_value_stores().get_or_create(name=unique("oca"))
        kvs = client.key_value_store(_get(store, "id"))
        payload = {"x": "y" * 100_000}
        await asyncio.gather(*(kvs.set_record(f"k{i}", payload) for i in range(10)))
        await kvs.set_record("b", b"raw")
        assert (await kvs.get_record("k3"))["value"] == payload
        assert await kvs.record_exists("k9") is True
        await kvs.delete_record("k9")
        assert await kvs.record_exists("k9") is False
        assert [_get(i, "key") async for i in kvs.iterate_keys(prefix="k")] == sorted(f"k{i}" for i in range(9))
        url = await kvs.get_record_public_url("b")
        keys_url = await kvs.create_keys_public_url()
        async with httpx.AsyncClient() as anon:
            assert (await anon.get(url)).content == b"raw"
            r = await anon.get(keys_url)
            assert r.status_code == 200 and r.json()["data"]["count"] == 10
        assert _get(await kvs.update(name=unique("oca2")), "id") == _get(store, "id")
        await kvs.delete()
        assert await kvs.get() is None

    asyncio.run(main())
