"""Key listing (API.md 4.4): paging, prefix, collections, public record URLs."""

from __future__ import annotations

import httpx
import pytest

from . import assert_error, new_store, rec_path

SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "collections": {
        "images": {"keyPrefix": "img-"},
        "report": {"key": "img-REPORT"},
        "summary": {"key": "summary"},
    },
}
KEYS = sorted(["a", "b", "img-1", "img-2", "img-3", "img-REPORT", "imgx", "summary", "z(1)", "z.2", "Z"])


@pytest.fixture(scope="module")
def filled(shared_server) -> tuple[dict, httpx.Client]:
    c = shared_server.client()
    store = new_store(c, schema=SCHEMA)
    for k in KEYS:
        assert c.put(rec_path(store["id"], k), content=k.encode() * 3).status_code == 201
    yield store, c
    c.close()


def keys_of(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["key"] for i in r.json()["data"]["items"]]


def test_all_keys_sorted_with_sizes(filled):
    store, c = filled
    r = c.get(f"/v2/key-value-stores/{store['id']}/keys")
    d = r.json()["data"]
    assert keys_of(r) == KEYS
    assert d["count"] == len(KEYS) and d["limit"] == 1000
    assert d["isTruncated"] is False and d["nextExclusiveStartKey"] is None and d["exclusiveStartKey"] is None
    assert [i["size"] for i in d["items"]] == [3 * len(k) for k in KEYS]


def test_paging(filled):
    store, c = filled
    url = f"/v2/key-value-stores/{store['id']}/keys"
    seen: list[str] = []
    start = None
    while True:
        params = {"limit": 3, **({"exclusiveStartKey": start} if start else {})}
        d = c.get(url, params=params).json()["data"]
        assert d["limit"] == 3 and d["exclusiveStartKey"] == start
        seen += [i["key"] for i in d["items"]]
        if not d["isTruncated"]:
            assert d["nextExclusiveStartKey"] is None
            break
        assert d["count"] == 3 and d["nextExclusiveStartKey"] == d["items"][-1]["key"]
        start = d["nextExclusiveStartKey"]
    assert seen == KEYS
    # a start key that does not exist
    assert keys_of(c.get(url, params={"exclusiveStartKey": "c"})) == [k for k in KEYS if k > "c"]
    assert keys_of(c.get(url, params={"exclusiveStartKey": "zzz"})) == []
    # an exactly full last page
    d = c.get(url, params={"limit": len(KEYS)}).json()["data"]
    assert d["count"] == len(KEYS)
    assert d["isTruncated"] is False or d["nextExclusiveStartKey"] == KEYS[-1]
    # limits
    assert c.get(url, params={"limit": 5000}).json()["data"]["limit"] == 1000
    for bad in ({"limit": -3}, {"limit": "ten"}):
        assert_error(c.get(url, params=bad), 400, "invalid-input")


def test_prefix_and_collections(filled):
    store, c = filled
    url = f"/v2/key-value-stores/{store['id']}/keys"
    assert keys_of(c.get(url, params={"prefix": "img"})) == ["img-1", "img-2", "img-3", "img-REPORT", "imgx"]
    assert keys_of(c.get(url, params={"prefix": "nothing"})) == []
    assert keys_of(c.get(url, params={"collection": "images"})) == ["img-1", "img-2", "img-3", "img-REPORT"]
    assert keys_of(c.get(url, params={"collection": "summary"})) == ["summary"]
    assert keys_of(c.get(url, params={"collection": "report"})) == ["img-REPORT"]
    # both apply
    assert keys_of(c.get(url, params={"collection": "images", "prefix": "img-R"})) == ["img-REPORT"]
    assert keys_of(c.get(url, params={"collection": "images", "prefix": "i"})) == ["img-1", "img-2", "img-3", "img-REPORT"]
    assert keys_of(c.get(url, params={"collection": "images", "prefix": "a"})) == []
    assert keys_of(c.get(url, params={"collection": "images", "prefix": "imgx"})) == []
    assert keys_of(c.get(url, params={"collection": "summary", "prefix": "sum"})) == ["summary"]
    assert keys_of(c.get(url, params={"collection": "summary", "prefix": "x"})) == []
    # paging inside a collection
    d = c.get(url, params={"collection": "images", "limit": 2}).json()["data"]
    assert [i["key"] for i in d["items"]] == ["img-1", "img-2"] and d["isTruncated"] is True
    d = c.get(url, params={"collection": "images", "limit": 2, "exclusiveStartKey": "img-2"}).json()["data"]
    assert [i["key"] for i in d["items"]] == ["img-3", "img-REPORT"]
    assert_error(c.get(url, params={"collection": "nope"}), 400, "invalid-input")


def test_collection_without_schema(shared_server):
    with shared_server.client() as c:
        store = new_store(c)
        r = c.get(f"/v2/key-value-stores/{store['id']}/keys", params={"collection": "images"})
        assert_error(r, 400, "invalid-input")


def test_record_public_url_works_without_token(shared_server, filled):
    store, c = filled
    d = c.get(f"/v2/key-value-stores/{store['id']}/keys", params={"prefix": "z"}).json()["data"]
    with shared_server.anon() as anon:
        for item in d["items"]:
            u = item["recordPublicUrl"]
            assert u.startswith(f"{shared_server.url}/v2/key-value-stores/{store['id']}/records/")
            assert "signature=" in u
            r = anon.get(u)
            assert r.status_code == 200, (u, r.text)
            assert r.content == item["key"].encode() * 3
            assert anon.head(u).status_code == 200
            # the signature is for that one record only
            other = rec_path(store["id"], "a") + "?" + u.split("?", 1)[1]
            assert_error(anon.get(other), 403, "permission-denied")
        # and without a signature: no token
        assert_error(anon.get(rec_path(store["id"], "a")), 401, "token-not-provided")
        assert_error(anon.get(rec_path(store["id"], "a"), params={"signature": "x"}), 403, "permission-denied")
