"""Real Crawlee crawlers (``ParselCrawler``), run as Actors with the `apify` SDK, unmodified, crawl a local site
with their request queue on openkvs: one crawler in the SDK's default (single) mode, then four crawler processes
sharing one named queue in shared mode, then four again with one of them killed (``kill -9``) halfway. Both
backends. The site counts its own fetches; the crawlers push one item per page they handled into a dataset
(``context.push_data``); the queue's counters are read at the end. The other crawlers of Crawlee are
test_crawlee_crawlers.py's.

The Actor is tests/compat/crawl_actor.py; its environment is docs/sdk.md's."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .crawl_site import Site
from .crawling import finish, finish_all, handled_pages, queue_counts, results, start_crawler

if TYPE_CHECKING:
    from tests.conftest import Server

# slow: real Crawlee crawls (Actor processes, a site), minutes on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.server_process, pytest.mark.timeout(600)]

PAGES = 200


def test_one_crawler_single_mode(crawl_server: Server, tmp_path: Path) -> None:
    with Site(PAGES) as site:
        report = finish(start_crawler(crawl_server, tmp_path, "solo", CRAWL_START=f"{site.url}/page/0"), crawl_server)
        hits = dict(site.hits)
    assert hits == {str(i): 1 for i in range(PAGES)}  # every page fetched, each exactly once
    assert report["handled"] == PAGES
    with crawl_server.client() as c:
        assert handled_pages(c) == {str(i): ["solo"] for i in range(PAGES)}  # one item per page
        assert {it["url"]: it["title"] for it in results(c)} == {f"{site.url}/page/{i}": f"Page {i}"
                                                                 for i in range(PAGES)}
        assert queue_counts(c, report["queue"]) == (PAGES, PAGES, 0)
    # Only the storage APIs were called (no actor runs, no users/me), and none of them failed but for the 404s of
    # the default storages' IDs before the SDK creates them.
    lines = [line for line in crawl_server.log().splitlines() if " HTTP/1.1" in line and '"' in line]
    assert lines
    for line in lines:
        path = line.split('"')[1].split()[1]
        assert path.startswith(("/v2/request-queues", "/v2/key-value-stores", "/v2/datasets")), line


def test_four_crawlers_share_one_queue(crawl_server: Server, tmp_path: Path) -> None:
    with Site(PAGES) as site:
        procs = [
            start_crawler(crawl_server, tmp_path, f"w{i}", CRAWL_START=f"{site.url}/page/0", CRAWL_MODE="shared",
                          CRAWL_QUEUE="shared-crawl", CRAWL_DELAY="0.02")
            for i in range(4)
        ]
        reports = finish_all(procs, crawl_server)
        hits = dict(site.hits)
    assert hits == {str(i): 1 for i in range(PAGES)}
    assert sum(r["handled"] for r in reports) == PAGES
    assert len({r["queue"] for r in reports}) == 1
    assert sum(r["handled"] > 0 for r in reports) >= 2  # the work was shared
    with crawl_server.client() as c:
        pages = handled_pages(c)
        assert sorted(pages, key=int) == [str(i) for i in range(PAGES)]
        assert all(len(workers) == 1 for workers in pages.values())
        q = c.get(f"/v2/request-queues/{reports[0]['queue']}").json()["data"]
        assert (q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]) == (PAGES, PAGES, 0)
        assert q["hadMultipleClients"] is True


def test_a_crawler_killed_halfway(crawl_server: Server, tmp_path: Path) -> None:
    """One of four crawlers is killed with SIGKILL while it holds locked requests. Its locks (10 s here, see
    crawl_actor.py) lapse, the others take those requests over: every page is handled, a page is fetched twice
    only if the killed crawler had fetched it without marking it handled, and the counters end exact."""
    with Site(PAGES) as site, crawl_server.client() as c:
        common = {"CRAWL_START": f"{site.url}/page/0", "CRAWL_MODE": "shared", "CRAWL_QUEUE": "killed-crawl",
                  "CRAWL_DELAY": "0.1", "CRAWL_LOCK_SECS": "10"}
        procs = [start_crawler(crawl_server, tmp_path, f"k{i}", **common) for i in range(4)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            r = c.get("/v2/request-queues/~killed-crawl")
            if r.status_code == 200 and r.json()["data"]["handledRequestCount"] >= PAGES // 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the crawl made no progress")
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(30)
        survivors = finish_all(procs[1:], crawl_server)
        hits = dict(site.hits)
        results = handled_pages(c)
        queue_id = c.get("/v2/request-queues/~killed-crawl").json()["data"]["id"]
        assert queue_counts(c, queue_id) == (PAGES, PAGES, 0)
    assert set(hits) == {str(i) for i in range(PAGES)}
    assert set(results) == {str(i) for i in range(PAGES)}
    # A page went round twice only when the killed crawler had it: fetched a second time only after the kill
    # (never by two live crawlers), and stored by at most the victim and one other.
    for page, times in site.times.items():
        assert all(t > killed_at for t in times[1:]), (page, times, killed_at)
    for page, workers in results.items():
        assert len(workers) == 1 or (len(workers) == 2 and "k0" in workers), (page, workers)
    assert sum(r["handled"] for r in survivors) == sum(1 for w in results.values() for x in w if x != "k0")
    print("victim stored", sum("k0" in w for w in results.values()), "pages; fetched twice:", sorted(p for p, n in hits.items() if n > 1))
