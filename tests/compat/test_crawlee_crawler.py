"""A real Crawlee crawler, unmodified, crawls a small site served on 127.0.0.1 inside an Actor run against openkvs:
its request queue is an openkvs queue, ``context.push_data`` lands in the openkvs dataset named by
APIFY_DEFAULT_DATASET_ID, ``crawler.get_data()`` reads it back, and the results come back through the export in each
format. Nothing is stored on the local disk."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from tests.compat.test_sdk import sdk_env

if TYPE_CHECKING:
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


def test_crawler_results_land_in_an_openkvs_dataset(compat_server: Server, tmp_path: Path) -> None:
    server = compat_server
    with server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "crawl-kvs"}).json()["data"]
        dataset = c.post("/v2/datasets", params={"name": "crawl-results"}).json()["data"]
    env = sdk_env(server, store["id"])
    env["APIFY_DEFAULT_DATASET_ID"] = dataset["id"]
    script = tmp_path / "crawler.py"
    script.write_text(CRAWLER)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=workdir, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{server.log()[-4000:]}"
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stdout + out.stderr
    report = json.loads(lines[-1].removeprefix("REPORT "))
    base = report["base"]
    expected = {f"{base}/": "Home", f"{base}/a": "Page A", f"{base}/b": "Page B", f"{base}/c": "Page C"}

    assert report["dataset_id"] == dataset["id"]  # the crawler's default dataset is the Actor's, on openkvs
    assert "storage" not in [p.name for p in workdir.iterdir()]
    requests = [line.split('"')[1] for line in server.log().splitlines() if '"' in line and " HTTP/1.1" in line]
    assert any(r.split()[1].startswith("/v2/request-queues") for r in requests)  # the queue was openkvs's
    assert report["total"] == 4
    assert {it["url"]: it["title"] for it in report["items"]} == expected  # each page once

    url = f"/v2/datasets/{dataset['id']}/items"
    with server.client() as c:
        assert c.get(f"/v2/datasets/{dataset['id']}").json()["data"]["itemCount"] == 4
        assert {it["url"] for it in c.get(url).json()} == set(expected)
        jsonl = [json.loads(x) for x in c.get(url, params={"format": "jsonl"}).text.splitlines()]
        assert {it["url"]: it["title"] for it in jsonl} == expected
        rows = list(csv.DictReader(io.StringIO(c.get(url, params={"format": "csv"}).content.decode("utf-8-sig"))))
        assert {r["url"]: r["title"] for r in rows} == expected and rows[0].keys() == {"url", "title", "links"}
        root = ET.fromstring(c.get(url, params={"format": "xml"}).content)
        assert {el.findtext("url"): el.findtext("title") for el in root} == expected
        channel = ET.fromstring(c.get(url, params={"format": "rss"}).content).find("channel")
        assert channel is not None and len(channel.findall("item")) == 4
        html = c.get(url, params={"format": "html"}).text
        assert html.count("<tr>") == 5 and "Page C" in html
        xlsx = c.get(url, params={"format": "xlsx"}).content
        try:
            import openpyxl
        except ImportError:
            assert xlsx[:2] == b"PK"
        else:
            sheet = openpyxl.load_workbook(io.BytesIO(xlsx), read_only=True).worksheets[0]
            cells = [list(r) for r in sheet.iter_rows(values_only=True)]
            assert cells[0] == ["url", "title", "links"] and {r[0]: r[1] for r in cells[1:]} == expected
