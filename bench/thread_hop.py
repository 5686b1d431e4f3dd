"""SQLite's thread hops in process, without HTTP: small writes through ``Database.write`` (group commit) and reads
through ``Database.read``, from ``--conc`` concurrent tasks for ``--seconds``; prints operations per second and
the process's CPU per operation (event loop and worker threads). For a before/after of connections.py, run it
with each checkout's own venv, alternating, in the same minutes:

    .venv/bin/python -m bench.thread_hop --conc 32 --seconds 5 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from openkvs.storage.sqlite import SQLiteStorage

VALUE = b"x" * 1024


async def measure(kind: str, conc: int, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        st = SQLiteStorage(d, background=False)
        async with st:
            db = st._db
            await db.write(lambda c: c.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)"))
            await db.write(lambda c: c.executemany("INSERT INTO t VALUES (?, ?)", [(i, VALUE) for i in range(1000)]))
            done = 0
            stop = time.monotonic() + seconds

            async def worker(i: int) -> None:
                nonlocal done
                j = 0
                while time.monotonic() < stop:
                    k = (i * 7919 + j) % 1000
                    if kind == "write":
                        await db.write(lambda c, k=k: c.execute("UPDATE t SET v = ? WHERE k = ?", (VALUE, k)))
                    else:
                        await db.read(lambda c, k=k: c.execute("SELECT v FROM t WHERE k = ?", (k,)).fetchone())
                    j += 1
                    done += 1

            c0, t0 = time.process_time(), time.monotonic()
            await asyncio.gather(*(worker(i) for i in range(conc)))
            cpu, wall = time.process_time() - c0, time.monotonic() - t0
            return done / wall, cpu / max(done, 1) * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--conc", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    for rep in range(args.reps):
        for kind in ("write", "read"):
            for conc in sorted({1, args.conc}):
                rate, cpu = asyncio.run(measure(kind, conc, args.seconds))
                print(f"rep {rep + 1} {kind} -c{conc}: {rate:,.0f}/s {cpu:.0f} us CPU/op", flush=True)


if __name__ == "__main__":
    main()
