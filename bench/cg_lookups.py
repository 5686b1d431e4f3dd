"""The PostgreSQL look-up of a record GET alone: ``look_up_store`` by ID with a key (a 1 KiB record, held as after
a first read), by C workers that each ask one look-up after the other (C=1: alone, the lone statement; C=32: wrk
-c32's pattern, asked together by lookups.Batched). Under callgrind (instrumentation off at start): the N look-ups
after a warm-up are counted; instructions a look-up = (count at N=1600 - count at N=800) / 800. With CPU=1, no
callgrind: this process's CPU and PostgreSQL's (the storage's backends, by application_name) a look-up.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.cg_lookups 1600 32          # then 800; read "Collected"
    CPU=1 .venv/bin/python -m bench.cg_lookups 64000 32

BENCH_PG_URL: the database (a schema of its own, dropped after).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import asyncpg
import uvloop

from bench.harness import PG_URL, Body
from bench.pg_micro import _backend_cpu
from openkvs import auth
from openkvs.storage.postgres import PostgresStorage

N = int(sys.argv[1])
C = int(sys.argv[2]) if len(sys.argv) > 2 else 1
READABLE = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")


async def main() -> None:
    s = PostgresStorage(PG_URL, namespace=f"bench_cgl_{os.getpid()}")
    await s.open()
    try:
        user = await s.create_user("bench")
        store = await s.create_store(user.id, "bench", None, auth.new_signing_key())
        keys = [f"k{i:04d}" for i in range(256)]
        for k in keys:
            await s.put_record(store.id, k, Body(b"r" * 1024), "application/octet-stream", None)

        async def worker(n: int, w: int) -> None:
            for i in range(n):
                await s.look_up_store(user.id, store_id=store.id, key=keys[(i * C + w) % 256], readable=READABLE)

        async def run(n: int) -> None:
            await asyncio.gather(*(worker(n // C, w) for w in range(C)))

        await run(600)
        if os.environ.get("CPU"):
            conn = await asyncpg.connect(PG_URL)
            pids = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", s.application_name)]
            await conn.close()
            pg, own = _backend_cpu(pids), time.process_time()
            await run(N)
            print(f"C={C}: this process {(time.process_time() - own) / N * 1e6:.1f} us a look-up, PostgreSQL "
                  f"{(_backend_cpu(pids) - pg) / N * 1e6:.1f} us ({len(pids)} backends)")
        else:
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
            await run(N)
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    finally:
        await s.drop()
        await s.aclose()


uvloop.run(main())
