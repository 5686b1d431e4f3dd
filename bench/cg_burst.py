"""Instructions per served PostgreSQL record GET under C concurrent keep-alive clients (wrk's -c32 by default), where
the look-ups are asked together (storage/postgres/lookups.py), which bench/cg_get.py and bench/cg_served.py (one
client) never reach: ``openkvs serve`` on PostgreSQL under callgrind, a warm-up, instrumentation on for 640 GETs, a
dump, N GETs, a second dump: its total / N. The records data set of bench/records.py (1,000 keys of 1 KiB, keys
drawn at random, seeded). Environment: BENCH_PG_URL; TREE: whose openkvs serves (default this checkout, e.g. a
``git archive`` of main for a before/after); DEFAULTS=1: the settings users run (bench/harness.py).

    BENCH_PG_URL=... DEFAULTS=1 PYTHONPATH=$PWD .venv/bin/python -m bench.cg_burst 1280 [C]
"""

from __future__ import annotations

import asyncio
import glob
import os
import random
import subprocess
import sys
import tempfile
import time

from bench import harness as h
from bench.records import NKEYS, RECORD

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1280
C = int(sys.argv[2]) if len(sys.argv) > 2 else 32
TREE = os.environ.get("TREE", str(h.REPO))


async def _client(port: int, paths: list[str], token: str, n: int, draw: random.Random) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        path = paths[draw.randrange(len(paths))]
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:80]
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
    writer.close()


async def _gets(port: int, paths: list[str], token: str, total: int, seed: int) -> None:
    draw = random.Random(seed)
    await asyncio.gather(*(_client(port, paths, token, total // C, random.Random(draw.random())) for _ in range(C)))


def main() -> None:
    ds = h.dataset("postgres", "perfrec1k", NKEYS, lambda i: h.Body(RECORD))
    port = h.free_port()
    cmd, env = ds.backend.serve_cmd(port, bool(os.environ.get("DEFAULTS")))
    out = tempfile.mkdtemp(prefix="okvs-cgb-")
    cg = os.path.join(out, "cg.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg}",
         sys.executable, "-m", "openkvs", *cmd[1:]],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "stderr"), "wb"),
        env={**os.environ, **env, "PYTHONPATH": TREE}, cwd=TREE,
    )
    paths = [f"/v2/key-value-stores/{ds.store_id}/records/k{i:08d}" for i in range(NKEYS)]
    deadline = time.monotonic() + 300
    while True:
        try:
            asyncio.run(_gets(port, paths, ds.token, C, 1))
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.5)
    asyncio.run(_gets(port, paths, ds.token, 1600, 2))
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
    asyncio.run(_gets(port, paths, ds.token, 640, 3))
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    asyncio.run(_gets(port, paths, ds.token, N, 4))
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    proc.terminate()
    proc.wait()
    last = max(glob.glob(cg + ".*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    with open(last) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
    print(f"{TREE} -c{C}: {total / N:,.0f} instructions a GET ({N} GETs); dump {last}")


if __name__ == "__main__":
    main()
