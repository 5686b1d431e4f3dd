"""``openkvs export --dataset`` and ``openkvs import`` of a dataset in Crawlee's layout (one file per item) at
scale: a dataset of N items (default 1,000,000) and one of 10,000, each exported and imported back by the client
command in its own process. Per command: wall time, the process's CPU, its peak RSS (the child's ru_maxrss), and
the load average. The export streams the jsonl export into files and the import reads files one batch at a time,
so the peak RSS of the big run should be that of the small one (the client's own size), not grow with N.

    python -m bench.crawlee_io [--items N] [--backend sqlite|postgres]

On a server with rate limits off (bench/harness.py), SQLite in bench/.data/ or a PostgreSQL schema of its own;
the items are pushed through the API first (9 MiB pushes, not timed), and every folder is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import time

import httpx

from bench import harness as h


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args: list[str], srv: h.Server, token: str) -> dict[str, float]:
    """One client command in its own process, under /usr/bin/time for its peak RSS."""
    env = {**os.environ, "OPENKVS_URL": srv.url, "OPENKVS_TOKEN": token}
    cpu0, t0 = _child_cpu(), time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", h.OPENKVS, *args, "-q"], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(out.stdout + out.stderr)
    wall = time.perf_counter() - t0
    peak_kib = int(out.stderr.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "cpu_s": round(_child_cpu() - cpu0, 1), "peak_rss_mib": round(peak_kib / 1024, 1),
            "load1": os.getloadavg()[0]}


def fill(client: httpx.Client, name: str, n: int) -> None:
    client.post("/v2/datasets", params={"name": name}).raise_for_status()
    batch: list[bytes] = []
    size = 0
    for i in range(n):
        item = json.dumps({"i": i, "url": f"https://example.com/p/{i}", "title": f"Product {i} ✓",
                           "price": i % 1000 / 10}).encode()
        if size + len(item) > 8 << 20:
            client.post(f"/v2/datasets/~{name}/items", content=b"[" + b",".join(batch) + b"]",
                        headers={"content-type": "application/json"}).raise_for_status()
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 1
    if batch:
        client.post(f"/v2/datasets/~{name}/items", content=b"[" + b",".join(batch) + b"]",
                    headers={"content-type": "application/json"}).raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    a = ap.parse_args()
    backend = h.Backend(a.backend, f"crawleeio-{a.items}")
    backend.drop()
    where = (["--data-dir", str(backend.data_dir)] if a.backend == "sqlite" else ["--database-url", h.PG_URL])
    env = {**os.environ, **({"OPENKVS_DATABASE_SCHEMA": backend.schema} if a.backend == "postgres" else {})}
    subprocess.run([h.OPENKVS, "migrate", *where], env=env, check=True, capture_output=True)
    token = subprocess.run([h.OPENKVS, "users", "create", "bench", *where], env=env, capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
    out = h.DATA / f"crawleeio-out-{a.items}"
    shutil.rmtree(out, ignore_errors=True)
    results = {}
    srv = backend.start()
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
            for label, n in (("small", 10_000), ("big", a.items)):
                fill(c, f"ds-{label}", n)
                h.log(f"{label}: {n} items pushed")
                exp = run(["export", "--dataset", f"~ds-{label}", str(out)], srv, token)
                files = sum(1 for _ in (out / "datasets" / f"ds-{label}").iterdir())
                imp = run(["import", str(out / "datasets" / f"ds-{label}"), "--store", f"~back-{label}"], srv, token)
                count = c.get(f"/v2/datasets/~back-{label}").json()["data"]["itemCount"]
                same = c.get(f"/v2/datasets/~back-{label}/items", params={"offset": n - 1}).json() == \
                    c.get(f"/v2/datasets/~ds-{label}/items", params={"offset": n - 1}).json()
                results[label] = {"items": n, "files": files, "imported": count, "last_item_equal": same,
                                  "export": exp, "import": imp}
                h.log(f"{label}: {results[label]}")
                shutil.rmtree(out / "datasets" / f"ds-{label}")
    finally:
        srv.stop()
        shutil.rmtree(out, ignore_errors=True)
        backend.drop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
