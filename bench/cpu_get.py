"""CPU time per record GET in process: the ASGI app called directly with a prepared scope (no socket, no HTTP
parser), against a bare Starlette endpoint called the same way. On a shared machine throughput under wrk moves
with everyone else's load; the CPU time of one thread running a loop moves much less.

    .venv/bin/python -m bench.cpu_get                       # SQLite, owner's GET of a 1 KiB record
    .venv/bin/python -m bench.cpu_get --backend postgres    # BENCH_PG_URL (default: the test database)
    .venv/bin/python -m bench.cpu_get --profile             # also cProfile one batch, top functions
    .venv/bin/python -m bench.cpu_get --stub                # storage's answers replayed: the app's own cost

Prints the median (and min-max) over rounds of microseconds of process CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import uvloop
from starlette.types import Message

from bench.harness import Body
from openkvs import auth
from openkvs.app import create_app
from openkvs.config import Settings

RECORD = b"r" * 1024


async def _collect(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(dict(scope), receive, send)
    return out


def _scope(path: str, token: str | None, state: dict[str, Any]) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": state,
    }


async def _rounds(app: Any, scopes: list[dict[str, Any]], rounds: int, per_round: int) -> list[float]:
    results = []
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(per_round):
            await _collect(app, scopes[i % len(scopes)])
        results.append((time.process_time() - t0) / per_round * 1e6)
    return results


def _bare_app() -> Any:
    from bench.bare_app import app

    return app


async def main(args: argparse.Namespace) -> None:
    if args.backend == "postgres":
        from openkvs.storage.postgres import PostgresStorage

        url = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
        storage: Any = PostgresStorage(url, namespace=f"bench_cpu_{os.getpid()}")
    else:
        from openkvs.storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(tempfile.mkdtemp(prefix="okvs-cpu-"))
    app = create_app(Settings.load({"rate_limits": "off"}), storage)
    lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    queue: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.ensure_future(app(lifespan, queue.get, started.put))  # (an ASGIApp returns an Awaitable)
    await queue.put({"type": "lifespan.startup"})
    assert (await started.get())["type"] == "lifespan.startup.complete"
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    store = await storage.create_store(user.id, "bench", None, auth.new_signing_key())
    keys = [f"k{i:04d}" for i in range(100)]
    for key in keys:
        await storage.put_record(store.id, key, Body(RECORD), "application/octet-stream", None)
    if args.stub:
        st = lifespan["state"]["openkvs"]
        st.storage = _Replay(storage)
    if args.gc == "freeze":
        import gc

        gc.collect()
        gc.freeze()
    elif args.gc == "off":
        import gc

        gc.disable()
    state = dict(lifespan["state"])
    scopes = [_scope(f"/v2/key-value-stores/{store.id}/records/{k}", token, state) for k in keys]
    bare = _bare_app()
    bare_scopes = [_scope(f"/v2/key-value-stores/x/records/{k}", None, {}) for k in keys]
    first = await _collect(app, scopes[0])
    assert first[0]["status"] == 200 and first[1]["body"] == RECORD, first
    for _ in range(2):  # warm-up
        await _rounds(app, scopes, 1, args.n)
        await _rounds(bare, bare_scopes, 1, args.n)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.rounds):  # interleaved, so both see the same load
        ours += await _rounds(app, scopes, 1, args.n)
        theirs += await _rounds(bare, bare_scopes, 1, args.n)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        await _rounds(app, scopes, 1, args.n)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    med_o, med_b = statistics.median(ours), statistics.median(theirs)
    print(f"{args.backend}{' (storage replayed)' if args.stub else ''}: openkvs owner GET 1 KiB {med_o:.1f} us CPU/request (min {min(ours):.1f}, "
          f"max {max(ours):.1f}); bare Starlette {med_b:.1f} us (min {min(theirs):.1f}, max {max(theirs):.1f}); "
          f"openkvs - bare = {med_o - med_b:.1f} us; {args.rounds} rounds x {args.n}")
    await queue.put({"type": "lifespan.shutdown"})
    await started.get()
    await task
    if args.backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url)
        await conn.execute(f"DROP SCHEMA IF EXISTS bench_cpu_{os.getpid()} CASCADE")
        await conn.close()


class _Replay:
    """Storage whose ``look_up_store`` answers each distinct call from memory after the first (the same
    objects): what is left is the app's own CPU per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.memo: dict[Any, Any] = {}
        self.held_bytes = inner.held_bytes  # called per request: not through __getattr__
        self.count_access = inner.count_access

    async def look_up_store(self, *args: Any, **kwargs: Any) -> Any:
        k = (args, tuple(sorted(kwargs.items())))
        if k not in self.memo:
            self.memo[k] = await self.inner.look_up_store(*args, **kwargs)
        return self.memo[k]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--stub", action="store_true")
    p.add_argument("--gc", choices=("on", "freeze", "off"), default="on")
    p.add_argument("--top", type=int, default=30)
    uvloop.run(main(p.parse_args()))
