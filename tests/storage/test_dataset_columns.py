"""The header of a tabular export from the path index kept at push time (api/items.py ``table_columns``: whole
blocks from the index, partial blocks at the ends scanned) equals the brute-force answer: every selected item read
in ascending order through the pipeline (``ColumnCollector``), for random items, pushes of random sizes across
block boundaries, random selections and shapes, on both backends. Also the body: every format's stream equals
rendering the selected items in one go."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from openkvs import errors
from openkvs.api import items as export_items
from openkvs.api.items import merge_block, prepare_push
from openkvs.datasets import formats, pipeline, query
from openkvs.storage.base import Storage
from openkvs.storage.datasets import BLOCK

from .test_datasets import new_dataset

pytestmark = pytest.mark.anyio

KEYS = ["a", "b", "#h", "shop", "tags", "x/y", "url", "shop.city"]


def random_item(rnd: random.Random) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for key in rnd.sample(KEYS, rnd.randint(0, 4)):
        kind = rnd.random()
        if kind < 0.4:
            item[key] = rnd.choice([1, "s", None, True, 2.5])
        elif kind < 0.7:
            item[key] = {rnd.choice("cde"): rnd.choice([1, {"f": 2}, [], {}]) for _ in range(rnd.randint(0, 2))}
        else:
            item[key] = [rnd.choice([1, {"g": 1}, "t"]) for _ in range(rnd.randint(0, 3))]
    return item


def random_query(rnd: random.Random, total: int, fmt: str) -> query.ItemsQuery:
    q: dict[str, str] = {"format": fmt}
    if rnd.random() < 0.5:
        q["offset"] = str(rnd.randint(0, total + 5))
    if rnd.random() < 0.5:
        q["limit"] = str(rnd.randint(0, total))
    if rnd.random() < 0.3:
        q["desc"] = "1"
    if rnd.random() < 0.3:
        q["fields"] = ",".join(rnd.sample(KEYS, 2))
    if rnd.random() < 0.3:
        q["omit"] = rnd.choice(KEYS)
    if rnd.random() < 0.3:
        q["flatten"] = rnd.choice(["shop", "tags", "a"])
    if rnd.random() < 0.2:
        q["clean"] = "1"
    if rnd.random() < 0.15:
        q["unwind"] = rnd.choice(["tags", "shop"])
    return query.parse_items_query(q, None)


async def test_columns_from_the_index_equal_a_scan(storage: Storage) -> None:
    rnd = random.Random(20261202)
    sid = await new_dataset(storage)
    all_items: list[dict[str, Any]] = []
    while len(all_items) < 3 * BLOCK + 321:
        batch = [random_item(rnd) for _ in range(rnd.choice([1, 7, 250, 999, 1500]))]
        await storage.datasets.push(sid, prepare_push(batch, None), merge_block)
        all_items += batch
    total = len(all_items)
    async with storage.datasets.snapshot(sid) as snap:
        for _ in range(60):
            q = random_query(rnd, total, "csv")
            lo, hi, count = export_items.select(total, q.offset, q.limit, q.desc)
            assert count == hi - lo
            collector = pipeline.ColumnCollector(q.shape)
            collector.add_items(all_items[lo:hi])
            try:
                expected = collector.columns()
            except errors.ApiError:
                expected = None
            try:
                got = await export_items.table_columns(snap, q.shape, lo, hi)
            except errors.ApiError:
                got = None
            assert got == expected, (q, lo, hi)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "html", "xml", "rss"])
async def test_streamed_body_equals_one_rendering(storage: Storage, fmt: str) -> None:
    rnd = random.Random(fmt)
    sid = await new_dataset(storage)
    all_items = [random_item(rnd) | {"n": i} for i in range(2 * BLOCK + 17)]
    for lo in range(0, len(all_items), 700):
        await storage.datasets.push(sid, prepare_push(all_items[lo : lo + 700], None), merge_block)
    total = len(all_items)
    async with storage.datasets.snapshot(sid) as snap:
        for _ in range(4):
            q = random_query(rnd, total, fmt)
            lo, hi, _ = export_items.select(total, q.offset, q.limit, q.desc)
            chosen = all_items[lo:hi][::-1] if q.desc else all_items[lo:hi]
            args: dict[str, str] = {"label": "L", "dataset_id": "D", "public_url": "http://x"}
            one = formats.renderer(q, **args)
            try:
                columns = await export_items.table_columns(snap, q.shape, lo, hi) if one.tabular else None
            except errors.ApiError:
                continue
            rows = [r for it in chosen for r in q.shape.rows(it)]
            expected = one.start(columns) + one.rows(rows) + one.end()
            raw = q.shape.identity and fmt in ("json", "jsonl")
            body = b"".join(  # (a piece of buffers, storage's rows: their bytes in order)
                [b"".join(c) if isinstance(c, list) else c
                 async for c in export_items.render(snap, formats.renderer(q, **args), q.shape, columns, lo, hi, q.desc, raw)]
            )
            assert body == expected, q
            if fmt == "json":
                assert json.loads(body) == rows
