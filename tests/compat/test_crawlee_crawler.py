"""A real Crawlee crawler, unmodified, crawls a small site served on 127.0.0.1 inside an Actor run against openkvs:
its request queue is an openkvs queue, ``context.push_data`` lands in the openkvs dataset named by
APIFY_DEFAULT_DATASET_ID, ``crawler.get_data()`` reads it back, and the results come back through the export in each
format. Nothing is stored on the local disk."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.compat.actors import read_exports

pytestmark = pytest.mark.slow  # a real Crawlee crawl (an Actor process, a site, minutes on a loaded machine)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.compat.actors import ActorRun
    from tests.conftest import Server

CRAWLER = textwrap.dedent(
    '''
    import asyncio
    import json
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx
    from apify import Actor
    from crawlee.crawlers import BasicCrawler, BasicCrawlingContext

    PAGES = {
        "/": '<title>Home</title><a href="/a">A</a> <a href="/b">B</a>',
        "/a": '<title>Page A</title><a href="/b">B</a> <a href="/c">C</a>',
        "/b": "<title>Page B</title>",
        "/c": "<title>Page C</title><a href=\\"/\\">home</a>",
    }


    class Site(BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGES.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *args):
            pass


    async def main() -> None:
        site = ThreadingHTTPServer(("127.0.0.1", 0), Site)
        threading.Thread(target=site.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{site.server_address[1]}"
        async with Actor:
            crawler = BasicCrawler(max_request_retries=1)  # its queue and dataset: the Actor's, on openkvs

            @crawler.router.default_handler
            async def handler(context: BasicCrawlingContext) -> None:
                async with httpx.AsyncClient() as http:
                    html = (await http.get(context.request.url)).text
                title = re.search("<title>(.*?)</title>", html).group(1)
                await context.push_data({"url": context.request.url, "title": title, "links": len(re.findall("href", html))})
                await context.add_requests([base + href for href in re.findall('href="([^"]+)"', html)])

            await crawler.run([base + "/"])
            data = await crawler.get_data()
            dataset = await crawler.get_dataset()
            print("REPORT " + json.dumps({"items": data.items, "total": data.total, "dataset_id": dataset.id, "base": base}), flush=True)
        site.shutdown()


    asyncio.run(main())
    '''
)


def test_crawler_results_land_in_an_openkvs_dataset(compat_server: Server, run_actor: Callable[..., ActorRun]) -> None:
    server = compat_server
    with server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "crawl-kvs"}).json()["data"]
        dataset = c.post("/v2/datasets", params={"name": "crawl-results"}).json()["data"]
    run = run_actor(CRAWLER, store["id"], dataset["id"])
    report = run.report
    base = report["base"]
    expected = {f"{base}/": "Home", f"{base}/a": "Page A", f"{base}/b": "Page B", f"{base}/c": "Page C"}

    assert report["dataset_id"] == dataset["id"]  # the crawler's default dataset is the Actor's, on openkvs
    assert any(r.split()[1].startswith("/v2/request-queues") for r in run.requests)  # the queue was openkvs's
    assert report["total"] == 4
    assert {it["url"]: it["title"] for it in report["items"]} == expected  # each page once

    with server.client() as c:
        assert c.get(f"/v2/datasets/{dataset['id']}").json()["data"]["itemCount"] == 4
        out = read_exports(c, dataset["id"])
    assert {it["url"] for it in out.json} == set(expected)
    assert {it["url"]: it["title"] for it in out.jsonl} == expected
    assert {r["url"]: r["title"] for r in out.csv} == expected and out.csv[0].keys() == {"url", "title", "links"}
    assert {el.findtext("url"): el.findtext("title") for el in out.xml} == expected
    assert len(out.rss) == 4
    assert out.html.count("<tr>") == 5 and "Page C" in out.html
    if out.xlsx is not None:
        assert out.xlsx[0] == ["url", "title", "links"] and {r[0]: r[1] for r in out.xlsx[1:]} == expected
