"""Crawlee's other crawlers, unmodified, each run as an Actor with the `apify` SDK against a real openkvs server:
``BeautifulSoupCrawler``, ``HttpCrawler`` (the handler finds the links itself: it parses nothing) and
``PlaywrightCrawler`` with Debian's chromium (headless, ``/usr/bin/chromium``; never a downloaded browser). Each
crawls the local site of crawl_site.py (linked pages, duplicate links) with its request queue and its results on
openkvs, and we check what a user would: every page fetched once, the dataset holds one item per page with its
title, and the queue is finished with every request handled. ``ParselCrawler`` is test_crawlee.py's (with the
shared-queue and kill -9 crawls)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import unavailable

from .crawl_site import Site
from .crawling import finish, queue_counts, results, start_crawler

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Server

# slow: real Crawlee crawls (Actor processes, a site), minutes on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.server_process, pytest.mark.timeout(600)]

PAGES = 60
CHROMIUM = "/usr/bin/chromium"


def crawl_and_check(server: Server, tmp_path: Path, crawler: str) -> None:
    with Site(PAGES) as site:
        report = finish(start_crawler(server, tmp_path, crawler, CRAWL_CRAWLER=crawler,
                                      CRAWL_START=f"{site.url}/page/0"), server)
        hits = dict(site.hits)
    assert hits == {str(i): 1 for i in range(PAGES)}  # every page fetched, each exactly once
    assert report["handled"] == PAGES
    with server.client() as c:
        items = results(c)
        assert sorted(it["url"] for it in items) == sorted(f"{site.url}/page/{i}" for i in range(PAGES))  # one each
        assert {it["url"]: it["title"] for it in items} == {f"{site.url}/page/{i}": f"Page {i}" for i in range(PAGES)}
        assert {it["worker"] for it in items} == {crawler}
        assert queue_counts(c, report["queue"]) == (PAGES, PAGES, 0)  # finished: all handled, none pending
    errors = [line for line in server.log().splitlines() if '" 5' in line]
    assert not errors, errors[:5]


@pytest.mark.parametrize("crawler", ["beautifulsoup", "http"])
def test_http_crawlers(crawl_server: Server, tmp_path: Path, crawler: str) -> None:
    crawl_and_check(crawl_server, tmp_path, crawler)


def test_playwright_crawler(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    """One backend: the browser is what this adds, and the queue calls are the same as the other crawlers'."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401 - crawlee[playwright]'s driver, a test dependency
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    server = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    crawl_and_check(server, tmp_path, "playwright")
