"""Record GETs while a big ZIP downloads: the latency of a small record GET (one client, one request at a time, on a
keep-alive connection) on an idle server and then during a ZIP download of the 1,000,000 x 100 B data set (curl to
/dev/null), and the download's speed. With ``--other DIR`` the same against a server of another checkout (served
through PYTHONPATH), in turns; ``--other-data`` gives that one its own copy of the data set (checkouts whose
database versions differ).

    .venv/bin/python -m bench.zip_latency --other /tmp/main-src --other-data /tmp/main-data --rounds 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import threading
import time
from typing import Any

import httpx

from bench import harness as h


def serve(code: str | None, data_dir: str) -> h.Server:
    port = h.free_port()
    # the console script, not ``python -m``: that would put the current directory (this checkout) before PYTHONPATH
    cmd = [h.OPENKVS, "serve", "--port", str(port), "--rate-limits", "off", "--log-level", h.LOG_LEVEL,
           "--data-dir", data_dir]
    env = {"PYTHONPATH": code} if code else {}
    return h.start_server(f"zip-latency-{port}", cmd, port, env, "/v2/")


def gets(url: str, token: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            r = c.get(f"{url}k{(i * 7919) % 1000:08d}")
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and len(r.content) == 100, r.status_code
            i += 1


def measure(server: h.Server, store_id: str, token: str, idle_s: float) -> dict[str, Any]:
    url = f"{server.url}/v2/key-value-stores/{store_id}/records/"
    idle: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=gets, args=(url, token, stop, idle))
    t.start()
    time.sleep(idle_s)
    stop.set()
    t.join()
    busy: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=gets, args=(url, token, stop, busy))
    t.start()
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}", "-w",
         "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
         f"{server.url}/v2/key-value-stores/{store_id}/records"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    stop.set()
    t.join()
    assert out[0] == "200", out
    size, ttfb, total = int(out[1]), float(out[2]), float(out[3])

    def stats(x: list[float]) -> dict[str, float]:
        x = sorted(x)
        return {"n": len(x), "p50": statistics.median(x), "p90": x[int(len(x) * 0.9)], "p99": x[int(len(x) * 0.99)],
                "max": x[-1]}

    return {"idle": stats(idle), "during": stats(busy), "zip_mib_s": size / total / 2**20, "ttfb_s": ttfb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="the SQLite data dir of the 1M x 100 B data set")
    p.add_argument("--store-id", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--other", help="another checkout of openkvs (its repository root)")
    p.add_argument("--other-data", help="the other checkout's own copy of the data set")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=3.0)
    args = p.parse_args()
    sides = {"this": (None, args.data)}
    if args.other:
        sides["other"] = (os.path.abspath(args.other), args.other_data or args.data)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    for _ in range(args.rounds):
        for name, (code, data) in sides.items():
            with h.running(functools.partial(serve, code, data)) as (server,):
                results[name].append(measure(server, args.store_id, args.token, args.idle_seconds))
    with open("/proc/loadavg") as f:
        load += f.read().split()[:3]
    print(f"load average before/after {load[:3]} / {load[3:]}")
    for name, runs in results.items():
        for r in runs:
            i, d = r["idle"], r["during"]
            print(f"  {name:6} GET ms idle p50 {i['p50']:.2f} p99 {i['p99']:.2f} max {i['max']:.1f} (n={i['n']}) | "
                  f"during ZIP p50 {d['p50']:.2f} p90 {d['p90']:.2f} p99 {d['p99']:.2f} max {d['max']:.1f} "
                  f"(n={d['n']}) | ZIP {r['zip_mib_s']:.0f} MiB/s, TTFB {r['ttfb_s']:.2f}s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
