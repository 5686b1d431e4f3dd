"""Issue 13: a PostgreSQL dataset push and reads, in process, with PostgreSQL's own CPU beside this process's: the
CPU (user + system, from /proc) of the database backends serving this storage's connections (found by their
application_name), which a row per item spends on heap rows and index entries. For the checkout on PYTHONPATH, so
two trees compare in turns (``git archive main | tar -x -C DIR``, ``python hatch_build.py`` there):

    PYTHONPATH=DIR BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/NAME .venv/bin/python -m bench.pg_push_rows

Each line: per pushed item, the push's wall-clock, this process's CPU and the backends' CPU, and the same for the
body PUT as one record; then five reads of all the items joined by b"\\n" (a jsonl export's storage part) and reads
of 10 items at random offsets (a page of the list-items API), per item / per read. CPU from /proc is in clock ticks
(10 ms): the defaults make a tick a few percent of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from typing import Any

from bench.datasets import item
from bench.harness import PG_URL, Body

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pids: list[int]) -> float:
    """Seconds of CPU (user + system) of these processes so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


async def measure(pushes: int, batch: int, reads: int, toast: str | None, target: int | None) -> dict[str, Any]:
    from openkvs import auth
    from openkvs.api import items
    from openkvs.storage.base import DATASET
    from openkvs.storage.postgres import PostgresStorage

    raw = json.dumps([item(i) for i in range(batch)], separators=(",", ":")).encode()
    push = items.prepare_push_body(raw, None)
    storage = PostgresStorage(PG_URL, namespace=f"bench_pg_push_rows_{os.getpid()}", max_pool=4)
    await storage.open()
    try:
        if toast:  # another TOAST strategy for the items' data (version 6 made it EXTERNAL)
            await storage._db.execute(f"ALTER TABLE dataset_items ALTER COLUMN data SET STORAGE {toast}")
        if target:  # rows up to this many bytes stay in the heap, uncompressed (EXTERNAL), not TOASTed
            await storage._db.execute(f"ALTER TABLE dataset_items SET (toast_tuple_target = {target})")
        user = await storage.create_user("bench")
        ds = await storage.create_store(user.id, "ds", None, auth.new_signing_key(), kind=DATASET)
        kvs = await storage.create_store(user.id, "kvs", None, auth.new_signing_key())
        await storage.datasets.push(ds.id, push, items.merge_block)  # (warm: every pool connection open)
        await storage.put_record(kvs.id, "warm", Body(raw), "application/json", None)
        pids_sql = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
        pids = [r[0] for r in await storage._db.fetch(pids_sql, storage._db.application_name)]

        async def timed(fn: Any, n: int) -> tuple[float, float, float]:
            w0, c0, b0 = time.perf_counter(), time.process_time(), _cpu(pids)
            await fn()
            return (
                (time.perf_counter() - w0) * 1e6 / n,
                (time.process_time() - c0) * 1e6 / n,
                (_cpu(pids) - b0) * 1e6 / n,
            )

        async def pushes_() -> None:
            for _ in range(pushes):
                await storage.datasets.push(ds.id, push, items.merge_block)

        async def records() -> None:
            for i in range(pushes):
                await storage.put_record(kvs.id, f"k{i}", Body(raw), "application/json", None)

        total = batch * (pushes + 1)
        out: dict[str, Any] = {"load": round(os.getloadavg()[0], 1)}
        out["push"] = await timed(pushes_, batch * pushes)
        out["record"] = await timed(records, batch * pushes)
        rnd = random.Random(1)
        points = [rnd.randrange(total - 10) for _ in range(reads)]
        async with storage.datasets.snapshot(ds.id) as snap:
            pids[:] = [r[0] for r in await storage._db.fetch(pids_sql, storage._db.application_name)]

            async def joined() -> None:
                for _ in range(5):
                    size = 0
                    async for piece in snap.joined(0, total, batch=4000, size=1 << 20):
                        size += len(piece)
                    assert size

            async def few() -> None:
                for p in points:
                    got = [b async for part in snap.items(p, p + 10) for b in part]
                    assert len(got) == 10

            out["read_all"] = await timed(joined, 5 * total)
            out["read_10"] = await timed(few, reads)
        return out
    finally:
        await storage.drop()
        await storage.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pushes", type=int, default=40)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--reads", type=int, default=1000)
    p.add_argument("--toast-target", type=int, help="dataset_items' toast_tuple_target")
    p.add_argument("--rows", help="ITEMS,BYTES: packed rows of at most so many items and bytes (this tree's)")
    p.add_argument("--toast", choices=("external", "extended", "main"), help="the data column's TOAST strategy")
    args = p.parse_args()
    import openkvs

    if args.rows:
        from openkvs.storage.postgres import datasets

        datasets.ITEMS_PER_ROW, datasets.ROW_BYTES = map(int, args.rows.split(","))  # type: ignore[attr-defined]
    out = asyncio.run(measure(args.pushes, args.batch, args.reads, args.toast, args.toast_target))
    print(os.path.dirname(os.path.dirname(openkvs.__file__)), args.toast or "", args.rows or "", args.toast_target or "", " ".join(
        f"{k} {v}" if k == "load" else f"{k} wall/cpu/pg {v[0]:.2f}/{v[1]:.2f}/{v[2]:.2f}" for k, v in out.items()
    ), flush=True)


if __name__ == "__main__":
    main()
