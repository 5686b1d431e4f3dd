"""A Crawlee crawler run as an Actor with the `apify` SDK, unmodified: the script the crawler tests start (one
process, or several on one queue). Its environment is docs/sdk.md's, plus:

    CRAWL_START    the first URL
    CRAWL_WORKER   this process's name (its results are stored under it)
    CRAWL_MODE     ``single`` (the SDK's default queue client) or ``shared`` (request_queue_access='shared')
    CRAWL_QUEUE    a named queue to open (else the Actor's default queue)
    CRAWL_LOCK_SECS  shared mode: the SDK's lock time (180 s by default) made shorter, for the test that kills a
                   crawler and waits for its locks to lapse; the only change to the SDK's behaviour
    CRAWL_DELAY    seconds each page's handler waits (to have work in flight when a crawler is killed)

Each page handled is stored in the key-value store ``crawl-results`` as ``page-<n>-<worker>`` (the crawl stores
nothing in a dataset: openkvs's dataset API is another issue's work)."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta

from apify import Actor
from apify.storage_clients import ApifyStorageClient, SmartApifyStorageClient
from crawlee import service_locator
from crawlee.crawlers import ParselCrawler, ParselCrawlingContext

START = os.environ["CRAWL_START"]
WORKER = os.environ["CRAWL_WORKER"]
MODE = os.environ.get("CRAWL_MODE", "single")
QUEUE = os.environ.get("CRAWL_QUEUE") or None
LOCK_SECS = os.environ.get("CRAWL_LOCK_SECS")
DELAY = float(os.environ.get("CRAWL_DELAY", "0"))

if MODE == "shared":
    if LOCK_SECS:
        from apify.storage_clients._apify._request_queue_shared_client import ApifyRequestQueueSharedClient

        lock = timedelta(seconds=int(LOCK_SECS))
        ApifyRequestQueueSharedClient._DEFAULT_LOCK_TIME = lock  # type: ignore[misc]
        ApifyRequestQueueSharedClient._MIN_LOCK_TIME_AT_HANDOFF = lock / 2  # type: ignore[misc]
    service_locator.set_storage_client(
        SmartApifyStorageClient(cloud_storage_client=ApifyStorageClient(request_queue_access="shared"))
    )


async def main() -> None:
    async with Actor:
        queue = await Actor.open_request_queue(name=QUEUE) if QUEUE else await Actor.open_request_queue()
        results = await Actor.open_key_value_store(name="crawl-results")
        crawler = ParselCrawler(request_manager=queue, max_request_retries=3)
        handled = 0

        @crawler.router.default_handler
        async def handle(context: ParselCrawlingContext) -> None:
            nonlocal handled
            page = context.request.url.rstrip("/").rsplit("/", 1)[-1]
            title = context.selector.css("title::text").get()
            if DELAY:
                await asyncio.sleep(DELAY)
            await results.set_value(f"page-{page}-{WORKER}", {"url": context.request.url, "title": title})
            await context.enqueue_links()
            handled += 1

        await crawler.run([START])
        print("DONE " + json.dumps({"worker": WORKER, "handled": handled, "queue": queue.id}), flush=True)


asyncio.run(main())
