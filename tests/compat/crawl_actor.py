"""A Crawlee crawler run as an Actor with the `apify` SDK, unmodified: the script the crawler tests start (one
process, or several on one queue). Its environment is docs/sdk.md's, plus:

    CRAWL_START    the first URL
    CRAWL_WORKER   this process's name (stored with each result)
    CRAWL_CRAWLER  which of Crawlee's crawlers: ``parsel`` (the default), ``beautifulsoup``, ``http`` or
                   ``playwright`` (Debian's chromium at /usr/bin/chromium, headless; never a downloaded browser)
    CRAWL_MODE     ``single`` (the SDK's default queue client) or ``shared`` (request_queue_access='shared')
    CRAWL_QUEUE    a named queue to open (else the Actor's default queue)
    CRAWL_LOCK_SECS  shared mode: the SDK's lock time (180 s by default) made shorter, for the test that kills a
                   crawler and waits for its locks to lapse
    CRAWL_DELAY    seconds each page's handler waits (to have work in flight when a crawler is killed)

Shared mode also carries one fix of the SDK (4.1.0): ``add_batch_of_requests`` caches each request it added
without the request itself, over what a concurrent head listing of the same client had just cached (the request,
locked by this client); that client's cached head then reads as empty and it never finishes (1 loaded run in ~10
hung). tests/compat/test_sdk_shared_race.py replays that race on the unmodified SDK (a strict xfail: it fails once a
fixed SDK is installed, and then this fix goes). The fix keeps an entry's request and lock expiry when the add
caches it again; it changes nothing of what the SDK sends to openkvs.

Each page handled is one item ``{"url", "title", "worker"}`` pushed with ``context.push_data`` into the dataset
named ``crawl-results`` (named, so that crawlers sharing a queue share their results too)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin

from apify import Actor
from apify.storage_clients import ApifyStorageClient, SmartApifyStorageClient
from crawlee import service_locator

START = os.environ["CRAWL_START"]
WORKER = os.environ["CRAWL_WORKER"]
CRAWLER = os.environ.get("CRAWL_CRAWLER", "parsel")
MODE = os.environ.get("CRAWL_MODE", "single")
QUEUE = os.environ.get("CRAWL_QUEUE") or None
LOCK_SECS = os.environ.get("CRAWL_LOCK_SECS")
DELAY = float(os.environ.get("CRAWL_DELAY", "0"))
RESULTS = "crawl-results"


def _keep_cached_heads() -> None:
    """The SDK fix of the module docstring, on the shared client's ``_cache_request``."""
    from apify.storage_clients._apify._request_queue_shared_client import ApifyRequestQueueSharedClient as Shared

    cache = Shared._cache_request

    def keeping(self: Any, key: str, processed: Any, *, hydrated_request: Any = None, lock_expires_at: Any = None) -> None:
        old = self._requests_cache.get(key)
        if hydrated_request is None and old is not None:  # the add's call: keep what the head listing cached
            hydrated_request = old.hydrated
            lock_expires_at = lock_expires_at or old.lock_expires_at
        cache(self, key, processed, hydrated_request=hydrated_request, lock_expires_at=lock_expires_at)

    Shared._cache_request = keeping  # type: ignore[method-assign]


if MODE == "shared":
    if LOCK_SECS:
        from apify.storage_clients._apify._request_queue_shared_client import ApifyRequestQueueSharedClient

        lock = timedelta(seconds=int(LOCK_SECS))
        ApifyRequestQueueSharedClient._DEFAULT_LOCK_TIME = lock  # type: ignore[misc]
        ApifyRequestQueueSharedClient._MIN_LOCK_TIME_AT_HANDOFF = lock / 2  # type: ignore[misc]
    _keep_cached_heads()
    service_locator.set_storage_client(
        SmartApifyStorageClient(cloud_storage_client=ApifyStorageClient(request_queue_access="shared"))
    )


def make_crawler(queue: Any) -> Any:
    """The crawler and its handler, written as Crawlee's documentation shows for each kind."""
    common: dict[str, Any] = {"request_manager": queue, "max_request_retries": 3}

    async def store(context: Any, title: str | None) -> None:
        if DELAY:
            await asyncio.sleep(DELAY)
        await context.push_data({"url": context.request.url, "title": title, "worker": WORKER},
                                dataset_name=RESULTS)

    if CRAWLER == "parsel":
        from crawlee.crawlers import ParselCrawler, ParselCrawlingContext

        parsel = ParselCrawler(**common)

        @parsel.router.default_handler
        async def parsel_page(context: ParselCrawlingContext) -> None:
            await store(context, context.selector.css("title::text").get())
            await context.enqueue_links()

        return parsel
    if CRAWLER == "beautifulsoup":
        from crawlee.crawlers import BeautifulSoupCrawler, BeautifulSoupCrawlingContext

        soup = BeautifulSoupCrawler(**common)

        @soup.router.default_handler
        async def soup_page(context: BeautifulSoupCrawlingContext) -> None:
            await store(context, context.soup.title.string if context.soup.title else None)
            await context.enqueue_links()

        return soup
    if CRAWLER == "http":
        from crawlee.crawlers import HttpCrawler, HttpCrawlingContext

        http = HttpCrawler(**common)

        @http.router.default_handler
        async def http_page(context: HttpCrawlingContext) -> None:
            html = (await context.http_response.read()).decode()
            title = re.search(r"<title>(.*?)</title>", html)
            await store(context, title.group(1) if title else None)
            # HttpCrawler parses nothing: the links are the handler's to find
            links = [urljoin(context.request.url, href) for href in re.findall(r'href="([^"]+)"', html)]
            await context.add_requests(links)

        return http
    if CRAWLER == "playwright":
        from crawlee.crawlers import PlaywrightCrawler, PlaywrightCrawlingContext

        browser = PlaywrightCrawler(
            **common, browser_type="chromium", headless=True,
            browser_launch_options={"executable_path": "/usr/bin/chromium"},
        )

        @browser.router.default_handler
        async def browser_page(context: PlaywrightCrawlingContext) -> None:
            await store(context, await context.page.title())
            await context.enqueue_links()

        return browser
    raise SystemExit(f"CRAWL_CRAWLER={CRAWLER!r}: parsel, beautifulsoup, http or playwright")


async def main() -> None:
    async with Actor:
        queue = await Actor.open_request_queue(name=QUEUE) if QUEUE else await Actor.open_request_queue()
        crawler = make_crawler(queue)
        stats = await crawler.run([START])
        print("DONE " + json.dumps({"worker": WORKER, "handled": stats.requests_finished, "queue": queue.id}),
              flush=True)


asyncio.run(main())
