"""A HEAD is no read: the contracts count what a ``GET`` returns (API-request-queues.md section 8: ``readCount`` +1
per request returned by GET request and by list, ``headItemReadCount`` +1 per item returned by GET head;
API-datasets.md section 9: ``readCount`` + the Count of each GET items response), and a HEAD returns none of it.
So on every route a HEAD answers (record, keys, ZIP download, items export, one request, the request list, the
head) a HEAD moves no counter, where the same GET does. Through the real app in this process and storage's own
flush of the counters (``flush_stats``, which the server runs every few seconds)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from openkvs import auth
from openkvs.requestid import request_id
from openkvs.storage.base import Storage
from tests.inprocess import app_client

pytestmark = pytest.mark.anyio


async def _user(storage: Storage) -> dict[str, str]:
    user = await storage.create_user("alice")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    return {"Authorization": f"Bearer {token}"}


async def _stats(c: httpx.AsyncClient, storage: Storage, path: str, auth_: dict[str, str]) -> dict[str, Any]:
    await storage.flush_stats()
    r = await c.get(path, headers=auth_)
    assert r.status_code == 200, r.text
    return r.json()["data"]["stats"]  # type: ignore[no-any-return]


async def _head_then_get(c: httpx.AsyncClient, path: str, auth_: dict[str, str], **params: Any) -> None:
    head = await c.head(path, headers=auth_, params=params)
    assert head.status_code == 200 and head.content == b"", head
    assert (await c.get(path, headers=auth_, params=params)).status_code == 200


async def _heads_then_gets(
    c: httpx.AsyncClient, storage: Storage, store: str, paths: list[str], auth_: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The store's stats before, once a HEAD of each path has left them as they were, and after a GET of each."""
    before = await _stats(c, storage, store, auth_)
    for path in paths:
        assert (await c.head(path, headers=auth_)).status_code == 200, path
    assert await _stats(c, storage, store, auth_) == before
    for path in paths:
        assert (await c.get(path, headers=auth_)).status_code == 200, path
    return before, await _stats(c, storage, store, auth_)


async def test_a_head_of_a_record_keys_or_the_zip_reads_nothing(storage: Storage) -> None:
    a = await _user(storage)
    async with app_client(storage) as (c, _):
        r = await c.post("/v2/key-value-stores", params={"name": "heads"}, headers=a)
        kvs = f"/v2/key-value-stores/{r.json()['data']['id']}"
        assert (await c.put(f"{kvs}/records/k", content=b"v", headers=a)).status_code == 201
        before, after = await _heads_then_gets(c, storage, kvs, [f"{kvs}/records/k", f"{kvs}/keys", f"{kvs}/records"], a)
        # the GETs count: a read each for the record and the ZIP, a list for the keys
        assert (after["readCount"], after["listCount"]) == (before["readCount"] + 2, before["listCount"] + 1)


async def test_a_head_of_the_items_reads_nothing(storage: Storage) -> None:
    a = await _user(storage)
    async with app_client(storage) as (c, _):
        r = await c.post("/v2/datasets", params={"name": "heads"}, headers=a)
        ds = f"/v2/datasets/{r.json()['data']['id']}"
        assert (await c.post(f"{ds}/items", json=[{"a": 1}, {"a": 2}], headers=a)).status_code == 201
        before = await _stats(c, storage, ds, a)
        await _head_then_get(c, f"{ds}/items", a)
        assert (await _stats(c, storage, ds, a))["readCount"] == before["readCount"] + 2  # the GET's two items


async def test_a_head_of_a_request_the_list_or_the_head_reads_nothing(storage: Storage) -> None:
    a = await _user(storage)
    async with app_client(storage) as (c, _):
        r = await c.post("/v2/request-queues", params={"name": "heads"}, headers=a)
        q = f"/v2/request-queues/{r.json()['data']['id']}"
        urls = [f"https://example.com/{i}" for i in range(3)]
        added = await c.post(f"{q}/requests/batch", json=[{"url": u, "uniqueKey": u} for u in urls], headers=a)
        assert added.status_code == 201, added.text
        before, after = await _heads_then_gets(
            c, storage, q, [f"{q}/requests/{request_id(urls[0])}", f"{q}/requests", f"{q}/head"], a
        )
        # the GETs count: one request read, three listed, three head items
        assert (after["readCount"], after["headItemReadCount"]) == (
            before["readCount"] + 1 + 3, before["headItemReadCount"] + 3
        )
