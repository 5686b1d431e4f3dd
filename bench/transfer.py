"""The command-line client (issue 15) against what a user has without it, in the same run, on an openkvs with
rate limits off (bench/harness.py starts every server so):

- ``openkvs upload DIR ~store --jobs 8`` (and ``--jobs 1``) of a folder of files, against the same files PUT one
  by one with the official apify_client (``set_record`` of the open file: streamed, as the client sends a file
  object, uncompressed; bytes would be gzipped by the client first, a cost that is the client's, not the wire's).
  Goal: >= 4x faster than one by one for the 64 KiB files with --jobs 8.
- ``openkvs download ~store -o FILE`` against ``curl -o FILE`` of the same archive (the ZIP endpoint). Goal: >= 0.9x
  curl's speed. The client checks every entry's CRC-32 as it downloads; that check is part of its time, and curl
  followed by ``unzip -tq`` (the same check in a second command) is measured too. Also: each command's CPU and the
  server's, the load average, and each command's fixed cost (the same command for a missing store: a 404).
  ``python -m bench.transfer [--reps N] [--quick] [--backends ...]`` runs only the downloads (each set uploaded once
  with openkvs upload -j8), on loopback.

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
    res |= downloads(srv, via, tok, f"{tag}-jobs8", reps, tmp, tag)
    return res


def timed(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command, its process start included."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, env=env, check=check, capture_output=True)
    return time.perf_counter() - t0, children_cpu() - cpu0


def downloads(srv: h.Server, via: h.Server, tok: str, store: str, reps: int, tmp: Path, tag: str) -> dict[str, Any]:
    """The archive of ``store``: curl, curl then ``unzip -t`` (what checking every CRC-32 costs with curl), and
    openkvs download, in turns, best of ``reps`` each; the CPU of each (client's and server's, best run's); and the
    fixed cost of each (the same command for a store that does not exist: process start, one request, a 404)."""
    url = f"{via.url}/v2/key-value-stores/{store_id(srv, tok, store)}/records"
    env = {**os.environ, "OPENKVS_URL": via.url, "OPENKVS_TOKEN": tok}
    curl_cmd = ["curl", "-s", "-f", "-H", f"Authorization: Bearer {tok}", "-o"]
    runs: dict[str, list[tuple[float, float, float]]] = {"curl": [], "unzip_t": [], "download": []}
    load = Path("/proc/loadavg").read_text().split()[:3]
    utc = time.strftime("%H:%M:%S", time.gmtime())
    zsize = 0
    for _ in range(reps):
        out = tmp / "curl.zip"
        s0 = server_cpu(srv.pid)
        runs["curl"].append((*timed([*curl_cmd, str(out), url]), server_cpu(srv.pid) - s0))
        zsize = out.stat().st_size
        runs["unzip_t"].append((*timed(["unzip", "-tq", str(out)]), 0.0))
        out.unlink()
        out = tmp / "cli.zip"
        s0 = server_cpu(srv.pid)
        runs["download"].append((*timed([h.OPENKVS, "download", f"~{store}", "-o", str(out), "-q"], env),
                                 server_cpu(srv.pid) - s0))
        assert out.stat().st_size == zsize, "openkvs download and curl got archives of different sizes"
        out.unlink()
    res: dict[str, Any] = {"zip_bytes": zsize, "loadavg": " ".join(load), "utc": utc}
    for key, rs in runs.items():
        best = min(rs)
        res[key] = {"seconds": best[0], "cpu_s": best[1], "server_cpu_s": best[2], "mib_s": zsize / MIB / best[0],
                    "runs_s": [round(r[0], 3) for r in rs]}
    curl_s, dl_s = res["curl"]["seconds"], res["download"]["seconds"]
    res["download_ratio"] = curl_s / dl_s  # openkvs download's speed / curl's
    # curl + unzip -t: the same guarantee as openkvs download's (every entry's CRC-32), in two commands
    res["curl_unzip_s"] = curl_s + res["unzip_t"]["seconds"]
    res["download_ratio_vs_curl_unzip"] = res["curl_unzip_s"] / dl_s
    # fixed costs: a process start and one request (a 404), best of 3
    missing = f"{via.url}/v2/key-value-stores/~no-such-store-{tag}/records"
    res["curl_start_s"] = min(timed([*curl_cmd, str(tmp / "none"), missing], check=False)[0] for _ in range(3))
    res["cli_start_s"] = min(timed([h.OPENKVS, "download", f"~no-such-store-{tag}", "-o", str(tmp / "none.zip")],
                                   env, check=False)[0] for _ in range(3))
    res["download_ratio_less_start"] = (curl_s - res["curl_start_s"]) / max(1e-3, dl_s - res["cli_start_s"])
    h.log(f"  {tag} download ({utc} UTC, load {' '.join(load)}): curl {curl_s:.3f}s (+ unzip -t "
          f"{res['unzip_t']['seconds']:.3f}s), openkvs download {dl_s:.3f}s = {res['download_ratio']:.2f}x curl, "
          f"{res['download_ratio_vs_curl_unzip']:.2f}x curl + unzip -t; CPU: curl {res['curl']['cpu_s']:.2f}s, "
          f"openkvs {res['download']['cpu_s']:.2f}s; start + a 404: curl {res['curl_start_s']:.3f}s, "
          f"openkvs {res['cli_start_s']:.3f}s")
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
    report(results)
    h.save("transfer", quick, results)
    return results


def report(results: list[dict[str, Any]]) -> None:
    rows, drows = [], []
    for r in results:
        for where in ("loopback", "rtt"):
            if where not in r:
                continue
            m = r[where]
            net = "loopback" if where == "loopback" else f"{RTT_MS} ms RTT"
            name = [r["backend"], f"{r['files']:,} x {r['set']}", net]
            if "jobs8" in m:
                j1 = m.get("jobs1", {}).get("seconds", "-")
                rows.append([*name, m["apify_client"]["seconds"], j1, m["jobs8"]["seconds"],
                             m.get("upload_speedup_jobs1", "-"), m["upload_speedup_jobs8"],
                             m["apify_client"]["server_cpu_s"], m["jobs8"]["server_cpu_s"],
                             m["apify_client"]["client_cpu_s"], m["jobs8"]["client_cpu_s"]])
            drows.append([*name, m["utc"], m["loadavg"], m["curl"]["seconds"], m["unzip_t"]["seconds"],
                          m["download"]["seconds"], m["download_ratio"], m["download_ratio_vs_curl_unzip"],
                          m["curl"]["cpu_s"], m["download"]["cpu_s"], m["curl"]["server_cpu_s"],
                          m["download"]["server_cpu_s"], m["curl_start_s"], m["cli_start_s"],
                          m["download_ratio_less_start"]])
    if rows:
        h.table("openkvs upload vs apify_client one by one, wall clock. x = apify_client time / openkvs upload time "
                "(goal >= 4 at 64 KiB with -j8); CPU = CPU seconds of the server and of the client (apify_client: "
                "this process; openkvs: its process) during the upload",
                ["backend", "set", "network", "apify_client 1-by-1 s", "upload -j1 s", "upload -j8 s", "x -j1",
                 "x -j8", "srv CPU 1-by-1 s", "srv CPU -j8 s", "client CPU 1-by-1 s", "client CPU -j8 s"], rows)
    h.table("openkvs download vs curl -o FILE of the same archive, in turns, best of runs, wall clock of the whole "
            "command. ratio = curl s / openkvs download s (goal >= 0.9); vs curl+unzip: curl then unzip -tq, the "
            "same check of every CRC-32; CPU: the client's and the server's, in the best run; start + 404: the same "
            "command for a store that does not exist (process start, one request), best of 3; ratio less start: "
            "both commands' times less their start + 404",
            ["backend", "set", "network", "UTC", "load", "curl s", "unzip -t s", "download s", "ratio",
             "vs curl+unzip", "curl CPU s", "download CPU s", "srv CPU curl s", "srv CPU download s",
             "curl start+404 s", "openkvs start+404 s", "ratio less start"], drows)


def download_only(backends: list[str], quick: bool, reps: int) -> list[dict[str, Any]]:
    """Only the download comparison, on loopback: each set uploaded once with openkvs upload -j8, then
    downloaded in turns with curl and openkvs download."""
    sets = [("64KiB", 500 if quick else 2000, 64 * 1024), ("50MiB", 4 if quick else 20, 50 * MIB)]
    results: list[dict[str, Any]] = []
    h.DATA.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="xfer-tmp-", dir=h.DATA))
    try:
        for kind in backends:
            for label, count, size in sets:
                folder = files(label, count, size)
                backend = h.Backend(kind, f"xfer-dl-{label}")
                backend.drop()
                ds = h.dataset(kind, f"xfer-dl-{label}", 0, lambda i: h.Body(b""))
                try:
                    with h.running(ds.backend.start) as (srv,):
                        cli(["upload", str(folder), "~dl-jobs8", "--jobs", "8"], srv, ds.token)
                        h.log(f"transfer (downloads only) {kind} {label} x {count}")
                        res = {"backend": kind, "set": label, "files": count, "bytes": count * size,
                               "loopback": downloads(srv, srv, ds.token, "dl-jobs8", reps, tmp, "lo")}
                        results.append(res)
                finally:
                    backend.drop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    h.save("transfer-downloads", quick, results)
    return results


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.transfer", description="openkvs download vs curl only "
                                "(python -m bench transfer runs the uploads too)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backends", default="sqlite")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    download_only([b.strip() for b in a.backends.split(",") if b.strip()], a.quick, a.reps)
