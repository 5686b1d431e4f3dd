"""Issue 13 prototype: dataset items stored in blocks, against today's row per item, in one process (no HTTP).

A block is one row per push (or per run of up to ``--block`` items of a push): the items' stored bytes joined by
b"\\n" (compact JSON holds no raw newline byte, so ``data.split(b"\\n")`` gives the items back and a jsonl export
of whole blocks is the blob itself), keyed by (store_id, end index) with the first index beside it: the blocks of a
range ``[lo, hi)`` are one seek (``end > lo``) and an ordered scan until ``first >= hi``. Nothing else of the push
changes (path index, counters, statistics, the stores row): the prototype runs the real push function with its
insert of the items swapped for the block's.

Measured, CPU of this process (its threads included) per item, the layouts in turns: the push of ``--pushes``
bodies of ``--batch`` items (prepare once, outside; store only), the same body bytes put as one record, and reads
of all the items (``items`` batches of 4,000; ``joined`` by "\\n") and of a few items at random offsets.

    .venv/bin/python -m bench.push_blocks --backend sqlite --rounds 3

Over HTTP (push CPU only: such a server's reads don't see the items): ``--site DIR`` writes a sitecustomize.py
into DIR that swaps the push's insert for blocks of up to 1,000 items in any openkvs process started with DIR on
PYTHONPATH, then ``python -m bench.push_ab --backend sqlite --other DIR`` compares the two in turns. ``--split``:
the CPU of each step of a body's preparation (parse, walk, floats, encode, the rest), timed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.datasets import item
from bench.harness import PG_URL, Body
from openkvs import auth
from openkvs.api import items
from openkvs.storage.base import DATASET

SQLITE_BLOCKS = """
CREATE TABLE IF NOT EXISTS proto_blocks (
    store_id  TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    end_idx   INTEGER NOT NULL,
    first_idx INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (store_id, end_idx)
) WITHOUT ROWID
"""
PG_BLOCKS = """
CREATE TABLE IF NOT EXISTS proto_blocks (
    store_id text NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    end_idx bigint NOT NULL,
    first_idx bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (store_id, end_idx)
);
ALTER TABLE proto_blocks ALTER COLUMN data SET STORAGE EXTERNAL;
"""


SITE = '''\
# bench/push_blocks.py --site: dataset items stored as blocks of up to 1,000 items of a push, for the push's CPU
# over HTTP only (this server's reads don't see the items).
import asyncpg

from openkvs.storage.sqlite import datasets as _sd

_BLOCKS = (
    "CREATE TABLE IF NOT EXISTS {t} (store_id TEXT NOT NULL, end_idx BIGINT NOT NULL, first_idx BIGINT NOT NULL, "
    "data {blob} NOT NULL, PRIMARY KEY (store_id, end_idx)){tail}"
)


def _runs(start, rows):
    return [(start + min(i + 1000, len(rows)), start + i, b"\\n".join(rows[i : i + 1000]))
            for i in range(0, len(rows), 1000)]


def _insert_blocks(conn, store_id, start, rows):
    conn.execute(_BLOCKS.format(t="proto_blocks", blob="BLOB", tail=" WITHOUT ROWID"))
    conn.executemany("INSERT INTO proto_blocks(store_id, end_idx, first_idx, data) VALUES (?, ?, ?, ?)",
                     [(store_id, *run) for run in _runs(start, rows)])
    return sum(map(len, rows))  # the items' bytes, as _insert_items returns (the push adds them up)


_sd._insert_items = _insert_blocks
_real = asyncpg.Connection.copy_records_to_table


async def _copy_blocks(self, table, *, records, columns, schema_name=None, **kw):
    if table != "dataset_items":
        return await _real(self, table, records=records, columns=columns, schema_name=schema_name, **kw)
    recs = list(records)
    await self.execute(_BLOCKS.format(t=f\'"{schema_name}".proto_blocks\', blob="bytea", tail=""))
    return await _real(self, "proto_blocks", records=[(recs[0][0], *run) for run in _runs(recs[0][1], [r[2] for r in
                       recs])], columns=("store_id", "end_idx", "first_idx", "data"), schema_name=schema_name)


asyncpg.Connection.copy_records_to_table = _copy_blocks
'''


def runs(start: int, rows: list[bytes], block: int) -> list[tuple[int, int, bytes]]:
    """(end, first, joined bytes) of each block of a push."""
    return [
        (start + min(i + block, len(rows)), start + i, b"\n".join(rows[i : i + block]))
        for i in range(0, len(rows), block)
    ]


def cut(blocks: list[tuple[int, bytes]], lo: int, hi: int) -> list[bytes]:
    """The items ``[lo, hi)`` of consecutive blocks (first index, joined bytes)."""
    out: list[bytes] = []
    for first, data in blocks:
        parts = data.split(b"\n")
        out += parts[max(lo - first, 0) : hi - first]
    return out


async def measure(kind: str, layout: str, batch: int, pushes: int, block: int, tmp: str) -> dict[str, float]:
    raw = json.dumps([item(i) for i in range(batch)], separators=(",", ":")).encode()
    push = items.prepare_push_body(raw, None)
    if kind == "sqlite":
        from openkvs.storage.sqlite import SQLiteStorage
        from openkvs.storage.sqlite import datasets as sd

        storage: Any = SQLiteStorage(tmp, fsync=True)
    else:
        from openkvs.storage.postgres import PostgresStorage

        storage = PostgresStorage(PG_URL, namespace=f"bench_push_blocks_{os.getpid()}", max_pool=4)
    await storage.open()
    try:
        user = await storage.create_user("bench")
        ds = await storage.create_store(user.id, "ds", None, auth.new_signing_key(), kind=DATASET)
        kvs = await storage.create_store(user.id, "kvs", None, auth.new_signing_key())
        if kind == "sqlite":
            await storage._db.write(lambda c: c.execute(SQLITE_BLOCKS) and None)
            real_insert = sd._insert_items

            def insert_blocks(conn: sqlite3.Connection, store_id: str, start: int, items: list[bytes]) -> int:
                conn.executemany(
                    "INSERT INTO proto_blocks(store_id, end_idx, first_idx, data) VALUES (?, ?, ?, ?)",
                    [(store_id, e, f, d) for e, f, d in runs(start, items, block)],
                )
                return sum(map(len, items))  # the items' bytes, as _insert_items returns (the push adds them up)

            if layout == "blocks":
                sd._insert_items = insert_blocks
        else:
            await storage._db.run(lambda c: c.execute(PG_BLOCKS))
            if layout == "blocks":
                ns = storage._namespace if hasattr(storage, "_namespace") else None
                real_copy = None

                async def copy_blocks(self: Any, table: str, *, records: Any, columns: Any, schema_name: Any) -> Any:
                    recs = list(records)
                    rows = [r[2] for r in recs]
                    return await real_copy(  # type: ignore[misc]
                        self, "proto_blocks", records=[(recs[0][0], e, f, d) for e, f, d in runs(recs[0][1], rows,
                                                                                                   block)],
                        columns=("store_id", "end_idx", "first_idx", "data"), schema_name=schema_name,
                    )

                import asyncpg

                real_copy = asyncpg.Connection.copy_records_to_table
                asyncpg.Connection.copy_records_to_table = copy_blocks  # type: ignore[assignment]
                del ns
        out: dict[str, float] = {}
        c0 = time.process_time()
        for _ in range(pushes):
            await storage.datasets.push(ds.id, push, items.merge_block)
        c1 = time.process_time()
        for i in range(pushes):
            await storage.put_record(kvs.id, f"k{i}", Body(raw), "application/json", None)
        c2 = time.process_time()
        total = batch * pushes
        out["push_us"] = (c1 - c0) * 1e6 / total
        out["record_us"] = (c2 - c1) * 1e6 / total
        if kind == "sqlite":
            sd._insert_items = real_insert
        else:
            import asyncpg

            if layout == "blocks":
                asyncpg.Connection.copy_records_to_table = real_copy  # type: ignore[assignment]

        # reads
        expect = push.items * pushes
        rnd = random.Random(1)
        points = [rnd.randrange(total - 10) for _ in range(200)]
        if layout == "rows":
            async with storage.datasets.snapshot(ds.id) as snap:
                c0 = time.process_time()
                got = [b async for part in snap.items(0, total, batch=4000) for b in part]
                c1 = time.process_time()
                joined = [j async for j in snap.joined(0, total, batch=4000)]
                c2 = time.process_time()
                few = [[b async for part in snap.items(p, p + 10) for b in part] for p in points]
                c3 = time.process_time()
                desc = [b async for part in snap.items(0, total, batch=4000, desc=True) for b in part]
                c4 = time.process_time()
        else:
            read: Callable[[int, int], Any]
            if kind == "sqlite":
                conn = storage._db.connect(readonly=True)
                conn.execute("BEGIN")

                async def read(lo: int, hi: int) -> list[tuple[int, bytes]]:
                    def q() -> list[tuple[int, bytes]]:
                        cur = conn.execute(
                            "SELECT first_idx, data FROM proto_blocks WHERE store_id = ? AND end_idx > ? "
                            "ORDER BY end_idx", (ds.id, lo))
                        got = []
                        for first, data in cur:
                            if first >= hi:
                                break
                            got.append((first, data))
                        cur.close()
                        return got

                    import anyio.to_thread

                    return await anyio.to_thread.run_sync(q)
            else:
                pconn = await storage._db.snapshots().acquire()
                tr = pconn.transaction(isolation="repeatable_read", readonly=True)
                await tr.start()

                async def read(lo: int, hi: int) -> list[tuple[int, bytes]]:
                    rows = await pconn.fetch(
                        "SELECT first_idx, data FROM proto_blocks WHERE store_id = $1 AND end_idx > $2 "
                        "AND first_idx < $3 ORDER BY end_idx", ds.id, lo, hi)
                    return [(r[0], r[1]) for r in rows]

            async def items_of(lo: int, hi: int, step: int = 4000) -> list[bytes]:
                out_: list[bytes] = []
                while lo < hi:
                    out_ += cut(await read(lo, min(lo + step, hi)), lo, min(lo + step, hi))
                    lo += step
                return out_

            c0 = time.process_time()
            got = await items_of(0, total)
            c1 = time.process_time()
            joined = []
            lo = 0
            while lo < total:
                bl = await read(lo, min(lo + 4000, total))
                # whole blocks inside the range are sent as they are; the ends are cut
                parts = [d if f >= lo and f + d.count(b"\n") + 1 <= lo + 4000 else b"\n".join(cut([(f, d)], lo,
                         lo + 4000)) for f, d in bl]
                joined.append(b"\n".join(parts))
                lo += 4000
            c2 = time.process_time()
            few = [cut(await read(p, p + 10), p, p + 10) for p in points]
            c3 = time.process_time()
            desc = (await items_of(0, total))[::-1]
            c4 = time.process_time()
            if kind == "sqlite":
                conn.close()
            else:
                await tr.rollback()
                await storage._db.snapshots().release(pconn)
        assert got == expect, (len(got), len(expect))
        assert b"\n".join(joined) == b"\n".join(expect)
        assert few == [expect[p : p + 10] for p in points]
        assert desc == expect[::-1]
        out["read_all_us"] = (c1 - c0) * 1e6 / total
        out["read_joined_us"] = (c2 - c1) * 1e6 / total
        out["read_10_us"] = (c3 - c2) * 1e6 / len(points)
        out["read_desc_us"] = (c4 - c3) * 1e6 / total
    finally:
        if kind == "postgres":
            await storage.drop()
        await storage.aclose()
    return out


def split(batch: int) -> dict[str, float]:
    """CPU us per item of each step of ``prepare_push_body`` for one body, timed apart (best of 5)."""
    import orjson

    from openkvs.datasets import itemjson

    raw = json.dumps([item(i) for i in range(batch)], separators=(",", ":")).encode()

    def t(f: Callable[[], Any], n: int = 10) -> float:
        best = float("inf")
        for _ in range(5):
            c = time.process_time()
            for _ in range(n):
                f()
            best = min(best, (time.process_time() - c) / n / batch * 1e6)
        return best

    value = orjson.loads(raw)
    floats: list[float] = []
    shapes = [items._shape(x, items.ITEM_MAX_DEPTH - 1, floats) for x in value]
    out = {
        "parse": t(lambda: orjson.loads(raw)),
        "walk": t(lambda: [items._shape(x, items.ITEM_MAX_DEPTH - 1, []) for x in value]),
        "floats": t(lambda: itemjson.floats_as_parsed(floats)),
        "encode": t(lambda: itemjson.encode(value, fast=True)),
        "prepare_rest_with_encode": t(lambda: items._prepare(value, True, shapes, None, fast=True)),
        "prepare_push_body": t(lambda: items.prepare_push_body(raw, None)),
    }
    out["prepare_rest"] = out.pop("prepare_rest_with_encode") - out["encode"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--pushes", type=int, default=20)
    p.add_argument("--block", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--site", help="write the over-HTTP prototype's sitecustomize.py into this directory and stop")
    p.add_argument("--split", action="store_true", help="time the steps of the preparation of one body and stop")
    args = p.parse_args()
    if args.split:
        print("  ".join(f"{k} {v:.2f}" for k, v in split(args.batch).items()), "us CPU/item", flush=True)
        return
    if args.site:
        os.makedirs(args.site, exist_ok=True)
        with open(os.path.join(args.site, "sitecustomize.py"), "w") as f:
            f.write(SITE)
        return
    best: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for layout in ("rows", "blocks"):
            with tempfile.TemporaryDirectory() as tmp:
                got = asyncio.run(measure(args.backend, layout, args.batch, args.pushes, args.block, tmp))
            print(f"round {r} {layout:6s} load {os.getloadavg()[0]:5.1f} " + "  ".join(
                f"{k} {v:.2f}" for k, v in got.items()), flush=True)
            b = best.setdefault(layout, got)
            for k, v in got.items():
                b[k] = min(b[k], v)
    for layout, b in best.items():
        print(f"{layout}: best of {args.rounds}: " + "  ".join(f"{k} {v:.2f}" for k, v in b.items()))


if __name__ == "__main__":
    main()
