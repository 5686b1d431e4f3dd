"""Section 7's flat memory, for the renderers: 200,000 rows rendered in batches of 1,000 keep the Python heap's
peak bounded (tracemalloc), far below what the output would take if any renderer kept it."""

from __future__ import annotations

import tracemalloc

import pytest

from openkvs.datasets.formats import renderer
from openkvs.datasets.pipeline import ColumnCollector, block_paths, columns
from openkvs.datasets.query import parse_items_query

ROWS = 200_000
BATCH = 1_000


def item(i: int) -> dict:
    return {"id": i, "url": f"https://example.com/product/{i}", "title": f"Product number {i} " * 3,
            "price": i * 0.25, "ok": i % 2 == 0, "tags": ["a", "b", str(i)], "shop": {"city": "Prague", "n": None}}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "html", "xlsx", "xml", "rss"])
def test_memory_stays_flat(fmt):
    q = parse_items_query({"format": fmt, "unwind": "tags"} if fmt == "csv" else {"format": fmt}, None)
    r = renderer(q, label="l", dataset_id="i", public_url="http://h")
    cols = None
    if r.tabular:
        cols = columns(q.shape, block_paths(item(i) for i in range(10)))
        if cols is None:  # the scan, as the endpoint does it with unwind: it too must stay flat
            c = ColumnCollector(q.shape)
            for start in range(0, ROWS, BATCH):
                c.add_items(item(i) for i in range(start, start + BATCH))
            cols = c.columns()
    total = 0
    tracemalloc.start()
    try:
        total += len(r.start(cols))
        base = tracemalloc.get_traced_memory()[0]
        for start in range(0, ROWS, BATCH):
            rows = [row for i in range(start, start + BATCH) for row in q.shape.rows(item(i))]
            total += len(r.rows(rows))
            del rows
        total += len(r.end())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # One batch's rows and bytes are a few MB; the whole output is tens to hundreds of MB.
    assert total > 20 * 2**20 or fmt == "xlsx"
    assert peak < 16 * 2**20, f"{fmt}: peak {peak / 2**20:.1f} MiB for {total / 2**20:.0f} MiB of output"
