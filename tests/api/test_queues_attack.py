"""Hostile input to the request-queue API (API-request-queues.md sections 1-3, 5), on every backend through the real
server: each attack gets a 4xx in the contract's shape (never a 500) and changes nothing."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from openkvs.requestid import request_id

from . import assert_error, unique

if TYPE_CHECKING:
    from tests.conftest import Server

Q = "/v2/request-queues"


def new_queue(c: httpx.Client) -> str:
    r = c.post(Q, params={"name": unique("rqa")})
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]  # type: ignore[no-any-return]


def total(c: httpx.Client, qid: str) -> int:
    r = c.get(f"{Q}/{qid}")
    assert r.status_code == 200, r.text
    return r.json()["data"]["totalRequestCount"]  # type: ignore[no-any-return]


def raw_post(c: httpx.Client, path: str, body: bytes, **params: Any) -> httpx.Response:
    return c.post(path, content=body, params=params, headers={"Content-Type": "application/json"})


def req(url: str = "https://example.com/", **extra: Any) -> dict[str, Any]:
    return {"url": url, "uniqueKey": url, **extra}


# -- IDs of another kind ---------------------------------------------------------------------------------------


def test_ids_of_other_kinds_are_not_queues(shared_server: Server) -> None:
    with shared_server.client() as c:
        kvs = c.post("/v2/key-value-stores", params={"name": unique("kv")}).json()["data"]["id"]
        qid = new_queue(c)
        for other in (kvs,):
            for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/head"),
                                 ("POST", "/head/lock?lockSecs=10"), ("POST", "/requests"),
                                 ("GET", "/requests"), ("POST", "/requests/unlock")):
                kw: dict[str, Any] = {"json": req()} if method in ("POST", "PUT") and "lock" not in path else {}
                r = c.request(method, f"{Q}/{other}{path}", **kw)
                assert_error(r, 404, "record-not-found", "Request queue was not found")
        assert c.get(f"/v2/key-value-stores/{kvs}").status_code == 200  # the DELETE above did not touch it
        assert_error(c.get(f"/v2/key-value-stores/{qid}"), 404, "record-not-found")
        assert_error(c.get(f"/v2/key-value-stores/{qid}/records/a"), 404, "record-not-found")
        assert_error(c.get(f"{Q}/{kvs}/requests/{request_id('x')}"), 404, "record-not-found")


# -- bodies ----------------------------------------------------------------------------------------------------


def test_batches_outside_1_to_25(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        many = [req(f"https://e.com/{i}") for i in range(26)]
        for body in (many, [], {"url": "x"}, "x", None, 5):
            r = c.post(f"{Q}/{qid}/requests/batch", json=body)
            assert_error(r, 400, "invalid-input")
            r = c.request("DELETE", f"{Q}/{qid}/requests/batch", json=body)
            assert_error(r, 400, "invalid-input")
        assert total(c, qid) == 0
        ok = c.post(f"{Q}/{qid}/requests/batch", json=many[:25])
        assert ok.status_code == 201 and len(ok.json()["data"]["processedRequests"]) == 25
        assert total(c, qid) == 25


def test_deep_and_huge_bodies(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        deep = b'{"url":"https://e.com/","uniqueKey":"k","userData":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001
        assert_error(raw_post(c, f"{Q}/{qid}/requests", deep), 400, "invalid-input")
        deep_batch = b"[" * 100_000 + b"]" * 100_000
        assert_error(raw_post(c, f"{Q}/{qid}/requests/batch", deep_batch), 400, "invalid-input")
        huge = json.dumps(req(userData={"x": "y" * 9_500_000})).encode()
        assert_error(raw_post(c, f"{Q}/{qid}/requests", huge), 413, "request-too-large")
        assert_error(raw_post(c, f"{Q}/{qid}/requests", b'{"url": '), 400, "invalid-input")
        assert_error(raw_post(c, f"{Q}/{qid}/requests", b'{"url":"\xff\xfe","uniqueKey":"k"}'), 400, "invalid-input")
        assert total(c, qid) == 0


@pytest.mark.parametrize("field", ["uniqueKey", "url"])
def test_text_field_extremes(shared_server: Server, field: str) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        for bad in ("", "a\u0000b", 5, ["x"], {"x": 1}, True, "é" * 32_768):
            r = c.post(f"{Q}/{qid}/requests", json={**req(), field: bad})
            assert_error(r, 400, "invalid-input")
        lone = json.dumps({**req(), field: "a\ud800b"}).encode()  # json.dumps sends it as a \\u escape
        assert_error(raw_post(c, f"{Q}/{qid}/requests", lone), 400, "invalid-input")
        assert total(c, qid) == 0
        longest = "é" * 32_767 + "a"  # 65,535 bytes: the limit itself is allowed
        r = c.post(f"{Q}/{qid}/requests", json={**req(), field: longest})
        assert r.status_code == 201, r.text
        rid = r.json()["data"]["requestId"]
        got = c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]
        assert got[field] == longest


def test_request_field_extremes(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        bad_fields: list[dict[str, Any]] = [
            {"method": "get"}, {"method": 1}, {"method": "GET\u0000"}, {"method": ""},
            {"retryCount": -1}, {"retryCount": -3.0}, {"retryCount": 1.5}, {"retryCount": 1e300},
            {"retryCount": 2**63}, {"retryCount": "1"}, {"retryCount": True},
            {"userData": []}, {"userData": "x"}, {"userData": {"a\u0000": 1}}, {"userData": {"a": "\u0000"}},
            {"headers": [1]}, {"payload": 5}, {"noRetry": "yes"}, {"errorMessages": [1]},
            {"errorMessages": "x"}, {"handledAt": "yesterday"}, {"handledAt": "2026-13-40T00:00:00Z"},
            {"handledAt": "2026-01-01T00:00:00"}, {"handledAt": "0000-01-01T00:00:00Z"},
            {"handledAt": "9999-12-31T23:59:59-23:59"}, {"handledAt": 5}, {"id": "x" * 15},
            {"handledAt": "２０２０-01-01T00:00:00Z"}, {"handledAt": "2020-01-01T00:00:00.１Z"},  # (not ASCII digits)
            {"handledAt": "2020-01-01T00:00:00+0１:00"},
            {"loadedUrl": 5},
        ]
        for extra in bad_fields:
            r = c.post(f"{Q}/{qid}/requests", json={**req(), **extra})
            assert_error(r, 400, "request-id-invalid" if "id" in extra else "invalid-input")
            r = c.post(f"{Q}/{qid}/requests/batch", json=[req("https://e.com/ok"), {**req(), **extra}])
            assert_error(r, 400, "request-id-invalid" if "id" in extra else "invalid-input")
        for number in (b"1e400", b"-1e400", b"NaN", b"Infinity"):
            body = b'{"url":"https://e.com/","uniqueKey":"k","userData":{"n":' + number + b"}}"
            assert_error(raw_post(c, f"{Q}/{qid}/requests", body), 400, "invalid-input")
        assert total(c, qid) == 0
        big = {"n": 10**40, "f": 1.5e300, "s": "\U0001f600", "deep": [[[[{"k": None}]]]]}
        r = c.post(f"{Q}/{qid}/requests", json=req(userData=big, retryCount=2**53 - 1))
        assert r.status_code == 201, r.text
        got = c.get(f"{Q}/{qid}/requests/{r.json()['data']['requestId']}").json()["data"]
        assert got["userData"] == big and got["retryCount"] == 2**53 - 1


# -- query values ----------------------------------------------------------------------------------------------


BAD_LOCK_SECS = ["0", "-1", "1.5", "1e3", "abc", "86401", "9" * 40, " 5", "\uff15", "0x10", ""]


def test_lock_secs_extremes(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        rid = c.post(f"{Q}/{qid}/requests", json=req()).json()["data"]["requestId"]
        for secs in BAD_LOCK_SECS:
            r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": secs, "clientKey": "a"})
            assert_error(r, 400, "invalid-input")
            r = c.put(f"{Q}/{qid}/requests/{rid}/lock", params={"lockSecs": secs, "clientKey": "a"})
            assert_error(r, 400, "invalid-input")
        assert_error(c.post(f"{Q}/{qid}/head/lock"), 400, "invalid-input")  # lockSecs required
        r = c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]
        assert "lockExpiresAt" not in r  # nothing was locked by the refused calls
        r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": "86400", "clientKey": "a"})
        assert r.status_code == 201 and [i["id"] for i in r.json()["data"]["items"]] == [rid]


def test_limit_extremes(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        c.post(f"{Q}/{qid}/requests/batch", json=[req(f"https://e.com/{i}") for i in range(3)])
        for limit in ("-1", "abc", "1.5", "1e3"):
            for method, path, extra in (("GET", "/head", {}), ("POST", "/head/lock", {"lockSecs": "5"}),
                                        ("GET", "/requests", {})):
                r = c.request(method, f"{Q}/{qid}{path}", params={"limit": limit, **extra})
                assert_error(r, 400, "invalid-input")
        for limit in ("0", "9" * 40):  # 0 is the default; huge is clamped to the maximum
            assert c.get(f"{Q}/{qid}/head", params={"limit": limit}).status_code == 200
            assert c.get(f"{Q}/{qid}/requests", params={"limit": limit}).status_code == 200
        r = c.post(f"{Q}/{qid}/head/lock", params={"limit": "9" * 40, "lockSecs": "5", "clientKey": "z"})
        assert r.status_code == 201 and len(r.json()["data"]["items"]) == 3


BAD_CLIENT_KEYS = ["", "a" * 33, "a b", "é", "a\u0000", "\t", "a\u007f"]


def test_client_key_rules(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        rid = c.post(f"{Q}/{qid}/requests", json=req()).json()["data"]["requestId"]
        calls = [
            ("GET", "/head", {}), ("POST", "/head/lock", {"lockSecs": "5"}), ("POST", "/requests/unlock", {}),
            ("PUT", f"/requests/{rid}/lock", {"lockSecs": "5"}), ("DELETE", f"/requests/{rid}/lock", {}),
        ]
        for key in BAD_CLIENT_KEYS:
            for method, path, extra in calls:
                r = c.request(method, f"{Q}/{qid}{path}", params={"clientKey": key, **extra})
                assert_error(r, 400, "invalid-client-key")
            r = c.post(f"{Q}/{qid}/requests", params={"clientKey": key}, json=req("https://e.com/k"))
            assert_error(r, 400, "invalid-client-key")
        assert total(c, qid) == 1
        longest = "!" + "~" * 31
        r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": "5", "clientKey": longest})
        assert r.status_code == 201 and r.json()["data"]["clientKey"] == longest


def test_request_ids_in_the_path(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        rid = c.post(f"{Q}/{qid}/requests", json=req()).json()["data"]["requestId"]
        for bad in ("a" * 65, "%00", "x%FFy", "%F0%9F%98%80", "a.b", "a" * 10_000):
            assert_error(c.get(f"{Q}/{qid}/requests/{bad}"), 404, "record-not-found")
            assert_error(c.put(f"{Q}/{qid}/requests/{bad}/lock", params={"lockSecs": "5", "clientKey": "a"}),
                         404, "record-not-found")
            assert c.delete(f"{Q}/{qid}/requests/{bad}").status_code in (204, 404)
        r = c.put(f"{Q}/{qid}/requests/{request_id('other')}", json=req())
        assert_error(r, 400, "request-id-invalid")
        for cursor in ("!!!", "eyJ4IjoxfQ", "bnVsbA", "a" * 5000):
            assert_error(c.get(f"{Q}/{qid}/requests", params={"cursor": cursor}), 400, "invalid-input")
        assert_error(c.get(f"{Q}/{qid}/requests", params={"filter": "handled"}), 400, "invalid-input")
        assert total(c, qid) == 1 and c.get(f"{Q}/{qid}/requests/{rid}").status_code == 200


def test_queue_update_extremes(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        for body in ({"name": "bad name"}, {"name": 5}, {"title": "t" * 201}, {"title": 5},
                     {"generalAccess": "EVERYONE"}, {"name": "a\u0000"}, [1], "x"):
            r = c.put(f"{Q}/{qid}", json=body)
            assert_error(r, 400, "invalid-input")
        for name in ("bad name", "a" * 64, "-a", "a\u0000"):
            assert c.post(Q, params={"name": name}).status_code == 400


# -- the queue deleted while clients work on it ----------------------------------------------------------------


def test_delete_queue_while_clients_lock_and_mark(shared_server: Server) -> None:
    with shared_server.client() as c:
        qid = new_queue(c)
        for start in range(0, 200, 25):
            c.post(f"{Q}/{qid}/requests/batch", json=[req(f"https://e.com/{i}") for i in range(start, start + 25)])
    statuses: list[int] = []
    bad: list[str] = []
    stop = threading.Event()

    def crawl(n: int) -> None:
        key = f"client{n}"
        with shared_server.client() as cc:
            while not stop.is_set():
                r = cc.post(f"{Q}/{qid}/head/lock", params={"lockSecs": "60", "clientKey": key, "limit": "5"})
                statuses.append(r.status_code)
                if r.status_code != 201:
                    if r.status_code >= 500 or r.status_code != 404:
                        bad.append(r.text)
                    return
                for item in r.json()["data"]["items"]:
                    done = {**req(item["url"]), "handledAt": "2026-01-01T00:00:00Z"}
                    for rr in (cc.put(f"{Q}/{qid}/requests/{item['id']}/lock",
                                      params={"lockSecs": "60", "clientKey": key}),
                               cc.put(f"{Q}/{qid}/requests/{item['id']}", params={"clientKey": key}, json=done),
                               cc.post(f"{Q}/{qid}/requests", params={"clientKey": key},
                                       json=req(item["url"] + "/next")),
                               cc.delete(f"{Q}/{qid}/requests/{item['id']}/lock", params={"clientKey": key})):
                        statuses.append(rr.status_code)
                        if rr.status_code >= 500:
                            bad.append(rr.text)

    threads = [threading.Thread(target=crawl, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    with shared_server.client() as c:
        while len(statuses) < 20:
            threading.Event().wait(0.01)
        assert c.delete(f"{Q}/{qid}").status_code == 204
        stop.set()
        for t in threads:
            t.join(60)
        assert not bad, bad[:3]
        assert_error(c.get(f"{Q}/{qid}"), 404, "record-not-found")
        assert_error(c.post(f"{Q}/{qid}/requests", json=req()), 404, "record-not-found", "Request queue was not found")


def test_lock_expires_at_sent_back_is_not_stored(shared_server: Server) -> None:
    """Clients update the request they read, lockExpiresAt included: it is output only, so never answered twice
    nor after the lock has ended."""
    with shared_server.client() as c:
        qid = new_queue(c)
        c.post(f"{Q}/{qid}/requests/batch", json=[req(), req("https://e.com/other")])
        locked = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": "60", "clientKey": "a", "limit": "2"})
        ids = [i["id"] for i in locked.json()["data"]["items"]]
        for rid in ids:
            full = c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]
            sent = {**full, "lockExpiresAt": "2000-01-01T00:00:00.000Z"}
            assert c.put(f"{Q}/{qid}/requests/{rid}", params={"clientKey": "a"}, json=sent).status_code == 200
        c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": "60", "clientKey": "a", "limit": "1"})  # lock one again
        texts = [c.get(f"{Q}/{qid}/requests/{rid}").text for rid in ids]
        assert sorted(t.count('"lockExpiresAt"') for t in texts) == [0, 1], texts
        assert all("2000-01-01" not in t for t in texts), texts
        listing = c.get(f"{Q}/{qid}/requests").text
        assert listing.count('"lockExpiresAt"') == 1 and "2000-01-01" not in listing, listing
