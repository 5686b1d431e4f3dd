"""A served 1,000-item dataset push (or the same body PUT as one record), this checkout against another, on two
servers running at once and sent to in turns (one-second stretches, ROUNDS each): items/s (median of the stretches)
and each server's CPU per item by thread (event loop, preparation, SQLite's writer, the checkpoint thread), which
moves less with the machine's load than items/s do. CHECKOUT: another checkout served through PYTHONPATH
(``git archive REV | tar -x -C DIR``, then ``python hatch_build.py`` in it for the C extensions).

    PYTHONPATH=$PWD .venv/bin/python -m bench.push_turns CHECKOUT [ROUNDS] [push|record]
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.datasets import item
from bench.push_ab import _serve
from bench.push_threads import per_thread, thread_names


def main() -> None:
    other = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    what = sys.argv[3] if len(sys.argv) > 3 else "push"
    body = json.dumps([item(i) for i in range(1000)], separators=(",", ":")).encode()
    sides: dict[str, dict[str, Any]] = {}
    try:
        for label, checkout in (("this", None), ("other", other)):
            srv, token = _serve("sqlite", checkout, f"turns-{label}")
            sides[label] = {"srv": srv, "rates": [], "cpu": {}, "n": 0}
            c = httpx.Client(base_url=srv.url, timeout=120,
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            ds = c.post("/v2/datasets", params={"name": "turns"}).json()["data"]["id"]
            kvs = c.post("/v2/key-value-stores", params={"name": "turns"}).json()["data"]["id"]
            sides[label]["send"] = sender(c, what, ds, kvs, body)
            for _ in range(10):  # every thread started
                sides[label]["send"]()
            sides[label]["names"] = thread_names(srv.pid)
        for _ in range(rounds):
            for side in sides.values():
                cpu0, _ = per_thread(side["srv"].pid, side["names"])
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < 1.0:
                    side["send"]()
                    n += 1
                wall = time.perf_counter() - t0
                cpu1, _ = per_thread(side["srv"].pid, side["names"])
                side["rates"].append(n * 1000 / wall)
                side["n"] += n
                for name, seconds in cpu1.items():
                    side["cpu"][name] = side["cpu"].get(name, 0.0) + seconds - cpu0.get(name, 0.0)
        for label, side in sides.items():
            us = {name: round(s / side["n"] / 1000 * 1e6, 2) for name, s in side["cpu"].items() if s > 0}
            print(f"{label:5s} {what}: median {statistics.median(side['rates']):,.0f} items/s, server CPU "
                  f"{sum(us.values()):.2f} us/item: " + ", ".join(f"{k} {v}" for k, v in sorted(us.items())))
    finally:
        for side in sides.values():
            side["srv"].stop()


def sender(c: httpx.Client, what: str, ds: str, kvs: str, body: bytes) -> Callable[[], None]:
    keys = itertools.count()

    def send() -> None:
        if what == "push":
            r = c.post(f"/v2/datasets/{ds}/items", content=body)
        else:
            r = c.put(f"/v2/key-value-stores/{kvs}/records/k{next(keys)}", content=body)
        assert r.status_code in (200, 201), r.text

    return send


if __name__ == "__main__":
    main()
