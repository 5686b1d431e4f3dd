"""Reads of a few dataset items at random offsets over HTTP (the list-items API, ``?offset=X&limit=10``), this
checkout against another, in turns: what a read pays for the packed row it falls in (storage/datasets.py,
ITEMS_PER_ROW). A fresh server per turn, 20,000 items pushed in pushes of 1,000 (bench/datasets.py's ~500 B
item), then ``--reads`` reads ascending and as many with ``desc=1``, the same offsets for both checkouts; the
server's CPU per read and the client's wall-clock per read.

    .venv/bin/python -m bench.read_points --backend sqlite --other /tmp/main-src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import httpx

from bench.datasets import _cpu, item
from bench.push_ab import _serve


def measure(kind: str, checkout: str | None, label: str, reads: int, seed: int) -> dict[str, float]:
    srv, token = _serve(kind, checkout, label)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as c:
            did = c.post("/v2/datasets", params={"name": f"points-{time.time_ns()}"}).json()["data"]["id"]
            for p in range(20):
                body = json.dumps([item(p * 1000 + i) for i in range(1000)], separators=(",", ":")).encode()
                assert c.post(f"/v2/datasets/{did}/items", content=body).status_code == 201
            offsets = random.Random(seed).sample(range(20_000 - 10), reads)
            out = {}
            for desc in (False, True):
                cpu0, t0 = _cpu(srv.pid), time.perf_counter()
                for off in offsets:
                    params = {"offset": off, "limit": 10, **({"desc": 1} if desc else {})}
                    r = c.get(f"/v2/datasets/{did}/items", params=params)
                    assert r.status_code == 200 and len(r.json()) == 10, r.text
                cpu1, t1 = _cpu(srv.pid), time.perf_counter()
                key = "desc" if desc else "asc"
                out[f"{key}_cpu_us"] = (cpu1 - cpu0) / reads * 1e6
                out[f"{key}_wall_us"] = (t1 - t0) / reads * 1e6
            return out
    finally:
        srv.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--other", help="another checkout of openkvs")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reads", type=int, default=400)
    args = p.parse_args()
    subjects: list[tuple[str, str | None]] = [("this", None)] + ([("other", args.other)] if args.other else [])
    for r in range(args.rounds):
        for label, checkout in subjects:
            m = measure(args.backend, checkout, label, args.reads, seed=r)
            print(f"round {r} {label:5s} load {os.getloadavg()[0]:5.1f}  " + "  ".join(
                f"{k} {v:7.1f}" for k, v in m.items()), flush=True)


if __name__ == "__main__":
    main()
