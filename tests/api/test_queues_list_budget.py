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
