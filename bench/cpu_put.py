"""CPU time per record PUT in process, with concurrent clients: the ASGI app called directly (no socket, no HTTP
parser) by ``--conns`` tasks that each PUT 1 KiB records one after another, against the bare Starlette endpoint
called the same way. Process CPU (every thread: SQLite's writer thread too) per request, which moves less with
other people's load than requests/s do. Runs the code of the current directory, so the same file measures another
checkout for a before/after in the same minutes:

    .venv/bin/python bench/cpu_put.py [--backend postgres] [--conns 32] [--profile]
    (cd /work/main && /work/wt/writes/.venv/bin/python /work/wt/writes/bench/cpu_put.py)

Prints the median (and min-max) over rounds of microseconds of process CPU per request, and requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout to measure
import uvloop
from starlette.types import Message

from openkvs import auth
from openkvs.app import create_app
from openkvs.config import Settings

RECORD = b"r" * 1024


def _scope(path: str, token: str | None, state: dict[str, Any]) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"content-length", b"1024"),
               (b"content-type", b"application/octet-stream")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": state,
    }


async def _put(app: Any, scope: dict[str, Any]) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a disconnect never comes
        sent = True
        return {"type": "http.request", "body": RECORD, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


TICKS = os.sysconf("SC_CLK_TCK")


def other_threads_cpu() -> float:
    """CPU seconds of this process's threads other than the main one (SQLite's writer, worker threads)."""
    total = 0.0
    me = os.getpid()
    for task in os.listdir("/proc/self/task"):
        if int(task) == me:
            continue
        try:
            fields = open(f"/proc/self/task/{task}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


async def _round(app: Any, scopes: list[dict[str, Any]], conns: int, per_round: int) -> tuple[float, float]:
    """(us of CPU per request, requests/s) for ``per_round`` PUTs from ``conns`` concurrent clients."""
    counter = iter(range(per_round))

    async def client(c: int) -> None:
        for i in counter:
            status = await _put(app, scopes[(c * 7919 + i) % len(scopes)])
            assert status == 201, status

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(conns)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu / per_round * 1e6, per_round / wall


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    namespace = f"bench_put_{os.getpid()}"
    if args.backend == "postgres":
        from openkvs.storage.postgres import PostgresStorage

        storage: Any = PostgresStorage(url, namespace=namespace)
    else:
        from openkvs.storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(tempfile.mkdtemp(prefix="okvs-put-"))
    app = create_app(Settings.load({"rate_limits": "off", "log_level": "warning"}), storage)
    lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    queue: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.ensure_future(app(lifespan, queue.get, started.put))  # (an ASGIApp returns an Awaitable)
    await queue.put({"type": "lifespan.startup"})
    assert (await started.get())["type"] == "lifespan.startup.complete"
    try:
        user = await storage.create_user("bench")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        store = await storage.create_store(user.id, "bench", None, auth.new_signing_key())
        state = dict(lifespan["state"])
        scopes = [_scope(f"/v2/key-value-stores/{store.id}/records/k{i:04d}", token, state) for i in range(1000)]
        from bench.bare_app import app as bare

        bare_scopes = [_scope(f"/v2/key-value-stores/x/records/k{i:04d}", None, {}) for i in range(1000)]
        await _round(app, scopes, args.conns, args.n)  # warm-up (and every key written once)
        await _round(bare, bare_scopes, args.conns, args.n)
        ours: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        for _ in range(args.rounds):  # interleaved, so both see the same load
            ours.append(await _round(app, scopes, args.conns, args.n))
            theirs.append(await _round(bare, bare_scopes, args.conns, args.n))
        if args.profile_writer and args.backend == "sqlite":  # SQLite's writer thread: its group commits
            import cProfile
            import pstats

            from openkvs.storage.sqlite import connections

            wprof = cProfile.Profile(time.thread_time)
            original = connections.Database._write_group

            def profiled(self: connections.Database, jobs: list[connections._Job], committed: list[bool]) -> None:
                wprof.enable()
                try:
                    original(self, jobs, committed)
                finally:
                    wprof.disable()

            connections.Database._write_group = profiled  # type: ignore[method-assign]  # profiled for one round
            await _round(app, scopes, args.conns, args.n)
            connections.Database._write_group = original  # type: ignore[method-assign]
            pstats.Stats(wprof).sort_stats(args.sort).print_stats(args.top)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile(time.thread_time)  # CPU of the event loop thread, not waits
            prof.enable()
            await _round(app, scopes, args.conns, args.n)
            prof.disable()
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        import gc

        gc_time = [0.0, 0.0, 0.0]
        gc_runs = [0, 0, 0]
        gc_start = [0.0]

        def gc_watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_start[0] = time.thread_time()
            else:
                gc_time[info["generation"]] += time.thread_time() - gc_start[0]
                gc_runs[info["generation"]] += 1

        gc.callbacks.append(gc_watch)
        t0 = other_threads_cpu()
        threads = await _round(app, scopes, args.conns, args.n)
        gc.callbacks.remove(gc_watch)
        print(f"  garbage collections (gen 0/1/2): {gc_runs}, CPU in them per request: "
              f"{sum(gc_time) / args.n * 1e6:.1f} us", flush=True)
        print(f"  of {threads[0]:.1f} us CPU/request, threads other than the event loop's: "
              f"{(other_threads_cpu() - t0) / args.n * 1e6:.1f} us", flush=True)
        cpu_o, cpu_b = [c for c, _ in ours], [c for c, _ in theirs]
        print(f"{args.backend} PUT 1 KiB -c{args.conns} ({os.getcwd()}): openkvs {statistics.median(cpu_o):.1f} us "
              f"CPU/request (min {min(cpu_o):.1f}, max {max(cpu_o):.1f}), "
              f"{statistics.median(r for _, r in ours):,.0f} req/s; bare {statistics.median(cpu_b):.1f} us "
              f"({statistics.median(r for _, r in theirs):,.0f} req/s); {args.rounds} rounds x {args.n}", flush=True)
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await started.get()
        await task
        if args.backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(url)
            await conn.execute(f"DROP SCHEMA IF EXISTS {namespace} CASCADE")
            await conn.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--profile", action="store_true", help="cProfile the event loop's thread for one round")
    p.add_argument("--profile-writer", action="store_true", help="cProfile SQLite's group commits for one round")
    p.add_argument("--sort", default="tottime")
    p.add_argument("--top", type=int, default=40)
    uvloop.run(main(p.parse_args()))
