"""One run after another with docs/sdk.md's environment ("One run after another"): the default store is the same
for every run, and so are what the SDK and Crawlee keep in it, the default request queue (noted in
``__STORAGE_ALIASES_MAPPING``) and a crawler's statistics. A second run is the first one resumed: its crawler finds
the start URLs handled and crawls nothing; a new default store gives a fresh run."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from tests.compat.actors import run_actor

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Server

ACTOR = textwrap.dedent(
    '''
    import asyncio
    import json

    from apify import Actor
    from crawlee.crawlers import BasicCrawler, BasicCrawlingContext


    async def main() -> None:
        async with Actor:
            queue = await Actor.open_request_queue()
            crawler = BasicCrawler()
            handled = []

            @crawler.router.default_handler
            async def handle(context: BasicCrawlingContext) -> None:
                handled.append(context.request.url)

            stats = await crawler.run(["https://example.com/a", "https://example.com/b"])
            report = {"queue": queue.id, "handled": sorted(handled), "finished": stats.requests_finished}
            print("REPORT " + json.dumps(report), flush=True)


    asyncio.run(main())
    '''
)


def test_a_second_run_resumes_the_first_a_new_default_store_starts_afresh(compat_server: Server,
                                                                           tmp_path: Path) -> None:
    with compat_server.client() as c:
        first_store = c.post("/v2/key-value-stores", params={"name": "runs-one"}).json()["data"]["id"]
        other_store = c.post("/v2/key-value-stores", params={"name": "runs-two"}).json()["data"]["id"]
    urls = ["https://example.com/a", "https://example.com/b"]

    def run(store: str, name: str) -> dict[str, object]:
        (tmp_path / name).mkdir()
        return run_actor(compat_server, tmp_path / name, ACTOR, store).report

    first = run(first_store, "first")
    assert (first["handled"], first["finished"]) == (urls, 2)
    again = run(first_store, "again")
    assert again["queue"] == first["queue"]  # the default queue of the first run, found in the default store
    assert (again["handled"], again["finished"]) == ([], 2)  # nothing crawled; the statistics go on from the first
    with compat_server.client() as c:
        keys = c.get(f"/v2/key-value-stores/{first_store}/keys").json()["data"]["items"]
    assert {"__STORAGE_ALIASES_MAPPING", "__CRAWLER_STATISTICS_0"} <= {k["key"] for k in keys}
    fresh = run(other_store, "fresh")
    assert fresh["queue"] != first["queue"]
    assert (fresh["handled"], fresh["finished"]) == (urls, 2)
