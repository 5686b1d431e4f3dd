"""Rows per second of each export format's renderer, in process (no HTTP, no storage): the CPU cost of
openkvs/datasets for one export, the part the items endpoint runs in a worker thread.

    .venv/bin/python -m bench.exports [--rows N]      # or: python -m bench exports [--quick]

Items are ~500 bytes of typical scraped data (9 top-level fields, a nested object, a 3-element array). Each
format renders N rows in batches of 1,000 as the endpoint does (``Shape.rows`` + ``Renderer.rows``), plus json
and jsonl through ``raw_json`` (stored bytes copied, the identity shape) and csv with the header from the path
index (``block_paths`` + ``columns``) and from a scan (``ColumnCollector``). Baseline in the same run:
``json.dumps`` of the same rows (the least any re-encoding format costs). Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import time

from bench import harness as h
from openkvs.datasets import itemjson
from openkvs.datasets.formats import renderer
from openkvs.datasets.pipeline import ColumnCollector, block_paths, columns
from openkvs.datasets.query import parse_items_query

BATCH = 1_000


def item(i: int) -> dict:
    return {
        "url": f"https://shop.example.com/products/{i}/some-product-name-{i}",
        "title": f"Product {i}: a reasonably long product title with words",
        "price": round(i * 0.37, 2),
        "currency": "EUR",
        "inStock": i % 3 != 0,
        "rating": 4.5,
        "reviewCount": i % 500,
        "seller": {"name": "Example Seller s.r.o.", "city": "Prague", "id": 1234567},
        "categories": ["Home", "Kitchen", f"Category {i % 40}"],
        "description": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    }


def measure(fmt: str, n: int, params: dict[str, str] | None = None, raw: bool = False) -> dict:
    q = parse_items_query({"format": fmt, **(params or {})}, None)
    r = renderer(q, label="bench", dataset_id="ID", public_url="http://127.0.0.1")
    batch = [json.dumps(item(i), ensure_ascii=False, separators=(",", ":")).encode() for i in range(BATCH)]
    t0 = time.perf_counter()
    cols = None
    if r.tabular:
        cols = columns(q.shape, block_paths(item(i) for i in range(BATCH)))
        if cols is None:
            c = ColumnCollector(q.shape)
            for _ in range(0, n, BATCH):
                c.add_items(itemjson.load_batch(batch))
            cols = c.columns()
    size = len(r.start(cols))
    for _ in range(0, n, BATCH):
        if raw:
            size += len(r.raw_json(batch))
        else:
            # what the endpoint does per batch: parse the stored bytes, shape, render
            size += len(r.rows([row for it in itemjson.load_batch(batch) for row in q.shape.rows(it)]))
    size += len(r.end())
    dt = time.perf_counter() - t0
    return {"rows_per_s": n / dt, "mb_per_s": size / dt / 1e6, "bytes": size, "seconds": dt}


def baseline(n: int) -> dict:
    stored = [json.dumps(item(i), ensure_ascii=False, separators=(",", ":")).encode() for i in range(BATCH)]
    t0 = time.perf_counter()
    size = 0
    for _ in range(0, n, BATCH):
        size += len(("\n".join(json.dumps(json.loads(b), ensure_ascii=False) for b in stored)).encode())
    dt = time.perf_counter() - t0
    return {"rows_per_s": n / dt, "mb_per_s": size / dt / 1e6, "bytes": size, "seconds": dt}


CASES = [
    ("json (raw copy)", "json", None, True),
    ("jsonl (raw copy)", "jsonl", None, True),
    ("json", "json", {"clean": "1"}, False),
    ("jsonl", "jsonl", {"clean": "1"}, False),
    ("csv (header from index)", "csv", None, False),
    ("csv unwind (header by scan)", "csv", {"unwind": "seller"}, False),
    ("html", "html", None, False),
    ("xlsx", "xlsx", None, False),
    ("xml", "xml", None, False),
    ("rss", "rss", None, False),
]


def run(backends: list[str] | None = None, quick: bool = False, rows: int | None = None) -> None:
    n = rows or (20_000 if quick else 200_000)
    base = baseline(n)
    results = {"rows": n, "baseline json.loads+dumps": base}
    table = [("json.loads + json.dumps (baseline)", base)]
    for label, fmt, params, raw in CASES:
        res = measure(fmt, n, params, raw)
        results[label] = res
        table.append((label, res))
    print(f"{n:,} rows of ~{len(json.dumps(item(1))):,} B, batches of {BATCH:,}")
    print(f"{'format':38} {'rows/s':>10} {'MB/s out':>9} {'vs baseline':>12}")
    for label, res in table:
        print(f"{label:38} {res['rows_per_s']:>10,.0f} {res['mb_per_s']:>9.1f} "
              f"{res['rows_per_s'] / base['rows_per_s']:>11.2f}x")
    h.save("exports", quick, results)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__)
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    run(None, args.quick, args.rows)
