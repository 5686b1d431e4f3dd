"""Instructions per item of a served 1,000-item dataset push (``openkvs serve`` under callgrind, all its threads:
the HTTP read, the preparation, storage), and of the same body PUT as one key-value store record, for a machine too
busy for timings. User-space instructions only: the kernel's work (the socket, page faults of fresh memory, fsync)
is not in them. SQLite, rate limits off, no access log (as bench/push_ab.py serves). One keep-alive connection; W
requests of warm-up with instrumentation on, a dump, N more and a second dump: that dump's total / (N * 1,000).

    PYTHONPATH=$PWD .venv/bin/python -m bench.cg_push_served push 10     # or: record 10
"""

import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import harness as h
from bench.datasets import item

WHAT = sys.argv[1] if len(sys.argv) > 1 else "push"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10
W = 10
BATCH = 1000


async def _setup(data_dir: str) -> str:
    from openkvs import auth
    from openkvs.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(data_dir, background=False)
    await storage.open()
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    await storage.aclose()
    return token


def main() -> None:
    out = tempfile.mkdtemp(prefix="okvs-cgp-")
    data = os.path.join(out, "data")
    token = asyncio.run(_setup(data))
    port = h.free_port()
    cmd = [sys.executable, "-m", "openkvs", "serve", "--port", str(port), "--data-dir", data,
           "--rate-limits", "off", "--log-level", "warning"]
    cg = os.path.join(out, "cg.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg}", *cmd],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "stderr"), "wb"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    deadline = time.monotonic() + 300
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("POST", "/v2/datasets?name=cg", headers=headers)
            ds = json.loads(conn.getresponse().read())["data"]["id"]
            conn.request("POST", "/v2/key-value-stores?name=cg", headers=headers)
            kvs = json.loads(conn.getresponse().read())["data"]["id"]
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.5)
    body = json.dumps([item(i) for i in range(BATCH)], separators=(",", ":")).encode()
    count = 0

    def requests(n: int) -> None:
        nonlocal count
        for _ in range(n):
            if WHAT == "push":
                conn.request("POST", f"/v2/datasets/{ds}/items", body=body, headers=headers)
            else:
                conn.request("PUT", f"/v2/key-value-stores/{kvs}/records/k{count}", body=body, headers=headers)
            count += 1
            r = conn.getresponse()
            r.read()
            assert r.status in (200, 201), r.status

    requests(3)
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
    requests(W)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    requests(N)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    proc.terminate()
    proc.wait()
    total = 0
    with open(cg + ".2") as f:  # the second dump (all threads together: callgrind's default)
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
                break
    print(f"{WHAT}: {total / N / BATCH:,.0f} instructions an item ({N} requests of {BATCH} items); dumps in {out}")


if __name__ == "__main__":
    main()
