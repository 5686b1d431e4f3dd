"""CPU of building a ZIP archive of many small records in process (no HTTP, no client): the storage snapshot and
the ZIP writer that GET /records runs, drained to nothing. For a machine too busy for wall-clock downloads: the
CPU seconds of this process (its worker threads included) and, with ``--other DIR``, the same for another
checkout of openkvs (e.g. ``git archive main | tar -x -C DIR``) on the same data, in turns, plus a check that both
gave the same bytes (SHA-256).

    .venv/bin/python -m bench.zip_cpu --count 1000000 --backend sqlite --other /tmp/main-src --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

# The child imports openkvs from the checkout under test, and this file's drain() by its path.
_WORKER = """
import asyncio, importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("zip_cpu_worker", sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(asyncio.run(mod.drain(*sys.argv[3:]))))
"""


def _callgrind(on: bool) -> None:
    """Instructions counted only around the archive (under valgrind, see --instructions)."""
    if os.environ.get("ZIP_CPU_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True)


def _proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (0 for None)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(kind: str, where: str, store_id: str, check: str) -> dict[str, Any]:
    """In a child process whose sys.path starts with the checkout under test: one full archive, timed."""
    from openkvs.api.download import _archive_bytes, _archive_size
    from openkvs.storage.base import KeySelection

    if kind == "sqlite":
        from openkvs.storage.sqlite import SQLiteStorage

        storage: Any = SQLiteStorage(where, background=False)
    else:
        from bench.harness import PG_URL
        from openkvs.storage.postgres import PostgresStorage

        storage = PostgresStorage(PG_URL, namespace=where, max_pool=4)
    await storage.open()
    try:
        fill = getattr(storage, "fill_zip_heads", None)  # a database from before its version: not timed
        t0 = time.perf_counter()
        filled = await fill() if fill is not None else 0
        fill_s = time.perf_counter() - t0
        digest = hashlib.sha256() if check == "1" else None
        async with storage.snapshot(store_id, KeySelection()) as snap:
            # PostgreSQL: the CPU of the server process that runs the snapshot's queries too (/proc, same host)
            pid = await snap._conn.fetchval("SELECT pg_backend_pid()") if kind == "postgres" else None
            db0 = _proc_cpu(pid)
            _callgrind(True)
            c0, t0 = time.process_time(), time.perf_counter()
            size = await _archive_size(snap)
            n = 0
            async for chunk in _archive_bytes(snap, 0, size):
                n += len(chunk)
                if digest is not None:
                    digest.update(chunk)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            _callgrind(False)
            db_cpu = _proc_cpu(pid) - db0
        assert n == size, (n, size)
        return {"cpu_s": cpu, "wall_s": wall, "bytes": n, "sha256": digest.hexdigest() if digest else None,
                "filled": filled, "fill_s": fill_s, "db_cpu_s": db_cpu if pid else None}
    finally:
        await storage.aclose()


def run_one(code: str, kind: str, where: str, store_id: str, check: bool, instructions: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-c", _WORKER, code, __file__, kind, where, store_id, "1" if check else "0"]
    if instructions:
        env["ZIP_CPU_CALLGRIND"] = "1"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if instructions:
        result["instructions"] = int(re.search(r"Collected : (\d+)", out.stderr).group(1))  # type: ignore[union-attr]
    return result


def main() -> None:
    from bench import harness as h
    from bench.records import tiny_dataset

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--other", help="another checkout of openkvs to compare with (its repository root)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--instructions", action="store_true",
                   help="count instructions (valgrind callgrind, ~50x slower: use --count 100000) instead of timing")
    p.add_argument("--data", help="an existing data set instead of building one: its SQLite data dir or PostgreSQL "
                   "schema, with --store-id")
    p.add_argument("--store-id")
    p.add_argument("--other-data", help="the other checkout's own copy of the data set (SQLite data dir), for "
                   "checkouts whose database versions differ")
    args = p.parse_args()
    if args.data:
        where, store_id = args.data, args.store_id
    else:
        ds = tiny_dataset(args.backend, args.count)
        where = str(ds.backend.data_dir) if args.backend == "sqlite" else ds.backend.schema
        store_id = ds.store_id
    codes = {"this": str(h.REPO)} | ({"other": os.path.abspath(args.other)} if args.other else {})
    wheres = {"this": where, "other": args.other_data or where}
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in codes}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    for r in range(args.rounds + 1):  # the last round checks the bytes (hashing costs CPU: not timed)
        for name, code in codes.items():
            check = r == args.rounds
            results[name].append(
                run_one(code, args.backend, wheres[name], store_id, check, args.instructions and not check)
            )
    with open("/proc/loadavg") as f:
        load += f.read().split()[:3]
    print(f"{args.backend}, {args.count:,} x 100 B, load average before/after {load[:3]} / {load[3:]}")
    for name, runs in results.items():
        timed = runs[:-1]
        cpu = min(x["cpu_s"] for x in timed)
        wall = min(x["wall_s"] for x in timed)
        mib = runs[0]["bytes"] / 1024 / 1024
        if args.instructions:
            print(f"  {name:6} {timed[0]['instructions'] / args.count:,.0f} instructions/record")
        if runs[0].get("filled"):
            print(f"  {name:6} first filled the kept ZIP headers of {runs[0]['filled']:,} records in "
                  f"{runs[0]['fill_s']:.1f}s (not timed below)")
        if timed[0].get("db_cpu_s") is not None:
            db = min(x["db_cpu_s"] for x in timed)
            print(f"  {name:6} PostgreSQL server CPU {db:.2f}s ({db / args.count * 1e6:.2f} us/record)")
        print(f"  {name:6} CPU {cpu:.2f}s ({cpu / args.count * 1e6:.2f} us/record), wall {wall:.2f}s "
              f"({mib / wall:.0f} MiB/s), rounds CPU {[round(x['cpu_s'], 2) for x in timed]}")
    if args.other:
        a, b = (min(x["cpu_s"] for x in results[k][:-1]) for k in ("this", "other"))
        same = results["this"][-1]["sha256"] == results["other"][-1]["sha256"]
        print(f"  CPU other/this = {b / a:.2f}x; same archive bytes (SHA-256): {same}")


if __name__ == "__main__":
    main()
