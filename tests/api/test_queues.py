"""The request-queue API over HTTP (API-request-queues.md), on both backends: every operation's answer, the
contract's errors for bad input (and that they change nothing), access and counters."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import httpx

from openkvs.requestid import request_id

if TYPE_CHECKING:
    from tests.conftest import Server

Q = "/v2/request-queues"


def new_queue(c: httpx.Client, name: str | None = None) -> dict[str, Any]:
    r = c.post(Q, params={"name": name} if name else None)
    assert r.status_code == 201, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def queue(c: httpx.Client, qid: str) -> dict[str, Any]:
    r = c.get(f"{Q}/{qid}")
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def counts(c: httpx.Client, qid: str) -> tuple[int, int, int]:
    q = queue(c, qid)
    return q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]


def err(r: httpx.Response, status: int, type_: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == type_, body
    return body["message"]  # type: ignore[no-any-return]


def head(c: httpx.Client, qid: str, **params: Any) -> list[str]:
    r = c.get(f"{Q}/{qid}/head", params={"clientKey": "k", **params})
    assert r.status_code == 200, r.text
    return [i["url"] for i in r.json()["data"]["items"]]


def test_queue_object(shared_server: Server) -> None:
    with shared_server.client() as c:
        q = new_queue(c, "rq-object")
        assert q["name"] == "rq-object" and len(q["id"]) == 17
        assert (q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]) == (0, 0, 0)
        assert q["hadMultipleClients"] is False
        assert q["consoleUrl"].endswith(f"/console/#/request-queues/{q['id']}")
        assert set(q["stats"]) >= {"readCount", "writeCount", "deleteCount", "headItemReadCount", "storageBytes"}
        again = c.post(Q, params={"name": "rq-object"})
        assert again.status_code == 200 and again.json()["data"]["id"] == q["id"]
        assert c.get(f"{Q}/~rq-object").json()["data"]["id"] == q["id"]
        unnamed = new_queue(c)
        listed = c.get(Q, params={"unnamed": "1", "limit": 1000}).json()["data"]["items"]
        assert {i["id"]: i["name"] for i in listed if i["id"] in (q["id"], unnamed["id"])} == {
            q["id"]: "rq-object", unnamed["id"]: "",
        }
        # a queue is not a key-value store, nor the reverse
        assert c.get(f"/v2/key-value-stores/{q['id']}").status_code == 404
        assert c.delete(f"{Q}/{unnamed['id']}").status_code == 204
        assert err(c.get(f"{Q}/{unnamed['id']}"), 404, "record-not-found") == "Request queue was not found"


def test_add_get_update_delete(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c, "rq-crud")["id"]
        rid = request_id("http://example.com")
        assert rid == "8OamqXBCpPHxyH9"
        body = {"url": "http://example.com", "uniqueKey": "http://example.com", "userData": {"a": 1},
                "payload": None, "headers": {"x": "y"}}
        r = c.post(f"{Q}/{qid}/requests", params={"clientKey": "k"}, json=body)
        assert r.status_code == 201, r.text
        assert r.json() == {"data": {"requestId": rid, "wasAlreadyPresent": False, "wasAlreadyHandled": False}}
        r = c.post(f"{Q}/{qid}/requests", params={"clientKey": "k", "forefront": "true"}, json=body)
        assert r.json()["data"] == {"requestId": rid, "wasAlreadyPresent": True, "wasAlreadyHandled": False}

        got = c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]
        # stored as sent, without nulls, with the defaults
        assert got == {"id": rid, "url": "http://example.com", "uniqueKey": "http://example.com",
                       "userData": {"a": 1}, "headers": {"x": "y"}, "method": "GET", "retryCount": 0}
        assert counts(c, qid) == (1, 0, 1)

        # mark handled (the 3.1 clients' timestamp form), then again: counted once
        done = {**got, "handledAt": "2026-12-01 21:49:28.648300+00:00"}
        r = c.put(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "k"}, json=done)
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"requestId": rid, "wasAlreadyPresent": True, "wasAlreadyHandled": False}
        assert c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]["handledAt"] == "2026-12-01T21:49:28.648Z"
        r = c.put(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "k"},
                  json={**got, "handledAt": "2026-12-01T21:49:28.648300Z"})
        assert r.json()["data"]["wasAlreadyHandled"] is True
        assert counts(c, qid) == (1, 1, 0)
        assert head(c, qid) == []

        # reclaim: an update without handledAt makes it pending again
        r = c.put(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "k"}, json=got)
        assert r.json()["data"]["wasAlreadyHandled"] is True
        assert counts(c, qid) == (1, 0, 1)
        assert head(c, qid) == ["http://example.com"]

        # upsert of a request the server never saw
        other = {"url": "http://example.com/a/b", "uniqueKey": "http://example.com/a/b"}
        r = c.put(f"{Q}/{qid}/requests/ZJAoqlRijenMQIn", params={"clientKey": "k"}, json=other)
        assert r.json()["data"] == {"requestId": "ZJAoqlRijenMQIn", "wasAlreadyPresent": False,
                                    "wasAlreadyHandled": False}
        assert counts(c, qid) == (2, 0, 2)

        assert c.delete(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "k"}).status_code == 204
        assert c.delete(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "k"}).status_code == 204  # idempotent
        assert err(c.get(f"{Q}/{qid}/requests/{rid}"), 404, "record-not-found") == "Request was not found"
        assert counts(c, qid) == (1, 0, 1)
        assert queue(c, qid)["hadMultipleClients"] is False


def test_batches(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c, "rq-batch")["id"]
        reqs = [{"url": f"http://b/{i}", "uniqueKey": f"http://b/{i}"} for i in range(3)]
        r = c.post(f"{Q}/{qid}/requests/batch", params={"clientKey": "k", "forefront": "true"},
                   json=[*reqs, reqs[0]])
        assert r.status_code == 201, r.text
        data = r.json()["data"]
        assert data["unprocessedRequests"] == []
        assert [(p["uniqueKey"], p["wasAlreadyPresent"]) for p in data["processedRequests"]] == [
            ("http://b/0", False), ("http://b/1", False), ("http://b/2", False), ("http://b/0", True),
        ]
        assert head(c, qid) == ["http://b/2", "http://b/1", "http://b/0"]  # a forefront batch comes out reversed

        r = c.request("DELETE", f"{Q}/{qid}/requests/batch", params={"clientKey": "k"},
                      json=[{"uniqueKey": "http://b/0"}, {"id": request_id("http://b/1")}, {"uniqueKey": "nope"}])
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"processedRequests": [
            {"id": request_id("http://b/0"), "uniqueKey": "http://b/0"},
            {"id": request_id("http://b/1"), "uniqueKey": "http://b/1"},
            {"id": request_id("nope"), "uniqueKey": "nope"},
        ], "unprocessedRequests": []}
        assert counts(c, qid) == (1, 0, 1)


def test_a_batch_delete_says_what_is_wrong_with_an_element(shared_server: Server) -> None:
    """5.6: each element has "id", "uniqueKey" or both. One with an "id" that no request can have is refused for
    that, not as if it had neither; nothing is deleted."""
    with shared_server.client() as c:
        qid = new_queue(c, "rq-batch-bad")["id"]
        url = f"{Q}/{qid}/requests/batch"
        kept = {"url": "http://k", "uniqueKey": "http://k"}
        assert c.post(f"{Q}/{qid}/requests", json=kept).status_code == 201

        def refused(element: Any) -> str:
            body = [{"uniqueKey": "http://k"}, element]
            return err(c.request("DELETE", url, json=body), 400, "invalid-input")

        assert refused({}) == 'Invalid input: each request needs "id" or "uniqueKey" (request at index 1).'
        for bad in ("not-an-id!", "", "x" * 65):
            message = refused({"id": bad})
            assert message.startswith('Invalid input: "id" is not a request ID') and "index 1" in message, message
            assert "needs" not in message
        assert refused({"id": 5}) == 'Invalid input: "id" must be a string (request at index 1).'
        assert refused({"id": None}) == 'Invalid input: each request needs "id" or "uniqueKey" (request at index 1).'
        assert counts(c, qid) == (1, 0, 1)


def test_bad_input_changes_nothing(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c, "rq-bad")["id"]
        url = f"{Q}/{qid}/requests"
        ok = {"url": "http://ok", "uniqueKey": "http://ok"}
        too_many = [{"url": f"http://m/{i}", "uniqueKey": f"http://m/{i}"} for i in range(26)]
        assert "1 to 25" in err(c.post(f"{url}/batch", json=too_many), 400, "invalid-input")
        err(c.post(f"{url}/batch", json=[]), 400, "invalid-input")
        msg = err(c.post(f"{url}/batch", json=[ok, {"uniqueKey": "x"}]), 400, "invalid-input")
        assert '"url" is required' in msg and "index 1" in msg
        assert err(c.post(url, json={"url": "http://x"}), 400, "invalid-input") == 'Invalid input: "uniqueKey" is required.'
        err(c.post(url, json={"url": "", "uniqueKey": "a"}), 400, "invalid-input")
        err(c.post(url, json={"url": 5, "uniqueKey": "a"}), 400, "invalid-input")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "k" * 65_536}), 400, "invalid-input")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a", "method": "FETCH"}), 400, "invalid-input")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a", "method": {}}), 400, "invalid-input")  # was a 500
        err(c.post(url, json=ok, headers={"Content-Type": "text/plain"}), 400, "invalid-content-type-header")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a", "retryCount": -1}), 400, "invalid-input")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a", "userData": []}), 400, "invalid-input")
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a", "handledAt": "2026-12-01T10:00:00"}),
            400, "invalid-input")  # no zone
        err(c.post(url, json={"url": "http://x", "uniqueKey": "a\u0000b"}), 400, "invalid-input")
        err(c.post(url, json=[ok]), 400, "invalid-input")
        err(c.post(url, json={**ok, "id": "WRONGWRONGWRONG"}), 400, "request-id-invalid")
        err(c.put(f"{url}/{request_id('other')}", json=ok), 400, "request-id-invalid")
        err(c.post(url, params={"clientKey": ""}, json=ok), 400, "invalid-client-key")
        err(c.post(url, params={"clientKey": "k" * 33}, json=ok), 400, "invalid-client-key")
        err(c.post(url, params={"clientKey": "a b"}, json=ok), 400, "invalid-client-key")
        err(c.post(url, params={"forefront": "maybe"}, json=ok), 400, "invalid-input")
        assert c.post(url, content=b"x" * 9_437_185).status_code == 413
        for bad in ("0", "86401", "1.5", "abc", ""):
            err(c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": bad}), 400, "invalid-input")
        err(c.post(f"{Q}/{qid}/head/lock"), 400, "invalid-input")
        err(c.get(url, params={"filter": "done"}), 400, "invalid-input")
        err(c.get(url, params={"cursor": "not-a-cursor"}), 400, "invalid-input")
        err(c.get(url, params={"exclusiveStartId": "a", "filter": "pending"}), 400, "invalid-input")
        assert counts(c, qid) == (0, 0, 0)


def nested(levels: int) -> dict[str, Any]:
    """A request body of ``levels`` levels of objects (the body itself is the first, userData the second)."""
    data: dict[str, Any] = {}
    for _ in range(levels - 2):
        data = {"a": data}
    return {"url": "http://deep", "uniqueKey": f"deep-{levels}", "userData": data}


def test_bodies_nest_as_deep_as_the_contract_allows(shared_server: Server) -> None:
    with shared_server.client() as c:  # API-request-queues.md section 1: depth at most 128, as datasets
        qid = new_queue(c, "rq-deep")["id"]
        body = nested(128)
        r = c.post(f"{Q}/{qid}/requests", json=body)
        assert r.status_code == 201, r.text
        got = c.get(f"{Q}/{qid}/requests/{r.json()['data']['requestId']}").json()["data"]
        assert got["userData"] == body["userData"]
        assert "128 levels" in err(c.post(f"{Q}/{qid}/requests", json=nested(129)), 400, "invalid-input")
        assert "128 levels" in err(c.post(f"{Q}/{qid}/requests/batch", json=[nested(128)]), 400, "invalid-input")
        assert counts(c, qid) == (1, 0, 1)


def test_locks_over_http(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c, "rq-locks")["id"]
        reqs = [{"url": f"http://l/{i}", "uniqueKey": f"http://l/{i}"} for i in range(4)]
        c.post(f"{Q}/{qid}/requests/batch", params={"clientKey": "A"}, json=reqs)
        r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 60, "limit": 2, "clientKey": "A"})
        assert r.status_code == 201, r.text
        data = r.json()["data"]
        assert data["limit"] == 2 and data["lockSecs"] == 60 and data["clientKey"] == "A"
        assert data["queueHasLockedRequests"] is True and data["hadMultipleClients"] is False
        assert [i["url"] for i in data["items"]] == ["http://l/0", "http://l/1"]
        assert all(i["lockExpiresAt"].endswith("Z") for i in data["items"])
        first = data["items"][0]["id"]
        assert c.get(f"{Q}/{qid}/requests/{first}").json()["data"]["lockExpiresAt"] == data["items"][0]["lockExpiresAt"]
        assert head(c, qid) == ["http://l/2", "http://l/3"]

        r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 60, "limit": 100, "clientKey": "B"})
        assert [i["url"] for i in r.json()["data"]["items"]] == ["http://l/2", "http://l/3"]
        assert r.json()["data"]["limit"] == 25 and r.json()["data"]["hadMultipleClients"] is True

        msg = err(c.put(f"{Q}/{qid}/requests/{first}/lock", params={"lockSecs": 10, "clientKey": "B"}),
                  400, "request-handled-or-locked")
        assert msg == "Request is locked by another client."
        err(c.delete(f"{Q}/{qid}/requests/{first}/lock", params={"clientKey": "B"}), 400, "request-handled-or-locked")
        r = c.put(f"{Q}/{qid}/requests/{first}/lock", params={"lockSecs": 600, "clientKey": "A"})
        assert r.status_code == 200 and r.json()["data"]["lockExpiresAt"].endswith("Z")
        err(c.put(f"{Q}/{qid}/requests/{request_id('zz')}/lock", params={"lockSecs": 1, "clientKey": "A"}),
            404, "record-not-found")
        assert c.delete(f"{Q}/{qid}/requests/{first}/lock", params={"clientKey": "A", "forefront": "1"}).status_code == 204
        assert head(c, qid) == ["http://l/0"]

        listed = c.get(f"{Q}/{qid}/requests", params={"filter": "locked"}).json()["data"]
        assert {i["url"] for i in listed["items"]} == {"http://l/1", "http://l/2", "http://l/3"}
        assert all("lockExpiresAt" in i for i in listed["items"]) and listed["nextCursor"] is None
        r = c.post(f"{Q}/{qid}/requests/unlock", params={"clientKey": "B"})
        assert r.json()["data"] == {"unlockedCount": 2}
        assert head(c, qid) == ["http://l/0", "http://l/2", "http://l/3"]

        # handled: prolong refused, and nothing to hand out
        rid = request_id("http://l/0")
        c.put(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "A"},
              json={**reqs[0], "handledAt": "2026-12-01T00:00:00Z"})
        msg = err(c.put(f"{Q}/{qid}/requests/{rid}/lock", params={"lockSecs": 10, "clientKey": "A"}),
                  400, "request-handled-or-locked")
        assert msg == "Request was already handled."
        assert counts(c, qid) == (4, 1, 3)


def test_list_pages_with_cursor(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c, "rq-list")["id"]
        urls = [f"http://p/{i}" for i in range(7)]
        c.post(f"{Q}/{qid}/requests/batch", json=[{"url": u, "uniqueKey": u} for u in urls])
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            r = c.get(f"{Q}/{qid}/requests", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            data = r.json()["data"]
            assert data["limit"] == 3 and data["cursor"] == cursor
            seen += [i["id"] for i in data["items"]]
            pages += 1
            cursor = data["nextCursor"]
            if cursor is None:
                break
            decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            assert decoded == {"requestId": seen[-1]}
        assert seen == sorted(request_id(u) for u in urls) and pages == 3
        r = c.get(f"{Q}/{qid}/requests", params={"exclusiveStartId": seen[3]})
        assert [i["id"] for i in r.json()["data"]["items"]] == seen[4:]


def test_access(shared_server: Server) -> None:
    bob = shared_server.extra_tokens["bob"]
    with shared_server.client() as c, shared_server.client(bob) as b, shared_server.anon() as anon:
        q = new_queue(c, "rq-private")
        qid = q["id"]
        c.post(f"{Q}/{qid}/requests", json={"url": "http://a", "uniqueKey": "http://a"})
        rid = request_id("http://a")
        for r in (b.get(f"{Q}/{qid}/head"), b.get(f"{Q}/{qid}/requests/{rid}"),
                  b.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 10})):
            err(r, 403, "permission-denied")
        err(anon.get(f"{Q}/{qid}/head"), 401, "token-not-provided")
        # anyone with the ID may read once generalAccess says so; writing still needs a token with write access
        r = c.put(f"{Q}/{qid}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"})
        assert r.status_code == 200, r.text
        assert anon.get(f"{Q}/{qid}/head").json()["data"]["items"][0]["id"] == rid
        assert anon.get(f"{Q}/{qid}/requests/{rid}").status_code == 200
        err(anon.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 10}), 401, "token-not-provided")
        err(b.post(f"{Q}/{qid}/requests", json={"url": "http://b", "uniqueKey": "b"}), 403, "permission-denied")
        assert counts(c, qid) == (1, 0, 1)
