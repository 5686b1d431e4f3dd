"""Where a crawl's time goes in the server, per request, without sockets: the ASGI app driven in process (as
``bench.accesslog --cpu`` does) through the crawl protocol of bench/queues.py, step by step, and the CPU each step
costs (``time.process_time``: this process and its threads, the SQLite writer's included; PostgreSQL's own
processes are not in it, their round trips are in the wall time).

    python -m bench.queue_cpu [--backend sqlite|postgres] [--requests N] [--clients C] [--sdk] [--profile FILE]

Steps: ``add`` (``POST /requests/batch`` of 25), ``lock`` (``POST /head/lock?limit=25``), ``get``
(``GET /requests/{id}``, what the SDK's shared mode sends after each lock, with ``--sdk``), ``handled``
(``PUT /requests/{id}`` with ``handledAt``). Printed: CPU microseconds per call of each step and per crawled
request, best of ``--rounds`` rounds (the machine is shared; the best round is the least disturbed one), and the
wall time per request. ``--clients C`` runs C crawlers as tasks at once (CPU per request then, not per step).
``--profile FILE`` runs one more round under cProfile and writes the stats (``python -m pstats FILE``)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import tempfile
import time
from collections import defaultdict
from typing import Any

STEPS = ("add", "lock", "get", "handled")


class InProcess:
    """The app, its lifespan started, and a way to send it one request and get (status, body)."""

    def __init__(self, app: Any, state: dict[str, Any], token: str) -> None:
        self.app = app
        self.state = state
        self.headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode()),
                        (b"content-type", b"application/json")]

    async def call(self, method: str, path: str, query: str = "", body: Any = None) -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = [*self.headers, (b"content-length", str(len(raw)).encode())]
        sent = False
        out: dict[str, Any] = {"status": 0, "body": b""}

        async def receive() -> Any:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555),
                 "server": ("127.0.0.1", 8000), "state": dict(self.state)}
        await self.app(scope, receive, send)
        return out["status"], json.loads(out["body"]) if out["body"] else None


async def open_app(backend: str, limits: str) -> tuple[InProcess, Any, Any]:
    from openkvs import auth
    from openkvs.app import create_app
    from openkvs.config import Settings

    if backend == "sqlite":
        from openkvs.storage.sqlite import SQLiteStorage

        storage: Any = SQLiteStorage(tempfile.mkdtemp(prefix="bench-queue-cpu-"), background=False)
    else:
        from bench import harness as h
        from openkvs.storage.postgres import PostgresStorage

        storage = PostgresStorage(h.PG_URL, namespace=f"bench_queue_cpu_{os.getpid()}", max_pool=16)
    app = create_app(Settings.load({"rate_limits": limits, "log_level": "warning"}), storage)  # opens storage
    state: dict[str, Any] = {}
    lifespan_in: asyncio.Queue[Any] = asyncio.Queue()
    lifespan_out: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state},
                                     lifespan_in.get, lifespan_out.put))
    await lifespan_in.put({"type": "lifespan.startup"})
    message = await lifespan_out.get()
    assert message["type"] == "lifespan.startup.complete", message
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))

    async def stop() -> None:
        await lifespan_in.put({"type": "lifespan.shutdown"})
        await lifespan_out.get()
        await task  # closes storage
        if backend == "postgres":
            import subprocess

            from bench import harness as h

            subprocess.run(["psql", h.PG_URL, "-qc", f"DROP SCHEMA IF EXISTS bench_queue_cpu_{os.getpid()} CASCADE"],
                           check=False, capture_output=True)

    return InProcess(app, state, token), storage, stop


async def crawl(api: InProcess, n: int, clients: int, sdk: bool,
                cpu: dict[str, float], calls: dict[str, int]) -> None:
    """The protocol of bench/queues.py over ``n`` requests by ``clients`` tasks; adds each call's CPU to ``cpu``
    (meaningful per step only with one client)."""
    status, q = await api.call("POST", "/v2/request-queues")
    assert status == 201, q
    base = f"/v2/request-queues/{q['data']['id']}"
    reqs = [{"url": f"https://example.com/{i}", "uniqueKey": f"https://example.com/{i}"} for i in range(n)]

    async def step(name: str, method: str, path: str, query: str, body: Any = None) -> Any:
        t0, w0 = time.process_time(), time.perf_counter()
        status, answer = await api.call(method, path, query, body)
        cpu[name] += time.process_time() - t0
        cpu[name + "_wall"] += time.perf_counter() - w0
        calls[name] += 1
        assert status in (200, 201), (name, status, answer)
        return answer

    async def client(k: int) -> None:
        key = f"clientKey=bench-{k}"
        mine = reqs[k::clients]
        for i in range(0, len(mine), 25):
            await step("add", "POST", f"{base}/requests/batch", key, mine[i:i + 25])
        while True:
            data = (await step("lock", "POST", f"{base}/head/lock", f"lockSecs=600&limit=25&{key}"))["data"]
            if not data["items"]:
                if not data["queueHasLockedRequests"]:
                    return
                await asyncio.sleep(0.01)
                continue
            for item in data["items"]:
                if sdk:
                    await step("get", "GET", f"{base}/requests/{item['id']}", "")
                body = {"id": item["id"], "url": item["url"], "uniqueKey": item["uniqueKey"],
                        "handledAt": "2026-12-01T00:00:00.000Z"}
                await step("handled", "PUT", f"{base}/requests/{item['id']}", key, body)

    await asyncio.gather(*(client(k) for k in range(clients)))
    status, q = await api.call("GET", base)
    assert (q["data"]["totalRequestCount"], q["data"]["handledRequestCount"]) == (n, n), q


async def main(args: argparse.Namespace) -> dict[str, Any]:
    api, _storage, stop = await open_app(args.backend, args.limits)
    best: dict[str, Any] = {}
    try:
        await crawl(api, 200, 1, args.sdk, defaultdict(float), defaultdict(int))  # warm-up
        for _ in range(args.rounds):
            cpu: dict[str, float] = defaultdict(float)
            calls: dict[str, int] = defaultdict(int)
            w0, c0 = time.perf_counter(), time.process_time()
            await crawl(api, args.requests, args.clients, args.sdk, cpu, calls)
            wall, total = time.perf_counter() - w0, time.process_time() - c0
            per_request = total / args.requests * 1e6
            if not best or per_request < best["cpu_us_per_request"]:
                best = {"cpu_us_per_request": round(per_request, 1),
                        "wall_us_per_request": round(wall / args.requests * 1e6, 1),
                        "steps": {s: {"calls": calls[s], "cpu_us_per_call": round(cpu[s] / calls[s] * 1e6, 1),
                                      "wall_us_per_call": round(cpu[s + "_wall"] / calls[s] * 1e6, 1),
                                      "cpu_us_per_request": round(cpu[s] / args.requests * 1e6, 1)}
                                  for s in STEPS if calls[s]}}
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await crawl(api, args.requests, args.clients, args.sdk, defaultdict(float), defaultdict(int))
            prof.disable()
            prof.dump_stats(args.profile)
    finally:
        await stop()
    return best


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.queue_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--limits", default="off", choices=("off", "memory"), help="--rate-limits of the app")
    p.add_argument("--sdk", action="store_true", help="also GET each locked request, as the SDK's shared mode does")
    p.add_argument("--profile", metavar="FILE", help="one more round under cProfile, its stats written to FILE")
    args = p.parse_args()
    res = asyncio.run(main(args))
    print(f"{args.backend}, {args.clients} client(s), {args.requests} requests{', sdk calls' if args.sdk else ''}: "
          f"{res['cpu_us_per_request']:.0f} us CPU and {res['wall_us_per_request']:.0f} us wall per request")
    for name, s in res["steps"].items():
        print(f"  {name:8} {s['calls']:6} calls  {s['cpu_us_per_call']:8.1f} us CPU/call  "
              f"{s['wall_us_per_call']:8.1f} us wall/call  "
              f"{s['cpu_us_per_request']:7.1f} us CPU/request")
    print(json.dumps(res))
