"""Where a csv export row's CPU goes, in process (issue 13's csv goal), for a machine too busy for wall-clock numbers.

One batch of 4,000 stored items of bench/datasets.py (~500 B each, compact JSON as a push stores them), the default
query (no fields/omit/unwind/flatten), CPU seconds of this process per row (``time.process_time``), every case once
per round, in turns:

- ``endpoint``: what the export's worker thread does today (api/items.py ``_Rows``: ``itemjson.load`` each item,
  ``Shape.iter_rows``, ``CsvRenderer.rows``);
- its stages: ``itemjson.load``, ``orjson.loads`` of each item, of the batch joined (``[`` + ``,``.join + ``]``),
  and ``CsvRenderer.rows`` of parsed items;
- ``regex``: a PROTOTYPE (not shipped): one regular expression per item skeleton, made from a parsed item, matched
  against the stored bytes of each item, whose groups are the cells' texts (a string's JSON text without a backslash
  is its text; a number's stored text is its ``repr``), joined per line without parsing the item. Its output is
  checked byte for byte against ``CsvRenderer.rows`` for these items before it is timed.

    .venv/bin/python -m bench.csv_cpu --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.datasets import item
from openkvs.api.items import _Rows
from openkvs.datasets import formats, itemjson, pipeline
from openkvs.datasets.query import parse_items_query

N = 4000


def _key(k: str) -> bytes:
    return re.escape(json.dumps(k, ensure_ascii=False).encode())


# A leaf of the prototype: a string without the delimiter (its text), a string with it (quoted: its JSON text, as it
# has no '"' when the item has no backslash), a number or a boolean (its stored text), null (no group matches).
_LEAF = rb'(?:"([^",]*)"|("[^"]*")|([-0-9tf][^,}\]"]*)|null)'


def _pattern(value: Any, leaves: list[str], path: str) -> bytes:
    if isinstance(value, dict):
        if not value:
            return rb"\{\}"
        return rb"\{" + b",".join(_key(k) + b":" + _pattern(v, leaves, f"{path}/{k}") for k, v in value.items()) + rb"\}"
    if isinstance(value, list):
        if not value:
            return rb"\[\]"
        return rb"\[" + b",".join(_pattern(v, leaves, f"{path}/{i}") for i, v in enumerate(value)) + rb"\]"
    leaves.append(path[1:])
    return _LEAF


def regex_lines(example: Any, columns: list[str]) -> Callable[[list[bytes]], bytes]:
    """The prototype for items of ``example``'s skeleton (no backslash, delimiter ",", no key holding "/")."""
    leaves: list[str] = []
    match = re.compile(_pattern(example, leaves, "")).fullmatch
    at = {p: i for i, p in enumerate(leaves)}
    cells = [f"g[{3 * at[c]}] or g[{3 * at[c] + 1}] or g[{3 * at[c] + 2}]" if c in at else 'b""' for c in columns]
    ns: dict[str, Any] = {}
    exec("def line(g):\n    return b','.join((" + ", ".join(cells) + ",))\n", ns)  # a bench: the prototype line function
    line = ns["line"]

    def lines(batch: list[bytes]) -> bytes:
        out = []
        for raw in batch:
            m = match(raw)
            if m is None or b"\\" in raw:
                raise ValueError("the prototype covers one skeleton, without backslashes")
            out.append(line(m.groups(b"")) or b'""')
        out.append(b"")
        return b"\r\n".join(out)

    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    batch = [orjson.dumps(item(i)) for i in range(N)]
    q = parse_items_query({"format": "csv"}, None)
    columns = pipeline.columns(q.shape, pipeline.block_paths(map(orjson.loads, batch)))
    assert columns is not None
    parsed = itemjson.load_batch(batch)

    def new_renderer() -> formats.Renderer:
        r = formats.renderer(q, label="bench", dataset_id="ID", public_url="http://127.0.0.1")
        r.start(columns)
        return r

    def endpoint() -> bytes:
        rows, out = _Rows(new_renderer(), q.shape, batch), []
        while (piece := rows.next_piece()) is not None:
            out.append(piece)
        return b"".join(out)

    joined = b"[" + b",".join(batch) + b"]"
    prototype = regex_lines(parsed[0], columns)
    assert prototype(batch) == endpoint(), "the prototype's bytes differ from the renderer's"
    cases: dict[str, Callable[[], Any]] = {
        "endpoint (load, shape, render)": endpoint,
        "itemjson.load each": lambda: itemjson.load_batch(batch),
        "orjson.loads each": lambda: list(map(orjson.loads, batch)),
        "orjson.loads of the joined batch": lambda: orjson.loads(joined),
        "CsvRenderer.rows of parsed items": lambda: new_renderer().rows(parsed),
        "regex prototype (stored bytes to lines)": lambda: prototype(batch),
    }
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, case in cases.items():
            t0 = time.process_time()
            case()
            us = (time.process_time() - t0) / N * 1e6
            best[name] = min(best.get(name, us), us)
    print(f"{time.strftime('%H:%M', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; {N} rows of "
          f"{len(endpoint()) / N:.0f} B; best of {args.rounds} rounds in turns, CPU us per row")
    base = best["endpoint (load, shape, render)"]
    for name, us in best.items():
        print(f"| {name} | {us:.2f} | {us / base:.2f} |")


if __name__ == "__main__":
    main()
