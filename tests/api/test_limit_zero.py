"""``limit=0`` means the default page size (API.md 4.1, 4.4): apify-client 3.x's ``iterate()`` sends it when the
caller gave no limit, and used to get 400 "Parameter 'limit' must be at least 1"."""

from __future__ import annotations

import pytest
from apify_client import ApifyClient

from . import assert_error, new_store, unique


@pytest.fixture(scope="module")
def client(shared_server) -> ApifyClient:
    return ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1)


def test_official_client_iterates_stores_without_a_limit(shared_server, client):
    names = {unique("it") for _ in range(3)}
    ids = {client.key_value_stores().get_or_create(name=n).id for n in names}
    listed = [s.id for s in client.key_value_stores().iterate()]
    assert ids <= set(listed)
    assert len(listed) == len(set(listed))


def test_official_client_iterates_keys_without_a_limit(shared_server, client):
    kvs = client.key_value_store(client.key_value_stores().get_or_create(name=unique("it")).id)
    for i in range(5):
        kvs.set_record(f"k{i}", {"i": i})
    assert [k.key for k in kvs.iterate_keys()] == [f"k{i}" for i in range(5)]


def test_limit_zero_is_the_default_and_negative_is_refused(shared_server):
    with shared_server.client() as http:
        store = new_store(http)
        for i in range(3):
            assert http.put(f"/v2/key-value-stores/{store['id']}/records/r{i}", json=i).status_code == 201
        stores = http.get("/v2/key-value-stores", params={"limit": 0})
        assert stores.status_code == 200, stores.text
        assert stores.json()["data"]["limit"] == 1000
        keys = http.get(f"/v2/key-value-stores/{store['id']}/keys", params={"limit": 0})
        assert keys.status_code == 200, keys.text
        assert keys.json()["data"]["limit"] == 1000 and keys.json()["data"]["count"] == 3
        for path in ("/v2/key-value-stores", f"/v2/key-value-stores/{store['id']}/keys"):
            assert_error(http.get(path, params={"limit": -1}), 400, "invalid-input")
