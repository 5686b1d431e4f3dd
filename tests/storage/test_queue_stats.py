"""A request queue's ``stats`` as API-request-queues.md section 8 defines them, on every backend, through the real
app in this process (tests/inprocess.py) and storage's own flush of the counters (``flush_stats``, which the
server runs every few seconds): each call of the contract moves ``writeCount``, ``readCount``, ``deleteCount`` and
``headItemReadCount`` by what it did, refused calls move nothing, and ``storageBytes`` is the size of the stored
request JSON of the requests in the queue."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from openkvs import auth
from openkvs.requestid import request_id
from openkvs.storage.base import Storage
from tests.inprocess import app_client

pytestmark = pytest.mark.anyio

Q = "/v2/request-queues"


def stored_size(request: dict[str, Any]) -> int:
    """The bytes of a request's JSON as stored: what GET answers, without ``id`` and ``lockExpiresAt``."""
    body = {k: v for k, v in request.items() if k not in ("id", "lockExpiresAt")}
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


class Queue:
    def __init__(self, client: httpx.AsyncClient, storage: Storage, token: str, qid: str) -> None:
        self.c, self.storage, self.qid = client, storage, qid
        self.auth = {"Authorization": f"Bearer {token}"}
        self.expected = {"readCount": 0, "writeCount": 0, "deleteCount": 0, "headItemReadCount": 0}

    async def call(self, method: str, path: str, status: int, *, key: str = "A", **kw: Any) -> Any:
        r = await self.c.request(method, f"{Q}/{self.qid}{path}", params={"clientKey": key, **kw.pop("params", {})},
                                 headers=self.auth, **kw)
        assert r.status_code == status, r.text
        return r.json().get("data") if r.content else None

    async def stats(self) -> dict[str, int]:
        await self.storage.flush_stats()
        r = await self.c.get(f"{Q}/{self.qid}", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()["data"]["stats"]  # type: ignore[no-any-return]

    async def check(self, **moved: int) -> dict[str, int]:
        """The counters moved by exactly ``moved`` since the last check (the others not at all)."""
        for name, n in moved.items():
            self.expected[name] += n
        stats = await self.stats()
        assert {k: stats[k] for k in self.expected} == self.expected
        return stats

    async def stored_bytes(self) -> int:
        """storageBytes as the contract defines it, from the requests the queue lists."""
        page = await self.call("GET", "/requests", 200, params={"limit": 1000})
        self.expected["readCount"] += len(page["items"])  # listing reads them
        return sum(stored_size(r) for r in page["items"])


async def test_each_call_moves_the_counters_the_contract_names(storage: Storage) -> None:
    user = await storage.create_user("alice")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    async with app_client(storage) as (client, _):
        r = await client.post(Q, params={"name": "stats"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        q = Queue(client, storage, token, r.json()["data"]["id"])
        assert await q.stats() == {**q.expected, "storageBytes": 0}

        urls = [f"https://example.com/ünïcode/{i}" for i in range(5)]  # bytes, not characters, are counted
        one = {"url": urls[0], "uniqueKey": urls[0], "userData": {"label": "START", "depth": 0}}
        await q.call("POST", "/requests", 201, json=one)
        await q.call("POST", "/requests", 201, json=one)  # already present: still a write
        await q.check(writeCount=2)
        added = await q.call("POST", "/requests/batch", 201, json=[{"url": u, "uniqueKey": u} for u in urls[:4]])
        assert [p["wasAlreadyPresent"] for p in added["processedRequests"]] == [True, False, False, False]
        await q.check(writeCount=4)  # one per request of the batch, new or not

        rid = [request_id(u) for u in urls]
        await q.call("GET", f"/requests/{rid[0]}", 200)
        await q.call("GET", f"/requests/{rid[4]}", 404)  # nothing read
        await q.check(readCount=1)
        page = await q.call("GET", "/requests", 200, params={"limit": 3})
        assert len(page["items"]) == 3
        await q.check(readCount=3)
        head = await q.call("GET", "/head", 200, params={"limit": 2})
        assert len(head["items"]) == 2
        await q.check(headItemReadCount=2)

        locked = await q.call("POST", "/head/lock", 201, params={"limit": 3, "lockSecs": 60})
        assert [i["id"] for i in locked["items"]] == rid[:3]
        await q.check(writeCount=3)  # one per request locked
        await q.call("PUT", f"/requests/{rid[0]}/lock", 200, params={"lockSecs": 120})
        await q.check(writeCount=1)  # a prolong
        await q.call("DELETE", f"/requests/{rid[0]}/lock", 204)
        await q.check(writeCount=1)  # a deleted lock
        await q.call("DELETE", f"/requests/{rid[0]}/lock", 204)  # no lock left to delete: nothing written
        await q.check()
        assert (await q.call("POST", "/requests/unlock", 200))["unlockedCount"] == 2
        await q.check(writeCount=2)  # one per request freed

        # refused calls change nothing, so they count nothing
        taken = (await q.call("POST", "/head/lock", 201, params={"limit": 1, "lockSecs": 60}, key="B"))["items"]
        await q.check(writeCount=1)
        await q.call("PUT", f"/requests/{taken[0]['id']}/lock", 400, params={"lockSecs": 60})  # B holds it
        await q.call("DELETE", f"/requests/{taken[0]['id']}/lock", 400)
        await q.call("PUT", f"/requests/{rid[4]}/lock", 404, params={"lockSecs": 60})
        await q.call("POST", "/requests/batch", 400, json=[{"url": "no unique key"}])
        await q.check()

        done = {"url": urls[1], "uniqueKey": urls[1], "handledAt": "2026-12-01T00:00:00.000Z"}
        await q.call("PUT", f"/requests/{rid[1]}", 200, json=done)
        await q.check(writeCount=1)  # an update
        stats = await q.check()
        assert stats["storageBytes"] == await q.stored_bytes() > 0

        await q.call("DELETE", f"/requests/{rid[2]}", 204)
        await q.call("DELETE", f"/requests/{rid[2]}", 204)  # gone already: nothing deleted
        await q.check(deleteCount=1)
        gone = await q.call("DELETE", "/requests/batch", 200,
                            json=[{"uniqueKey": urls[3]}, {"uniqueKey": urls[4]}])  # urls[4] was never added
        assert len(gone["processedRequests"]) == 2
        stats = await q.check(deleteCount=1)
        assert stats["storageBytes"] == await q.stored_bytes()

        # a bigger request in place of a smaller one: storageBytes follows the stored JSON
        big = {"url": urls[0], "uniqueKey": urls[0], "userData": {"note": "x" * 1000}}
        await q.call("PUT", f"/requests/{rid[0]}", 200, json=big, key="B")
        stats = await q.check(writeCount=1)
        assert stats["storageBytes"] == await q.stored_bytes()

        for u in (urls[0], urls[1]):
            await q.call("DELETE", f"/requests/{request_id(u)}", 204)
        stats = await q.check(deleteCount=2)
        assert stats["storageBytes"] == 0


async def test_refused_calls_are_not_clients(storage: Storage) -> None:
    """Section 7 counts the calls that take a clientKey; one that was refused (404, 400) changed nothing and is no
    client either: only a call carried out with another key makes ``hadMultipleClients`` true."""
    user = await storage.create_user("alice")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    async with app_client(storage) as (client, _):
        r = await client.post(Q, params={"name": "clients"}, headers={"Authorization": f"Bearer {token}"})
        q = Queue(client, storage, token, r.json()["data"]["id"])
        await q.call("POST", "/requests", 201, json={"url": "https://example.com/", "uniqueKey": "u"})
        locked = await q.call("POST", "/head/lock", 201, params={"limit": 1, "lockSecs": 60})
        assert locked["hadMultipleClients"] is False
        held = locked["items"][0]["id"]
        await q.call("PUT", f"/requests/{held}/lock", 400, params={"lockSecs": 60}, key="B")
        await q.call("DELETE", f"/requests/{held}/lock", 400, key="B")
        await q.call("PUT", f"/requests/{request_id('nope')}/lock", 404, params={"lockSecs": 60}, key="B")
        await q.call("DELETE", f"/requests/{request_id('nope')}/lock", 404, key="B")
        await q.call("GET", f"/requests/{held}", 200, key="B")  # reading one request is not a client's call
        queue = (await client.get(f"{Q}/{q.qid}", headers=q.auth)).json()["data"]
        assert queue["hadMultipleClients"] is False
        head = await q.call("GET", "/head", 200, key="B")
        assert head["hadMultipleClients"] is True
