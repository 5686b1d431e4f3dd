"""The Apify SDK (`apify`), unmodified, runs an Actor that writes and reads datasets against openkvs, with the
environment of docs/sdk.md (APIFY_DEFAULT_DATASET_ID as the platform sets it); then Crawlee's own ``Dataset``
through the Apify storage client, and the results come back through the export in each format."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from tests.compat.actors import read_exports

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.compat.actors import ActorRun
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


def test_actor_pushes_and_reads_datasets(compat_server: Server, run_actor: Callable[..., ActorRun]) -> None:
    server = compat_server
    with server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "sdk-ds-default"}).json()["data"]
        dataset = c.post("/v2/datasets", params={"name": "sdk-ds-default"}).json()["data"]
    report = run_actor(ACTOR, store["id"], dataset["id"]).report

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

    with server.client() as c:
        named = c.get("/v2/datasets/~sdk-named-dataset").json()["data"]
        assert named["id"] == report["named_id"] and named["itemCount"] == 2500
        assert c.get("/v2/datasets/~crawlee-dataset").json()["data"]["id"] == report["crawlee_id"]
        # The same items through the export, each format read by its own reader.
        out = read_exports(c, dataset["id"])
        html = c.get(f"/v2/datasets/{dataset['id']}/items", params={"format": "html", "clean": "1"}).text
    assert out.json == expected
    assert out.jsonl == expected
    assert [r["url"] for r in out.csv] == [e["url"] for e in expected]
    assert out.csv[0]["#debug"] == "1" and out.csv[1]["#debug"] == ""
    assert [el.findtext("title") for el in out.xml] == ["A", "B1", "B2", "B3"]
    assert [el.findtext("url") for el in out.rss] == [e["url"] for e in expected]
    assert html.count("<tr>") == 5 and "#debug" not in html
