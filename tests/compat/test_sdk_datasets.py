"""The Apify SDK (`apify`), unmodified, runs an Actor that writes and reads datasets against openkvs, with the
environment of docs/sdk.md (APIFY_DEFAULT_DATASET_ID as the platform sets it); then Crawlee's own ``Dataset``
through the Apify storage client, and the results come back through the export in each format."""

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

ACTOR = textwrap.dedent(
    '''
    import asyncio
    import json

    from apify import Actor
    from crawlee.storages import Dataset


    async def main() -> None:
        async with Actor:
            await Actor.push_data({"url": "https://a.example", "title": "A", "#debug": 1})
            await Actor.push_data([{"url": f"https://b.example/{i}", "title": f"B{i}"} for i in range(1, 4)])
            default = await Actor.open_dataset()
            data = await default.get_data()
            items = [item async for item in default.iterate_items()]
            newest = await default.get_data(desc=True, limit=1)
            await default.export_to("RESULTS", content_type="json")
            await default.export_to("RESULTS_CSV", content_type="csv")

            named = await Actor.open_dataset(name="sdk-named-dataset")
            await named.push_data([{"n": i} for i in range(2500)])
            again = await Actor.open_dataset(name="sdk-named-dataset")
            tail = await again.get_data(offset=2498)

            # Crawlee's own Dataset class, on the SDK's Apify storage client (what a crawler's push_data uses).
            crawlee_ds = await Dataset.open(name="crawlee-dataset")
            await crawlee_ds.push_data({"from": "crawlee"})
            crawlee_items = (await crawlee_ds.get_data()).items

            report = {
                "default_id": default.id,
                "items": data.items,
                "count": data.count,
                "total": data.total,
                "iterated": items,
                "newest": newest.items,
                "named_id": named.id,
                "same_named": again.id == named.id,
                "tail": tail.items,
                "crawlee_id": crawlee_ds.id,
                "crawlee_items": crawlee_items,
                "exported": await Actor.get_value("RESULTS"),
            }
            print("REPORT " + json.dumps(report), flush=True)


    asyncio.run(main())
    '''
)


def test_actor_pushes_and_reads_datasets(compat_server: Server, tmp_path: Path) -> None:
    server = compat_server
    with server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "sdk-ds-default"}).json()["data"]
        dataset = c.post("/v2/datasets", params={"name": "sdk-ds-default"}).json()["data"]
    env = sdk_env(server, store["id"])
    env["APIFY_DEFAULT_DATASET_ID"] = dataset["id"]
    script = tmp_path / "main.py"
    script.write_text(ACTOR)
    workdir = tmp_path / "cwd"  # nothing may land on the local disk
    workdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=workdir, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{server.log()[-4000:]}"
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stdout + out.stderr
    report = json.loads(lines[-1].removeprefix("REPORT "))

    expected = [{"url": "https://a.example", "title": "A", "#debug": 1}] + [
        {"url": f"https://b.example/{i}", "title": f"B{i}"} for i in range(1, 4)
    ]
    assert report["default_id"] == dataset["id"]  # APIFY_DEFAULT_DATASET_ID is the Actor's default dataset
    assert report["items"] == expected and report["count"] == 4 and report["total"] == 4
    assert report["iterated"] == expected
    assert report["newest"] == [expected[-1]]
    assert report["same_named"] is True
    assert report["tail"] == [{"n": 2498}, {"n": 2499}]
    assert report["crawlee_items"] == [{"from": "crawlee"}]
    assert report["exported"] == expected
    assert "storage" not in [p.name for p in workdir.iterdir()]

    with server.client() as c:
        named = c.get("/v2/datasets/~sdk-named-dataset").json()["data"]
        assert named["id"] == report["named_id"] and named["itemCount"] == 2500
        assert c.get("/v2/datasets/~crawlee-dataset").json()["data"]["id"] == report["crawlee_id"]
        base = f"/v2/datasets/{dataset['id']}/items"
        # The same items through the export, each format read by its own reader.
        assert c.get(base).json() == expected
        assert [json.loads(x) for x in c.get(base, params={"format": "jsonl"}).text.splitlines()] == expected
        rows = list(csv.DictReader(io.StringIO(c.get(base, params={"format": "csv"}).content.decode("utf-8-sig"))))
        assert [r["url"] for r in rows] == [e["url"] for e in expected]
        assert rows[0]["#debug"] == "1" and rows[1]["#debug"] == ""
        root = ET.fromstring(c.get(base, params={"format": "xml"}).content)
        assert [el.findtext("title") for el in root] == ["A", "B1", "B2", "B3"]
        channel = ET.fromstring(c.get(base, params={"format": "rss"}).content).find("channel")
        assert channel is not None and [el.findtext("url") for el in channel.findall("item")] == [
            e["url"] for e in expected
        ]
        html = c.get(base, params={"format": "html", "clean": "1"}).text
        assert html.count("<tr>") == 5 and "#debug" not in html
        xlsx = c.get(base, params={"format": "xlsx"}).content
        assert xlsx[:2] == b"PK"
