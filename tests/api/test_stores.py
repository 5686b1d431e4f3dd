"""Stores over the wire: get-or-create, the store object, addressing, listing, update, delete (API.md 4.1-4.3)."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from . import ID_RE, ISO_MS_Z, assert_error, new_store, unique


@pytest.fixture
def alice(shared_server) -> httpx.Client:
    with shared_server.client() as c:
        yield c


@pytest.fixture
def bob(shared_server) -> httpx.Client:
    with shared_server.client(shared_server.extra_tokens["bob"]) as c:
        yield c


def test_get_or_create_201_then_200_same_id(shared_server, alice):
    name = unique()
    r = alice.post("/v2/key-value-stores", params={"name": name})
    assert r.status_code == 201, r.text
    store = r.json()["data"]
    assert r.headers["location"] == f"{shared_server.url}/v2/key-value-stores/{store['id']}"
    assert store["name"] == name
    r2 = alice.post("/v2/key-value-stores", params={"name": name})
    assert r2.status_code == 200, r2.text
    assert r2.json()["data"]["id"] == store["id"]
    assert "location" not in r2.headers
    # case-insensitive: the same store
    r3 = alice.post("/v2/key-value-stores", params={"name": name.upper()})
    assert r3.status_code == 200 and r3.json()["data"]["id"] == store["id"]
    assert r3.json()["data"]["name"] == name


def test_no_name_creates_new_unnamed_store_each_time(alice):
    a = alice.post("/v2/key-value-stores")
    b = alice.post("/v2/key-value-stores")
    assert a.status_code == b.status_code == 201
    assert a.json()["data"]["name"] is None
    assert a.json()["data"]["id"] != b.json()["data"]["id"]
    assert a.headers["location"].endswith("/v2/key-value-stores/" + a.json()["data"]["id"])


def test_store_object_fields(shared_server, alice):
    store = new_store(alice)
    assert ID_RE.match(store["id"])
    assert ID_RE.match(store["userId"])
    assert store["username"] == "alice"
    for f in ("createdAt", "modifiedAt", "accessedAt"):
        assert ISO_MS_Z.match(store[f]), store[f]
        datetime.fromisoformat(store[f].replace("Z", "+00:00"))
    assert store["actId"] is None and store["actRunId"] is None
    assert store["generalAccess"] == "FOLLOW_USER_SETTING"
    assert store["schema"] is None
    assert store["stats"] == {
        "readCount": 0, "writeCount": 0, "deleteCount": 0, "listCount": 0, "storageBytes": 0, "recordCount": 0
    }
    assert isinstance(store["urlSigningSecretKey"], str) and len(store["urlSigningSecretKey"]) >= 16
    base = f"{shared_server.url}/v2/key-value-stores/{store['id']}"
    assert store["keysPublicUrl"].startswith(base + "/keys?signature=")
    assert store["recordsPublicUrl"].startswith(base + "/records?signature=")
    # the public URLs work without a token
    with shared_server.anon() as anon:
        assert alice.put(f"/v2/key-value-stores/{store['id']}/records/k", content=b"x").status_code == 201
        r = anon.get(store["keysPublicUrl"])
        assert r.status_code == 200, r.text
        assert [i["key"] for i in r.json()["data"]["items"]] == ["k"]
        assert anon.get(f"{base}/keys").status_code == 401
        assert anon.get(f"{base}/keys", params={"signature": "garbage"}).status_code == 403


def test_address_by_id_own_name_and_username_name(alice):
    name = unique()
    store = new_store(alice, name)
    for ref in (store["id"], f"~{name}", f"alice~{name}", f"alice~{name.upper()}"):
        r = alice.get(f"/v2/key-value-stores/{ref}")
        assert r.status_code == 200, (ref, r.text)
        assert r.json()["data"]["id"] == store["id"]
    # a bare name is treated as an ID
    assert_error(alice.get(f"/v2/key-value-stores/{name}"), 404, "record-not-found", "Key-value Store was not found")


def test_secret_key_only_for_writers(shared_server, alice, bob):
    store = new_store(alice)
    r = alice.put(f"/v2/key-value-stores/{store['id']}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"})
    assert r.status_code == 200, r.text
    assert "urlSigningSecretKey" in r.json()["data"]
    r = bob.get(f"/v2/key-value-stores/{store['id']}")
    assert r.status_code == 200, r.text
    assert "urlSigningSecretKey" not in r.json()["data"]
    with shared_server.anon() as anon:
        r = anon.get(f"/v2/key-value-stores/{store['id']}")
        assert r.status_code == 200, r.text
        assert "urlSigningSecretKey" not in r.json()["data"]
    # a read grant does not reveal it either, a write grant does
    shared_server.cli("grants", "add", store["id"], "bob", "--read")
    time.sleep(0)  # grants are read per request
    r = bob.get(f"/v2/key-value-stores/{store['id']}")
    assert "urlSigningSecretKey" not in r.json()["data"]
    shared_server.cli("grants", "add", store["id"], "bob", "--write")
    r = bob.get(f"/v2/key-value-stores/{store['id']}")
    assert "urlSigningSecretKey" in r.json()["data"]


def test_list_stores_paging_desc_unnamed_and_clamp(shared_server):
    # a fresh user, so the listing holds exactly what this test made
    token = shared_server.new_user(unique("u"))
    with shared_server.client(token) as c:
        names = [unique(f"l{i}") for i in range(5)]
        ids = [new_store(c, n)["id"] for n in names]
        unnamed_id = c.post("/v2/key-value-stores").json()["data"]["id"]
        r = c.get("/v2/key-value-stores")
        assert r.status_code == 200, r.text
        d = r.json()["data"]
        assert d["total"] == 5 and d["count"] == 5 and d["offset"] == 0 and d["limit"] == 1000
        assert d["desc"] is False and d["unnamed"] is False
        assert [s["id"] for s in d["items"]] == ids
        d = c.get("/v2/key-value-stores", params={"offset": 1, "limit": 2}).json()["data"]
        assert [s["id"] for s in d["items"]] == ids[1:3]
        assert (d["total"], d["count"], d["offset"], d["limit"]) == (5, 2, 1, 2)
        d = c.get("/v2/key-value-stores", params={"desc": "1"}).json()["data"]
        assert [s["id"] for s in d["items"]] == ids[::-1] and d["desc"] is True
        d = c.get("/v2/key-value-stores", params={"unnamed": "true"}).json()["data"]
        assert d["total"] == 6 and unnamed_id in [s["id"] for s in d["items"]] and d["unnamed"] is True
        d = c.get("/v2/key-value-stores", params={"limit": 5000}).json()["data"]
        assert d["limit"] == 1000
        for bad in ({"limit": -1}, {"limit": "x"}, {"offset": -1}, {"desc": "yes"}, {"unnamed": "2"}):
            assert_error(c.get("/v2/key-value-stores", params=bad), 400, "invalid-input")
        # every store in a listing is a full store object but for its schema (api/stores.py, describe's Decision)
        s = d["items"][0]
        assert ISO_MS_Z.match(s["createdAt"]) and "urlSigningSecretKey" in s and "keysPublicUrl" in s
        assert "schema" not in s


def test_list_leaves_out_schemas_a_page_stays_small(shared_server):
    """A schema may be 4 MiB: with it, a page of 1,000 stores was 4 GB (40 of them made 160 MiB, and four such
    lists at once took the server to 2.7 GB). Listed, a store has no ``schema``; alone it has."""
    token = shared_server.new_user(unique("u"))
    schema = {"actorKeyValueStoreSchemaVersion": 1, "title": "t", "description": "d" * 4_000_000}
    with shared_server.client(token) as c:
        ids = [new_store(c, schema=schema)["id"] for _ in range(3)]
        ids.append(new_store(c)["id"])  # and one without a schema: listed alike
        r = c.get("/v2/key-value-stores", params={"limit": 1000})
        assert r.status_code == 200, r.text[:500]
        d = r.json()["data"]
        assert [s["id"] for s in d["items"]] == ids
        assert len(r.content) < 4 * 2048, len(r.content)  # about 1 kB a store; 12 MB with the schemas
        assert all("schema" not in s for s in d["items"])
        for sid in ids[:3]:
            assert c.get(f"/v2/key-value-stores/{sid}").json()["data"]["schema"] == schema
        assert c.get(f"/v2/key-value-stores/{ids[3]}").json()["data"]["schema"] is None


def test_update_rename_general_access_and_conflict(alice):
    a = new_store(alice, unique("Aa"))
    b = new_store(alice)
    url = f"/v2/key-value-stores/{a['id']}"
    new_name = unique("Renamed")
    r = alice.put(url, json={"name": new_name})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == new_name
    assert alice.get(f"/v2/key-value-stores/~{new_name.lower()}").json()["data"]["name"] == new_name
    assert_error(alice.get(f"/v2/key-value-stores/~{a['name']}"), 404, "record-not-found")
    r = alice.put(url, json={"generalAccess": "RESTRICTED"})
    assert r.status_code == 200 and r.json()["data"]["generalAccess"] == "RESTRICTED"
    assert r.json()["data"]["name"] == new_name
    # name conflict, also when it differs only in case
    assert_error(alice.put(url, json={"name": b["name"]}), 400, "name-not-unique")
    assert_error(alice.put(url, json={"name": b["name"].upper()}), 400, "name-not-unique")
    # renaming to itself in other casing keeps working, and keeps the new casing
    r = alice.put(url, json={"name": new_name.upper()})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == new_name.upper()
    # bad input
    assert_error(alice.put(url, json={"generalAccess": "EVERYONE"}), 400, "invalid-input")
    assert_error(alice.put(url, json={"name": "-bad-"}), 400, "invalid-input")
    assert_error(alice.put(url, content=b"[1]", headers={"content-type": "application/json"}), 400, "invalid-input")
    assert_error(alice.put(url, content=b"{nope", headers={"content-type": "application/json"}), 400, "invalid-input")


def test_create_with_bad_names(alice):
    for bad in ("-x", "x-", "a_b", "x" * 64, "sp ace", "ü", "abc\n", "a\x00"):
        assert_error(alice.post("/v2/key-value-stores", params={"name": bad}), 400, "invalid-input")
    assert alice.post("/v2/key-value-stores", params={"name": "x" * 63}).status_code in (200, 201)


def test_delete_then_404(alice):
    store = new_store(alice)
    url = f"/v2/key-value-stores/{store['id']}"
    assert alice.put(url + "/records/a", content=b"1").status_code == 201
    r = alice.delete(url)
    assert r.status_code == 204 and r.content == b""
    assert_error(alice.get(url), 404, "record-not-found", "Key-value Store was not found")
    assert_error(alice.get(url + "/records/a"), 404, "record-not-found", "Key-value Store was not found")
    assert_error(alice.delete(url), 404, "record-not-found", "Key-value Store was not found")
    # the name is free again
    assert alice.post("/v2/key-value-stores", params={"name": store["name"]}).status_code == 201


def test_modified_at_moves_on_record_write(alice):
    store = new_store(alice)
    time.sleep(0.01)
    assert alice.put(f"/v2/key-value-stores/{store['id']}/records/a", content=b"1").status_code == 201
    after = alice.get(f"/v2/key-value-stores/{store['id']}").json()["data"]
    assert after["modifiedAt"] > store["modifiedAt"]


def test_create_with_schema_and_gzip_body(alice):
    import gzip
    import json

    schema = {"actorKeyValueStoreSchemaVersion": 1, "title": "t", "collections": {"c": {"key": "K"}}}
    body = gzip.compress(json.dumps({"schema": schema}).encode())
    r = alice.post(
        "/v2/key-value-stores",
        params={"name": unique()},
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["schema"] == schema
    bad = {"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": "K", "keyPrefix": "x"}}}}
    assert_error(alice.post("/v2/key-value-stores", params={"name": unique()}, json=bad), 400, "store-schema-invalid")


def test_concurrent_get_or_create_makes_one_store(shared_server):
    from concurrent.futures import ThreadPoolExecutor

    name = unique("race")

    def create(_: int) -> tuple[int, str]:
        with shared_server.client() as c:
            r = c.post("/v2/key-value-stores", params={"name": name})
            return r.status_code, r.json()["data"]["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(16)))
    assert len({sid for _, sid in results}) == 1, results
    assert sorted(status for status, _ in results).count(201) == 1, results


def test_public_url_setting(tmp_path, start_server):
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--public-url", "https://kvs.example.com/", in_process=True)
    with s.client() as c:
        r = c.post("/v2/key-value-stores", params={"name": "pub"})
        store = r.json()["data"]
        assert r.headers["location"] == f"https://kvs.example.com/v2/key-value-stores/{store['id']}"
        assert store["keysPublicUrl"].startswith(f"https://kvs.example.com/v2/key-value-stores/{store['id']}/keys?signature=")
        assert store["recordsPublicUrl"].startswith(f"https://kvs.example.com/v2/key-value-stores/{store['id']}/records?")
        r = c.put(f"/v2/key-value-stores/{store['id']}/records/a(1)", content=b"x")
        assert r.headers["location"] == f"https://kvs.example.com/v2/key-value-stores/{store['id']}/records/a%281%29"
        item = c.get(f"/v2/key-value-stores/{store['id']}/keys").json()["data"]["items"][0]
        assert item["recordPublicUrl"].startswith(f"https://kvs.example.com/v2/key-value-stores/{store['id']}/records/")


def test_modified_at_moves_on_record_delete(alice):
    store = new_store(alice)
    url = f"/v2/key-value-stores/{store['id']}"
    alice.put(url + "/records/a", content=b"1")
    before = alice.get(url).json()["data"]["modifiedAt"]
    time.sleep(0.01)
    assert alice.delete(url + "/records/a").status_code == 204
    assert alice.get(url).json()["data"]["modifiedAt"] > before
