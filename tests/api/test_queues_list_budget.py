"""A listing page (API-request-queues.md 5.7) of large requests stops at a byte budget, with a nextCursor, instead of
holding ``limit`` requests of megabytes each (the attack run: 100 requests of 2 MB in one page, 190 MiB answered,
the server grew 575 MiB). Every request is still listed once, pages never empty but the last."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

from openkvs.storage.queues import LIST_PAGE_BYTES

from .test_queues_attack import Q, new_queue

if TYPE_CHECKING:
    from tests.conftest import Server

BIG = LIST_PAGE_BYTES * 3 // 8  # three requests pass the budget: a page holds them, the fourth goes to the next


def test_a_page_of_big_requests_stops_at_its_byte_budget(shared_server: Server) -> None:
    with shared_server.client() as c:
        c.timeout = 120
        qid = new_queue(c)
        for i in range(4):
            r = c.post(f"{Q}/{qid}/requests", json={"url": f"https://e.com/{i}", "uniqueKey": f"k{i}",
                                                    "userData": {"blob": "x" * BIG}})
            assert r.status_code == 201, r.text
        c.post(f"{Q}/{qid}/requests", json={"url": "https://e.com/small", "uniqueKey": "small"})
        pages: list[list[str]] = []  # the uniqueKeys of each page
        cursor = None
        while True:
            data = c.get(f"{Q}/{qid}/requests", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
            data = data["data"]
            assert data["limit"] == 10
            pages.append([item["uniqueKey"] for item in data["items"]])
            assert all(len(item.get("userData", {}).get("blob", "")) in (0, BIG) for item in data["items"])
            cursor = data["nextCursor"]
            if cursor is None:
                break
        # IDs come in hash order, the small request anywhere: the page ends with the third big one
        assert [sum(key != "small" for key in page) for page in pages] == [3, 1]
        assert sorted(key for page in pages for key in page) == ["k0", "k1", "k2", "k3", "small"]


def test_the_head_stops_at_the_same_byte_budget(shared_server: Server) -> None:
    """GET head (5.11) carries each request's uniqueKey and url, up to 65,535 bytes each: its 1,000 requests were
    131 MB in one answer (the attack run: +370 MB in the server for one such GET, +1 GB for four at once). It too
    stops once they reach LIST_PAGE_BYTES (the first request always comes), in head order; a head under the budget
    is whole, and the requests past the cut come once those before it are taken."""
    long = 65_000
    per_request = 2 * long + 8  # a uniqueKey and a url of about `long` bytes each
    fit = -(-LIST_PAGE_BYTES // per_request)  # requests until the bytes before the next reach the budget
    count = fit + 10
    with shared_server.client() as c:
        c.timeout = 120
        qid = queue_of(c, count, "k" * long, "u" * long)
        head = c.get(f"{Q}/{qid}/head", params={"limit": 1000}).json()["data"]
        assert head["limit"] == 1000
        keys = [item["uniqueKey"][:8] for item in head["items"]]
        assert keys == [f"{i:08d}" for i in range(fit)]  # in head order, cut at the budget
        assert len(c.get(f"{Q}/{qid}/head", params={"limit": 5}).json()["data"]["items"]) == 5
        taken = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 60, "limit": 25}).json()["data"]["items"]
        assert [item["uniqueKey"][:8] for item in taken] == keys[:25]
        rest = c.get(f"{Q}/{qid}/head", params={"limit": 1000}).json()["data"]["items"]
        assert [item["uniqueKey"][:8] for item in rest] == [f"{i:08d}" for i in range(25, min(count, 25 + fit))]


def _post(c: httpx.Client, url: str, data: object) -> httpx.Response:
    """As JSON in UTF-8 (httpx's ``json=`` escapes every non-ASCII character as six bytes)."""
    return c.post(url, content=json.dumps(data, ensure_ascii=False).encode(), headers={"content-type": "application/json"})


def queue_of(c: httpx.Client, count: int, key_tail: str, url: str) -> str:
    """A new queue of ``count`` requests, uniqueKey ``{i:08d}`` + ``key_tail`` and ``url`` each, added 25 a batch."""
    qid = new_queue(c)
    for start in range(0, count, 25):
        batch = [{"uniqueKey": f"{i:08d}" + key_tail, "url": url} for i in range(start, min(count, start + 25))]
        r = _post(c, f"{Q}/{qid}/requests/batch", batch)
        assert r.status_code == 201 and not r.json()["data"]["unprocessedRequests"], r.text
    return qid


def test_a_page_counts_its_budget_in_utf8_bytes(shared_server: Server) -> None:
    """The budget is bytes on every backend: bodies of 3-byte characters ("€") fill a page with a third as many
    characters as ASCII ones (SQLite counted characters: all four big requests in one page of 3 budgets)."""
    euros = BIG // 3  # about BIG bytes of body each
    with shared_server.client() as c:
        c.timeout = 120
        qid = new_queue(c)
        for i in range(4):
            r = _post(c, f"{Q}/{qid}/requests", {"url": f"https://e.com/{i}", "uniqueKey": f"k{i}",
                                                  "userData": {"blob": "€" * euros}})
            assert r.status_code == 201, r.text
        c.post(f"{Q}/{qid}/requests", json={"url": "https://e.com/small", "uniqueKey": "small"})
        pages: list[list[str]] = []
        cursor = None
        while True:
            data = c.get(f"{Q}/{qid}/requests", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
            pages.append([item["uniqueKey"] for item in data["data"]["items"]])
            cursor = data["data"]["nextCursor"]
            if cursor is None:
                break
        assert [sum(key != "small" for key in page) for page in pages] == [3, 1]


def test_the_head_counts_its_budget_in_utf8_bytes(shared_server: Server) -> None:
    """uniqueKeys and urls of 3-byte characters: the head stops where their bytes reach LIST_PAGE_BYTES, at the
    same request on SQLite as on PostgreSQL (SQLite counted characters, and sent three times as many)."""
    euros = 21_000  # 63,000 bytes: under the 65,535 a uniqueKey or url may have
    per_request = 8 + 2 * 3 * euros
    fit = -(-LIST_PAGE_BYTES // per_request)  # requests until the bytes before the next reach the budget
    count = fit + 10
    with shared_server.client() as c:
        c.timeout = 120
        qid = queue_of(c, count, "€" * euros, "€" * euros)
        head = c.get(f"{Q}/{qid}/head", params={"limit": 1000}).json()["data"]
        assert [item["uniqueKey"][:8] for item in head["items"]] == [f"{i:08d}" for i in range(fit)]
