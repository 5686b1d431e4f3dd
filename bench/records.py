"""Record GET/PUT requests per second (wrk) against a bare Starlette endpoint, and keys-page latency at 10k
and 1M keys. Ratios: openkvs/bare (goal for GET: >= 0.5) and keys page 1M/10k (goal: <= 2). On PostgreSQL also
against PostgreSQL's floor (bench/bare_pg_app.py: the bare endpoint plus one asyncpg statement per request), so that
each run shows how much of the bare endpoint's speed any asyncpg-based server keeps."""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench import harness as h

RECORD = b"r" * 1024
NKEYS = 1000


def tiny_dataset(kind: str, count: int) -> h.Dataset:
    """``count`` records of 100 bytes, keys k00000000...: shared with bench/download.py."""
    return h.clone_dataset(kind, f"tiny{count}", count, os.urandom(100))


def keys_page_ms(server: h.Server, ds: h.Dataset, n: int) -> list[float]:
    start = f"k{ds.count // 2:08d}"
    url = f"{server.url}/v2/key-value-stores/{ds.store_id}/keys"
    times = []
    with httpx.Client(headers={"Authorization": f"Bearer {ds.token}"}, timeout=60) as c:
        for i in range(n + 2):
            t0 = time.perf_counter()
            r = c.get(url, params={"limit": 1000, "exclusiveStartKey": start})
            dt = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            data = r.json()["data"]
            assert data["count"] == 1000 and data["items"][0]["key"] > start, data["count"]
            if i >= 2:  # two warm-up requests
                times.append(dt)
    return times


def _start_uvicorn(app: str, name: str, env: dict[str, str] | None = None) -> h.Server:
    """A baseline app served by uvicorn as ``openkvs serve`` serves openkvs (1 worker, uvloop/httptools)."""
    port = h.free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", h.LOG_LEVEL,
           "--no-server-header", "--no-proxy-headers", "--timeout-graceful-shutdown", "5",
           "--no-access-log"]  # as openkvs serve does below log level info
    return h.start_server(f"{name}-{port}", cmd, port, env=env, ready_path="/v2/key-value-stores/x/records/k00000000")


def start_bare() -> h.Server:
    return _start_uvicorn("bench.bare_app:app", "bare")


def start_pg_floor() -> h.Server:
    return _start_uvicorn("bench.bare_pg_app:app", "pgfloor",
                          {"BENCH_FLOOR_DSN": h.PG_URL, "BENCH_FLOOR_TABLE": "bench_floor"})


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    seconds = 4 if quick else 10
    reps = 1 if quick else 2
    big = 100_000 if quick else 1_000_000
    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    krows: list[list[Any]] = []
    for kind in backends:
        small = h.dataset(kind, "rec1k", NKEYS, lambda i: h.Body(RECORD))
        k10k = tiny_dataset(kind, 10_000)
        kbig = tiny_dataset(kind, big)
        for config in ("defaults", "tuned"):  # what users run first, then without the access log
            start_okvs = functools.partial(small.backend.start, defaults=config == "defaults")
            starts: list[Callable[[], h.Server]] = [start_bare, start_okvs]
            if kind == "postgres":
                starts.append(start_pg_floor)
            with h.running(*starts) as servers:
                bare, okvs = servers[:2]
                floor = servers[2] if len(servers) > 2 else None
                base_o = f"/v2/key-value-stores/{small.store_id}/records/"
                base_b = "/v2/key-value-stores/x/records/"
                res: dict[str, Any] = {"backend": kind, "config": config, "wrk": f"-t2 -c32 -d{seconds}s", "reps": reps}
                for method in ("GET", "PUT"):
                    so = h.wrk_script(method, base_o, small.token, NKEYS, len(RECORD))
                    sb = h.wrk_script(method, base_b, "x", NKEYS, len(RECORD), seed=2)
                    h.wrk(bare.url, sb, 2, 32, 2)  # warm-up (connections, caches, the token cache)
                    h.wrk(okvs.url, so, 2, 32, 2)
                    if floor:
                        h.wrk(floor.url, sb, 2, 32, 2)
                    best_o = best_b = best_f = None
                    for _ in range(reps):  # alternate baseline(s) and openkvs; keep each side's best run
                        b = h.wrk(bare.url, sb, 2, 32, seconds)
                        o = h.wrk(okvs.url, so, 2, 32, seconds)
                        best_b = b if best_b is None or b.rps > best_b.rps else best_b
                        best_o = o if best_o is None or o.rps > best_o.rps else best_o
                        if floor:
                            f = h.wrk(floor.url, sb, 2, 32, seconds)
                            best_f = f if best_f is None or f.rps > best_f.rps else best_f
                    assert best_o and best_b
                    ratio = best_o.rps / best_b.rps
                    res[method] = {"openkvs": best_o.as_dict(), "bare": best_b.as_dict(), "ratio": round(ratio, 3)}
                    floor_cells: list[Any] = ["-", "-", "-"]
                    if best_f:
                        res[method]["pg_floor"] = best_f.as_dict()
                        res[method]["floor_of_bare"] = round(best_f.rps / best_b.rps, 3)
                        res[method]["of_floor"] = round(best_o.rps / best_f.rps, 3)
                        floor_cells = [best_f.rps, best_f.rps / best_b.rps, best_o.rps / best_f.rps]
                    rows.append([kind, config, method, best_o.rps, best_b.rps, ratio, *floor_cells,
                                 best_o.latency_avg_ms, best_o.errors])
                results.append(res)
        # keys pages: one server per data set (they live in different data dirs / schemas)
        n = 30 if quick else 100
        lat = {}
        for ds in (k10k, kbig):
            with h.running(ds.backend.start) as (srv,):
                t = keys_page_ms(srv, ds, n)
                lat[ds.count] = {"median_ms": statistics.median(t), "p90_ms": sorted(t)[int(len(t) * 0.9)]}
        ratio = lat[big]["median_ms"] / lat[10_000]["median_ms"]
        results.append({"backend": kind, "keys_page": {str(k): v for k, v in lat.items()}, "ratio": round(ratio, 3)})
        krows.append([kind, lat[10_000]["median_ms"], lat[big]["median_ms"], lat[big]["p90_ms"], ratio])
    h.table("Record requests/s (1 KiB records over 1000 keys; wrk, best of runs; ratio = openkvs/bare, goal GET >= 0.5)",
            ["backend", "config", "method", "openkvs rps", "bare rps", "ratio", "pg floor rps", "floor/bare",
             "openkvs/floor", "openkvs lat ms", "errors"], rows)
    h.table(f"Keys page latency (GET /keys?limit=1000 from the middle; ratio = {big:,}/10k keys, goal <= 2)",
            ["backend", "10k median ms", f"{big:,} median ms", f"{big:,} p90 ms", "ratio"], krows)
    h.save("records", quick, results)
    return results
