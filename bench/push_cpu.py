"""CPU of a dataset push in process (no HTTP, no client), for a machine too busy for wall-clock numbers: a body of
``--batch`` items of bench/datasets.py (~500 B each) parsed and prepared as the push endpoint's worker thread does
(api/items.py), then stored (``storage.datasets.push``), against the same body bytes put as one key-value store
record (``storage.put_record``: the baseline of issue 13's push goal). CPU seconds of this process, its threads
included, per item. With ``--other DIR`` the same runs for another checkout of openkvs (``git archive main | tar -x
-C DIR``), in turns.

    .venv/bin/python -m bench.push_cpu --backend sqlite --other /tmp/main-src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

_WORKER = """
import asyncio, importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("push_cpu_worker", sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(asyncio.run(mod.measure(*sys.argv[3:]))))
"""


def _body(batch: int) -> bytes:
    from bench.datasets import item

    return json.dumps([item(i) for i in range(batch)], separators=(",", ":")).encode()


async def measure(kind: str, batch: str, pushes: str) -> dict[str, Any]:
    """In a child process whose sys.path starts with the checkout under test."""
    from bench.harness import PG_URL, Body
    from openkvs import auth, jsontext
    from openkvs.api import items
    from openkvs.storage.base import DATASET

    n, count = int(batch), int(pushes)
    raw = _body(n)
    if hasattr(items, "prepare_push_body"):
        prepare: Any = items.prepare_push_body
    else:  # the code before itemjson.py: read_json_body's parse, then prepare_push

        def prepare(raw: bytes, schema: Any) -> Any:
            return items.prepare_push(jsontext.loads(raw, max_depth=128), schema)

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sqlite":
            from openkvs.storage.sqlite import SQLiteStorage

            storage: Any = SQLiteStorage(tmp, fsync=True)
        else:
            from openkvs.storage.postgres import PostgresStorage

            storage = PostgresStorage(PG_URL, namespace=f"bench_push_cpu_{os.getpid()}", max_pool=4)
        await storage.open()
        try:
            user = await storage.create_user("bench")
            ds = await storage.create_store(user.id, "ds", None, auth.new_signing_key(), kind=DATASET)
            kvs = await storage.create_store(user.id, "kvs", None, auth.new_signing_key())
            prepare(raw, None)  # warm up (imports, caches)
            c0, t0 = time.process_time(), time.perf_counter()
            pushes_ = [prepare(raw, None) for _ in range(count)]
            c1, t1 = time.process_time(), time.perf_counter()
            for push in pushes_:
                await storage.datasets.push(ds.id, push, items.merge_block)
            c2, t2 = time.process_time(), time.perf_counter()
            for i in range(count):
                await storage.put_record(kvs.id, f"k{i}", Body(raw), "application/json", None)
            c3, t3 = time.process_time(), time.perf_counter()
            got = (await storage.datasets.info([ds.id]))[ds.id]
            assert got.item_count == n * count, got
            async with storage.datasets.snapshot(ds.id) as snap:
                stored = [b async for batch_ in snap.items(0, n) for b in batch_]
        finally:
            if kind == "postgres":
                await storage.drop()
            await storage.aclose()
    per = 1e6 / (n * count)
    return {
        "prepare_us": (c1 - c0) * per,
        "store_us": (c2 - c1) * per,
        "record_us": (c3 - c2) * per,
        "prepare_wall_us": (t1 - t0) * per,
        "store_wall_us": (t2 - t1) * per,
        "record_wall_us": (t3 - t2) * per,
        "stored_sha": __import__("hashlib").sha256(b"\n".join(stored)).hexdigest()[:16],
    }


def _run(checkout: str, kind: str, batch: int, pushes: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": checkout}
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, checkout, __file__, kind, str(batch), str(pushes)],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--pushes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--other", help="another checkout of openkvs to measure in turns (e.g. main's)")
    args = p.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subjects = [("this", here)] + ([("other", args.other)] if args.other else [])
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in subjects}
    for r in range(args.rounds):
        for name, path in subjects:
            got = _run(path, args.backend, args.batch, args.pushes)
            rows[name].append(got)
            load = os.getloadavg()[0]
            print(f"round {r} {name:5s} load {load:5.1f} prepare {got['prepare_us']:6.1f} us/item  store "
                  f"{got['store_us']:5.1f}  push total {got['prepare_us'] + got['store_us']:6.1f}  record "
                  f"{got['record_us']:5.2f}  (wall: {got['prepare_wall_us']:.1f} / {got['store_wall_us']:.1f} / "
                  f"{got['record_wall_us']:.2f})  stored sha {got['stored_sha']}", flush=True)
    for name, runs in rows.items():
        best = {k: min(g[k] for g in runs) for k in runs[0] if k.endswith("_us")}
        total = best["prepare_us"] + best["store_us"]
        print(f"{name}: best of {len(runs)}: prepare {best['prepare_us']:.1f} + store {best['store_us']:.1f} = "
              f"{total:.1f} us CPU/item; the record {best['record_us']:.2f} us/item; record/push "
              f"{best['record_us'] / total:.3f}")


if __name__ == "__main__":
    main()
