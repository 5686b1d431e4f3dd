"""The command-line client (issue 15) against what a user has without it, in the same run, on an openkvs with
rate limits off (bench/harness.py starts every server so):

- ``openkvs upload DIR ~store --jobs 8`` (and ``--jobs 1``) of a folder of files, against the same files PUT one
  by one with the official apify_client (``set_record`` of the open file: streamed, as the client sends a file
  object, uncompressed; bytes would be gzipped by the client first, a cost that is the client's, not the wire's).
  Goal: >= 4x faster than one by one for the 64 KiB files with --jobs 8.
- ``openkvs download ~store -o FILE`` against ``curl -o FILE`` of the same archive (the ZIP endpoint). Goal: >= 0.9x
  curl's speed. The client checks every entry's CRC-32 after the download; that check is part of its time.

Times are wall clock of the whole command (the CLI's process start included; apify_client runs in this process,
so its import and start are not counted). Each upload goes into a new, empty store on the same server.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import harness as h
from bench.download import RTT_MS, start_netdelay

MIB = 1024 * 1024


def files(label: str, count: int, size: int) -> Path:
    """``count`` files of ``size`` random bytes in bench/.data/, made once and reused."""
    folder = h.DATA / f"xfer-files-{label}-{count}"
    marker = folder.with_suffix(".done")
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    h.log(f"writing {count} files of {size} bytes to {folder.relative_to(h.REPO)}")
    for i in range(count):
        with open(folder / f"f{i:05d}.bin", "wb") as f:
            left = size
            while left:
                n = min(left, MIB)
                f.write(os.urandom(n))
                left -= n
    marker.write_text(json.dumps({"count": count, "size": size}))
    return folder


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(args: list[str], srv: h.Server, token: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one openkvs client command, its process start included."""
    env = {**os.environ, "OPENKVS_URL": srv.url, "OPENKVS_TOKEN": token}
    cpu0, t0 = children_cpu(), time.perf_counter()
    quiet = ["-q"] if args[0] in ("upload", "download") else []
    subprocess.run([h.OPENKVS, *args, *quiet], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, children_cpu() - cpu0


def store_id(srv: h.Server, token: str, name: str) -> str:
    r = httpx.post(f"{srv.url}/v2/key-value-stores", params={"name": name},
                   headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r.raise_for_status()
    return str(r.json()["data"]["id"])


def stored(srv: h.Server, token: str, sid: str) -> tuple[int, int]:
    """(records, bytes) the store holds, from its key listing: checks that an upload left every file."""
    n = total = 0
    start = None
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"exclusiveStartKey": start} if start else {})}
            d = c.get(f"{srv.url}/v2/key-value-stores/{sid}/keys", params=params).json()["data"]
            n += len(d["items"])
            total += sum(it["size"] for it in d["items"])
            if not d["isTruncated"]:
                return n, total
            start = d["nextExclusiveStartKey"]


def one_by_one(srv: h.Server, token: str, folder: Path, name: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to PUT every file with apify_client, one after the other."""
    from apify_client import ApifyClient

    paths = sorted(folder.iterdir())
    cpu0, t0 = time.process_time(), time.perf_counter()
    kvs = ApifyClient(token, api_url=srv.url).key_value_stores().get_or_create(name=name)
    store = ApifyClient(token, api_url=srv.url).key_value_store(kvs.id)
    for p in paths:
        with open(p, "rb") as f:
            store.set_record(p.name, f, content_type="application/octet-stream")
    return time.perf_counter() - t0, time.process_time() - cpu0


def curl(url: str, token: str, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-H", f"Authorization: Bearer {token}", "-o", str(out), url], check=True)
    return time.perf_counter() - t0


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(srv: h.Server, via: h.Server, tok: str, tag: str, folder: Path, count: int, size: int, reps: int,
            tmp: Path, jobs1: bool) -> dict[str, Any]:
    """Uploads and downloads through ``via`` (the server itself, or the delaying proxy in front of it); what was
    stored is checked on ``srv`` directly. Stores are named after ``tag``: each upload into a new, empty one."""
    res: dict[str, Any] = {}
    want = (count, count * size)
    runs: list[tuple[str, list[str] | None]] = [("apify_client", None), ("jobs8", ["--jobs", "8"])]
    if jobs1:
        runs.append(("jobs1", ["--jobs", "1"]))
    for key, jobs in runs:
        store = f"{tag}-" + key.replace("_", "-")
        cpu0 = server_cpu(srv.pid)
        if jobs is None:
            secs, ccpu = one_by_one(via, tok, folder, store)
        else:
            secs, ccpu = cli(["upload", str(folder), f"~{store}", *jobs], via, tok)
        cpu = server_cpu(srv.pid) - cpu0
        got = stored(srv, tok, store_id(srv, tok, store))
        assert got == want, f"{key}: stored {got}, want {want}"
        res[key] = {"seconds": secs, "files_s": count / secs, "mib_s": count * size / MIB / secs, "server_cpu_s": cpu,
                    "client_cpu_s": ccpu}
        h.log(f"  {tag} upload {key}: {secs:.2f}s (server CPU {cpu:.2f}s, client CPU {ccpu:.2f}s)")
    res["upload_speedup_jobs8"] = res["apify_client"]["seconds"] / res["jobs8"]["seconds"]
    if "jobs1" in res:
        res["upload_speedup_jobs1"] = res["apify_client"]["seconds"] / res["jobs1"]["seconds"]
    # the archive of the store the CLI filled: curl and openkvs download in turns, best of reps each
    store = f"{tag}-jobs8"
    url = f"{via.url}/v2/key-value-stores/{store_id(srv, tok, store)}/records"
    c_runs, o_runs = [], []
    zsize = 0
    for _ in range(reps):
        out = tmp / "curl.zip"
        c_runs.append(curl(url, tok, out))
        zsize = out.stat().st_size
        out.unlink()
        out = tmp / "cli.zip"
        o_runs.append(cli(["download", f"~{store}", "-o", str(out)], via, tok)[0])
        assert out.stat().st_size == zsize, "openkvs download and curl got archives of different sizes"
        out.unlink()
    res["zip_bytes"] = zsize
    res["curl"] = {"seconds": min(c_runs), "runs_s": [round(x, 3) for x in c_runs], "mib_s": zsize / MIB / min(c_runs)}
    res["download"] = {"seconds": min(o_runs), "runs_s": [round(x, 3) for x in o_runs],
                       "mib_s": zsize / MIB / min(o_runs)}
    res["download_ratio"] = min(c_runs) / min(o_runs)  # openkvs download's speed / curl's
    # the client's fixed cost, to tell it from its per-byte cost on small archives: a Python process's start
    start = min(cli(["--version"], via, tok)[0] for _ in range(3))
    res["cli_start_s"] = start
    res["download_ratio_less_start"] = min(c_runs) / max(1e-3, min(o_runs) - start)
    h.log(f"  {tag} download: curl {min(c_runs):.2f}s, openkvs download {min(o_runs):.2f}s")
    return res


def bench_set(kind: str, label: str, folder: Path, count: int, size: int, reps: int, tmp: Path) -> dict[str, Any]:
    name = f"xfer-{label}"
    backend = h.Backend(kind, name)
    backend.drop()  # every run starts from empty stores
    ds = h.dataset(kind, name, 0, lambda i: h.Body(b""))
    res: dict[str, Any] = {"backend": kind, "set": label, "files": count, "bytes": count * size}
    try:
        with h.running(ds.backend.start) as (srv,):
            res["loopback"] = measure(srv, srv, ds.token, "lo", folder, count, size, reps, tmp, size < MIB)
            with h.running(lambda: start_netdelay(srv, RTT_MS)) as (px,):
                res["rtt"] = measure(srv, px, ds.token, "rtt", folder, count, size, reps, tmp, False)
            res["rtt"]["rtt_ms"] = RTT_MS
    finally:
        backend.drop()
    return res


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    sets = [("64KiB", 500 if quick else 2000, 64 * 1024), ("50MiB", 4 if quick else 20, 50 * MIB)]
    reps = 2 if quick else 3
    results: list[dict[str, Any]] = []
    h.DATA.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="xfer-tmp-", dir=h.DATA))
    try:
        for kind in backends:
            for label, count, size in sets:
                folder = files(label, count, size)
                h.log(f"transfer {kind} {label} x {count}")
                results.append(bench_set(kind, label, folder, count, size, reps, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for r in results:
        for where in ("loopback", "rtt"):
            m = r[where]
            j1 = m.get("jobs1", {}).get("seconds", "-")
            rows.append([r["backend"], f"{r['files']:,} x {r['set']}", "loopback" if where == "loopback" else
                         f"{RTT_MS} ms RTT", m["apify_client"]["seconds"], j1, m["jobs8"]["seconds"],
                         m.get("upload_speedup_jobs1", "-"), m["upload_speedup_jobs8"],
                         m["apify_client"]["server_cpu_s"], m["jobs8"]["server_cpu_s"],
                         m["apify_client"]["client_cpu_s"], m["jobs8"]["client_cpu_s"],
                         m["curl"]["mib_s"], m["download"]["mib_s"], m["download_ratio"],
                         m["download_ratio_less_start"]])
    h.table("openkvs upload / download vs apify_client one by one / curl, wall clock. x = apify_client time / "
            "openkvs upload time (goal >= 4 at 64 KiB with -j8); CPU = CPU seconds of the server and of the client "
            f"(apify_client: this process; openkvs: its process) during the upload; download ratio = openkvs download MiB/s / curl MiB/s, best of runs (goal >= 0.9); less start: openkvs download's time less its process start (`openkvs --version`, best of 3); "
            f"{RTT_MS} ms RTT: through bench/netdelay.py",
            ["backend", "set", "network", "apify_client 1-by-1 s", "upload -j1 s", "upload -j8 s", "x -j1", "x -j8",
             "srv CPU 1-by-1 s", "srv CPU -j8 s",
             "client CPU 1-by-1 s", "client CPU -j8 s", "curl MiB/s", "download MiB/s", "download ratio",
             "ratio less start"], rows)
    h.save("transfer", quick, results)
    return results
