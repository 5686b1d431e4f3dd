"""Where a served 1,000-item dataset push's CPU goes, by thread: back-to-back pushes for S seconds, then the same
body PUT as one key-value store record, each thread's CPU (user + system, /proc/PID/task/*/stat) per item and its
page faults (minor faults: fresh memory touched) per request. Threads are named by ``py-spy dump`` (the event loop
is MainThread, the preparation runs in an AnyIO worker thread, SQLite writes in openkvs-sqlite). A server of
bench/push_ab.py's kind; CHECKOUT (optional): another checkout served through PYTHONPATH. Run each side in turns.

    PYTHONPATH=$PWD .venv/bin/python -m bench.push_threads sqlite 4 [CHECKOUT]
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time

import httpx

from bench.datasets import item
from bench.harness import VENV_BIN
from bench.push_ab import _serve

TICK = os.sysconf("SC_CLK_TCK")


def thread_names(pid: int) -> dict[str, str]:
    """Native thread id -> Python thread name (pool threads' numbers dropped)."""
    dump = subprocess.run([str(VENV_BIN / "py-spy"), "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    names = {}
    for m in re.finditer(r'Thread (\S+) \(\w+\): "([^"]+)"', dump):
        tid = m.group(1)
        names[str(int(tid, 16) if tid.startswith("0x") else int(tid))] = re.sub(r"_?\d+$", "", m.group(2))
    return names


def per_thread(pid: int, names: dict[str, str]) -> tuple[collections.defaultdict[str, float], collections.Counter[str]]:
    """CPU seconds and minor faults so far, summed by thread name."""
    cpu: collections.defaultdict[str, float] = collections.defaultdict(float)  # (a Counter's counts are ints)
    faults: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        name = names.get(tid, "other")
        cpu[name] += (int(fields[11]) + int(fields[12])) / TICK
        faults[name] += int(fields[7])
    return cpu, faults


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    checkout = sys.argv[3] if len(sys.argv) > 3 else None
    srv, token = _serve(kind, checkout, "threads")
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps([item(i) for i in range(1000)], separators=(",", ":")).encode()
        with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as c:
            ds = c.post("/v2/datasets", params={"name": "threads"}).json()["data"]["id"]
            kvs = c.post("/v2/key-value-stores", params={"name": "threads"}).json()["data"]["id"]

            def request(what: str, n: int) -> None:
                if what == "push":
                    r = c.post(f"/v2/datasets/{ds}/items", content=body)
                else:
                    r = c.put(f"/v2/key-value-stores/{kvs}/records/k{n}", content=body)
                assert r.status_code in (200, 201), r.text

            for i in range(10):  # warm-up: every thread started
                request("push", i)
                request("record", i)
            names = thread_names(srv.pid)
            for what in ("push", "record"):
                cpu0, faults0 = per_thread(srv.pid, names)
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:
                    request(what, 100 + n)
                    n += 1
                wall = time.perf_counter() - start
                cpu1, faults1 = per_thread(srv.pid, names)
                us = {k: (cpu1[k] - cpu0[k]) / n / 1000 * 1e6 for k in cpu1 if cpu1[k] > cpu0[k]}
                print(f"{what:6s} load {os.getloadavg()[0]:4.1f} {n * 1000 / wall:8.0f} items/s, CPU us/item "
                      f"{sum(us.values()):5.2f}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(us.items())) +
                      "; faults/request " + ", ".join(f"{k} {(faults1[k] - faults0[k]) / n:.0f}" for k in sorted(us)),
                      flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
