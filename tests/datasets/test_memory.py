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
    # Small rows of every leaf kind: the test is about what a renderer keeps, not about its per-cell speed.
    return {"id": i, "title": f"Product number {i}, with a title of some length", "price": i * 0.25, "ok": i % 2 == 0, "tags": [str(i)]}


# One batch of rows, rendered again and again: the renderer's cost and memory only (rows are never mutated).
ITEMS = [item(i) for i in range(BATCH)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "html", "xlsx", "xml", "rss"])
def test_memory_stays_flat(fmt):
    q = parse_items_query({"format": fmt, "unwind": "tags"} if fmt == "csv" else {"format": fmt}, None)
    # (csv with unwind: its header comes from the scan, the other tabular formats' from the index)
    r = renderer(q, label="l", dataset_id="i", public_url="http://h")
    cols = None
    if r.tabular:
        cols = columns(q.shape, block_paths(item(i) for i in range(10)))
        if cols is None:  # the scan, as the endpoint does it with unwind
            c = ColumnCollector(q.shape)
            c.add_items(ITEMS)
            cols = c.columns()
    rows = [row for it in ITEMS for row in q.shape.rows(it)]
    total = streamed = 0
    tracemalloc.start()
    try:
        total += len(r.start(cols))
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(0, ROWS, BATCH):
            out = len(r.rows(rows))
            total += out
            streamed += out
        total += len(r.end())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # One batch's bytes are ~100 KB; the whole output is 12 MiB or more (xlsx: compressed, checked by `streamed`).
    assert total > 12 * 2**20 or fmt == "xlsx"  # so that keeping the output would break the bound
    assert streamed > 0.9 * total  # the bytes leave with the batches, not at the end
    assert peak < 4 * 2**20, f"{fmt}: peak {peak / 2**20:.1f} MiB for {total / 2**20:.0f} MiB of output"
