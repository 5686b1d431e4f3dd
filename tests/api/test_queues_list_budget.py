"""A listing page (API-request-queues.md 5.7) of large requests stops at a byte budget, with a nextCursor, instead of
holding ``limit`` requests of megabytes each (the attack run: 100 requests of 2 MB in one page, 190 MiB answered,
the server grew 575 MiB). Every request is still listed once, pages never empty but the last."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        qid = new_queue(c)
        for start in range(0, count, 25):
            batch = [{"uniqueKey": f"{i:08d}" + "k" * long, "url": "u" * long} for i in range(start, min(count, start + 25))]
            r = c.post(f"{Q}/{qid}/requests/batch", json=batch)
            assert r.status_code == 201, r.text
        head = c.get(f"{Q}/{qid}/head", params={"limit": 1000}).json()["data"]
        assert head["limit"] == 1000
        keys = [item["uniqueKey"][:8] for item in head["items"]]
        assert keys == [f"{i:08d}" for i in range(fit)]  # in head order, cut at the budget
        assert len(c.get(f"{Q}/{qid}/head", params={"limit": 5}).json()["data"]["items"]) == 5
        taken = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 60, "limit": 25}).json()["data"]["items"]
        assert [item["uniqueKey"][:8] for item in taken] == keys[:25]
        rest = c.get(f"{Q}/{qid}/head", params={"limit": 1000}).json()["data"]["items"]
        assert [item["uniqueKey"][:8] for item in rest] == [f"{i:08d}" for i in range(25, min(count, 25 + fit))]
