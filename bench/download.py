"""The ZIP endpoint (GET /v2/key-value-stores/{id}/records) against, in the same run: nginx serving the identical
archive bytes as a static file (sendfile on), `zip -0 -q -r` building the same archive from files on disk, and
fetching every record one by one with the official apify_client. On PostgreSQL also PostgreSQL's own speed for the
same rows: psql's binary COPY (`COPY (SELECT data ...) TO STDOUT (FORMAT binary)` to /dev/null) of the records'
chunks in key order, and asyncpg's `copy_from_query` of the same into a sink that drops them (what a client of
PostgreSQL can read at best on this machine; the archive is the same bytes plus its headers). Plus time to first
byte and server RSS growth for a million small records, and a resumed (Range) download checked byte for byte.

On loopback a request costs no round trip, which flatters one-by-one fetching; so for the 64 KiB set the ZIP and
apify_client one by one are measured again through bench/netdelay.py, a proxy adding RTT_MS (20 ms) of round trip."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from bench import harness as h
from bench.records import tiny_dataset

MIB = 1024 * 1024
RTT_MS = 20  # round trip added for the "what users do today" comparison: a client on the same continent
OBO_RTT_SAMPLE = 100  # records apify_client fetches one by one through the proxy (extrapolated to all)

NGINX_CONF = """
{user}
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile {sendfile};
    tcp_nopush on;
    output_buffers 2 1m;
    default_type application/zip;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
    }}
}}
"""


def random_body(size: int) -> h.Body:
    def chunks():  # type: ignore[no-untyped-def]
        left = size
        while left:
            n = min(left, MIB)
            yield os.urandom(n)
            left -= n

    return h.Body(chunks)


def curl(url: str, token: str | None, out: str = "/dev/null") -> dict[str, float]:
    cmd = ["curl", "-s", "-f", "-o", out, "-w", "%{time_total} %{size_download} %{time_starttransfer}", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    total, size, ttfb = r.stdout.split()
    return {"seconds": float(total), "bytes": int(size), "ttfb_ms": float(ttfb) * 1000}


# The reader of the export benchmarks, for openkvs and nginx alike: one recv_into a buffer of READ_BUFFER bytes per
# system call, the bytes counted (chunked framing decoded) and dropped. curl reads 16 KiB a call and writes each to
# /dev/null: with it nginx's 448 MB took 0.39-0.55 s (best, median; load 5) of which curl itself was 0.23 s of CPU,
# so its figure moved with the load on curl; with 1 MiB reads 0.28-0.36 s, the reader 0.06-0.11 s of CPU
# (bench/datasets.py; BENCHMARKS.md, issue 13, branch exports).
READ_BUFFER = 1024 * 1024


def fetch(url: str, token: str | None, out: str | None = None) -> dict[str, float]:
    """GET ``url`` over one connection; the body's bytes written to ``out`` or dropped. As ``curl`` gives: seconds,
    bytes of the body, ttfb_ms (to the end of the head); and cpu_s, this thread's CPU (user and kernel) meanwhile."""
    u = urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    head = f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    buf = bytearray(READ_BUFFER)
    view = memoryview(buf)
    sink = open(out, "wb") if out else None
    c0, t0 = time.thread_time(), time.perf_counter()
    try:
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall((head + "\r\n").encode())
            got = b""
            while b"\r\n\r\n" not in got:
                n = s.recv_into(buf)
                if not n:
                    raise RuntimeError(f"{url}: closed before the end of the head")
                got += buf[:n]
            ttfb = time.perf_counter() - t0
            text, rest = got.split(b"\r\n\r\n", 1)
            status, *lines = text.decode("latin-1").split("\r\n")
            if status.split()[1] != "200":
                raise RuntimeError(f"{url}: {status}")
            fields = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}

            def more() -> memoryview:
                n = s.recv_into(buf)
                if not n:
                    raise RuntimeError(f"{url}: the connection ended inside the body")
                return view[:n]

            if fields.get("transfer-encoding", "").lower() == "chunked":
                size = _read_chunked(memoryview(rest), more, sink)
            else:
                length, size, data = int(fields["content-length"]), 0, memoryview(rest)
                while True:
                    size += len(data)
                    if sink:
                        sink.write(data)
                    if size >= length:
                        break
                    data = more()
    finally:
        if sink:
            sink.close()
    return {"seconds": time.perf_counter() - t0, "bytes": size, "ttfb_ms": ttfb * 1000,
            "cpu_s": time.thread_time() - c0}


def _read_chunked(data: memoryview, more: Callable[[], memoryview], sink: BinaryIO | None) -> int:
    """The body's bytes of a chunked response (``data``: what came after the head; ``more()``: the next read),
    each written to ``sink``; their count. A chunk's size line may span reads: it is gathered in ``line``."""
    size = left = 0  # the body's bytes so far; those left in the current chunk
    line, after_chunk = b"", False  # a size line so far; whether the CRLF that ends a chunk's data comes first
    while True:
        pos, end = 0, len(data)
        while pos < end:
            if left:
                k = min(left, end - pos)
                if sink:
                    sink.write(data[pos : pos + k])
                size, pos, left = size + k, pos + k, left - k
                after_chunk = not left
                continue
            part = bytes(data[pos : pos + 64])
            before = len(line)
            line += part
            skip = 2 if after_chunk else 0
            if after_chunk and len(line) >= 2 and line[:2] != b"\r\n":
                raise RuntimeError(f"bad chunk framing: {line[:20]!r}")
            i = line.find(b"\r\n", skip) if len(line) >= skip else -1
            if i < 0:
                pos += len(part)
                continue
            left = int(line[skip:i].split(b";")[0], 16)
            pos += i + 2 - before
            line, after_chunk = b"", False
            if not left:  # the last chunk (trailers, if any, are not read: the connection closes)
                return size
        data = more()


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Runs of one download: the best (its fields and MiB/s), the median's seconds and MiB/s, every run's seconds
    and, where the runs have them, the medians of the reader's and the server's CPU seconds."""
    best = min(runs, key=lambda r: r["seconds"])
    median = statistics.median(r["seconds"] for r in runs)
    out = {**best, "mb_s": best["bytes"] / MIB / best["seconds"], "median_s": median,
           "median_mb_s": best["bytes"] / MIB / median, "runs_s": [round(r["seconds"], 3) for r in runs]}
    for key, name in (("cpu_s", "reader_cpu_s"), ("server_cpu_s", "server_cpu_s")):
        if all(key in r for r in runs):
            out[name] = round(statistics.median(r[key] for r in runs), 3)
    return out


def interleaved(rounds: int, sides: dict[str, Callable[[], dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Each side's ``summary`` over ``rounds`` runs made in turns (a, b, a, b, ...): a spell of load on the
    machine hits every side alike, where runs of one side then the other would put it all on one."""
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            runs[k].append(fn())
    return {k: summary(v) for k, v in runs.items()}


def best_of(reps: int, fn: Callable[[], dict[str, float]]) -> dict[str, Any]:
    runs = [fn() for _ in range(reps)]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "mb_s": best["bytes"] / MIB / best["seconds"], "runs_s": [round(r["seconds"], 3) for r in runs]}


def start_nginx(prefix: Path, sendfile: bool = True) -> h.Server:
    port = h.free_port()
    conf = prefix / "nginx.conf"
    # as root, nginx's workers would switch to 'nobody', who may not read bench/.data: keep our own user
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, user=user, sendfile="on" if sendfile else "off"))
    return h.start_server(f"nginx-{port}", ["nginx", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
                          port, ready_path="/")


def start_netdelay(target: h.Server, rtt_ms: float) -> h.Server:
    """bench/netdelay.py in front of ``target``: every exchange through it costs ``rtt_ms`` more."""
    port = h.free_port()
    cmd = [sys.executable, "-m", "bench.netdelay", "--listen", str(port), "--to", f"127.0.0.1:{target.port}",
           "--rtt-ms", str(rtt_ms)]
    return h.start_server(f"netdelay-{port}", cmd, port, ready_path="/v2/")


def range_check(url: str, token: str, archive: Path) -> dict[str, Any]:
    size = archive.stat().st_size
    start = size // 2 + 12345 if size > 30000 else size // 2
    with open(archive, "rb") as f:
        f.seek(start)
        want = hashlib.sha256(f.read()).hexdigest()
    got = hashlib.sha256()
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}", "Range": f"bytes={start}-"},
                      timeout=600) as r:
        status, cr = r.status_code, r.headers.get("content-range")
        for chunk in r.iter_bytes():
            got.update(chunk)
    ok = status == 206 and got.hexdigest() == want and cr == f"bytes {start}-{size - 1}/{size}"
    return {"from": start, "status": status, "content_range": cr, "equal": ok}


def pg_copy(ds: h.Dataset, reps: int) -> dict[str, Any]:
    """The record bytes of the data set's store as PostgreSQL hands them out at best, best of ``reps``: psql's
    binary COPY to /dev/null (wall and psql's CPU) and asyncpg's copy_from_query into a sink that drops them."""
    import asyncio

    import asyncpg

    schema = ds.backend.schema
    sql = (f"SELECT c.data FROM {schema}.records r JOIN {schema}.blob_chunks c ON c.blob_id = r.blob_id "
           f"WHERE r.store_id = '{ds.store_id}' ORDER BY r.key, c.seq")
    size = int(subprocess.run(["psql", h.PG_URL, "-tAqc", f"SELECT sum(octet_length(data)) FROM ({sql}) s"],
                              capture_output=True, text=True, check=True).stdout)

    def psql() -> dict[str, float]:
        c0 = os.times()  # psql's CPU: this process's children's
        t0 = time.perf_counter()
        subprocess.run(["psql", h.PG_URL, "-qc", f"\\copy ({sql}) TO '/dev/null' WITH (FORMAT binary)"],
                       check=True, capture_output=True)
        dt = time.perf_counter() - t0
        c1 = os.times()
        return {"seconds": dt, "bytes": size, "client_cpu_s": (c1.children_user + c1.children_system)
                - (c0.children_user + c0.children_system)}

    async def with_asyncpg() -> dict[str, float]:
        conn = await asyncpg.connect(h.PG_URL)
        try:
            got = 0

            async def sink(data: bytes) -> None:
                nonlocal got
                got += len(data)

            t0 = time.perf_counter()
            await conn.copy_from_query(sql, output=sink, format="binary")
            return {"seconds": time.perf_counter() - t0, "bytes": size, "copy_bytes": got}
        finally:
            await conn.close()

    return {"psql": best_of(reps, psql), "asyncpg": best_of(reps, lambda: asyncio.run(with_asyncpg()))}


def one_by_one(server: h.Server, ds: h.Dataset, sample: int) -> dict[str, Any]:
    from apify_client import ApifyClient

    kvs = ApifyClient(ds.token, api_url=server.url).key_value_store(ds.store_id)
    n = min(sample, ds.count)
    step = ds.count / n
    keys = [f"k{int(i * step):08d}" for i in range(n)]
    total = 0
    t0 = time.perf_counter()
    for key in keys:
        rec = kvs.get_record_as_bytes(key)
        assert rec is not None
        total += len(rec["value"])
    dt = time.perf_counter() - t0
    return {"fetched": n, "of": ds.count, "seconds": dt, "estimated_all_s": dt * ds.count / n,
            "extrapolated": n < ds.count, "bytes": total}


def bench_set(kind: str, ds: h.Dataset, label: str, reps: int, tmp: Path, *, do_zip: bool, obo: int) -> dict:
    res: dict[str, Any] = {"backend": kind, "set": label, "records": ds.count}
    prefix = tmp / f"{kind}-{label}"
    (prefix / "www").mkdir(parents=True)
    archive = prefix / "www" / "a.zip"
    try:
        with h.running(ds.backend.start) as (srv,):
            url = f"{srv.url}/v2/key-value-stores/{ds.store_id}/records"
            with h.RssSampler(srv.pid) as rss:  # VmRSS before the first download, peak over all of them
                # the first run also saves the archive that nginx serves and zip -0 rebuilds
                runs = iter([str(archive)] + ["/dev/null"] * (reps - 1))
                okv = best_of(reps, lambda: curl(url, ds.token, next(runs)))
                first = {"seconds": okv["runs_s"][0]}
            res["openkvs"] = okv
            res["first_run_s"] = first["seconds"]
            res["rss_before_mib"] = rss.before / 1024
            res["rss_growth_mib"] = rss.growth_mib
            res["rss_anon_growth_mib"] = rss.anon_growth_mib
            res["range"] = range_check(url, ds.token, archive)
            if obo:
                res["one_by_one"] = one_by_one(srv, ds, obo)
                # the same two ways to get the records, each request and the archive through the delaying proxy
                with h.running(lambda: start_netdelay(srv, RTT_MS)) as (px,):
                    purl = f"{px.url}/v2/key-value-stores/{ds.store_id}/records"
                    res["rtt"] = {"rtt_ms": RTT_MS, "openkvs": best_of(reps, lambda: curl(purl, ds.token)),
                                  "one_by_one": one_by_one(px, ds, OBO_RTT_SAMPLE)}
                assert res["rtt"]["openkvs"]["bytes"] == okv["bytes"]
        # nginx as asked (sendfile on), and with sendfile off: on this VM sendfile is the slower of the two
        for key, sendfile in (("nginx", True), ("nginx_nosendfile", False)):
            with h.running(functools.partial(start_nginx, prefix, sendfile)) as (ngx,):
                curl(f"{ngx.url}/a.zip", None)  # warm-up, as openkvs had its first run
                ng = best_of(reps, lambda: curl(f"{ngx.url}/a.zip", None))
            assert ng["bytes"] == okv["bytes"] == archive.stat().st_size
            res[key] = ng
        if kind == "postgres":  # PostgreSQL's own speed for the same rows, right after
            res["pg_copy"] = pg_copy(ds, reps)
            res["ratio_vs_psql"] = okv["mb_s"] / res["pg_copy"]["psql"]["mb_s"]
        res["ratio_vs_nginx"] = okv["mb_s"] / res["nginx"]["mb_s"]
        res["ratio_vs_best_nginx"] = okv["mb_s"] / max(res["nginx"]["mb_s"], res["nginx_nosendfile"]["mb_s"])
        if do_zip:
            files = prefix / "files"
            subprocess.run(["unzip", "-q", str(archive), "-d", str(files)], check=True)
            archive.unlink()
            t0 = time.perf_counter()
            subprocess.run(["zip", "-0", "-q", "-r", str(prefix / "z.zip"), "."], cwd=files, check=True)
            zs = time.perf_counter() - t0
            res["zip0"] = {"seconds": zs, "bytes": (prefix / "z.zip").stat().st_size}
            res["ratio_vs_zip0"] = zs / okv["seconds"]  # > 1: openkvs is faster
        if obo:
            res["speedup_vs_one_by_one"] = res["one_by_one"]["estimated_all_s"] / okv["seconds"]
            rtt = res["rtt"]
            res["speedup_vs_one_by_one_rtt"] = rtt["one_by_one"]["estimated_all_s"] / rtt["openkvs"]["seconds"]
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    return res


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    n64 = 500 if quick else 2000
    n50 = 4 if quick else 20
    ntiny = 100_000 if quick else 1_000_000
    reps = 2 if quick else 5  # best of 5: single runs of the 50 MiB set moved by +-20% on this VM
    results: list[dict[str, Any]] = []
    h.DATA.mkdir(parents=True, exist_ok=True)  # (a fresh checkout has none yet)
    tmp = Path(tempfile.mkdtemp(prefix="zip-", dir=h.DATA))
    try:
        for kind in backends:
            sets = [
                ("64KiB", lambda kind=kind: h.dataset(kind, f"r64k-{n64}", n64, lambda i: random_body(64 * 1024)), True,
                 2000 if not quick else 200),
                ("50MiB", lambda kind=kind: h.dataset(kind, f"r50m-{n50}", n50, lambda i: random_body(50 * MIB), concurrency=2),
                 True, 0),
                ("100B", lambda kind=kind: tiny_dataset(kind, ntiny), False, 0),
            ]
            only = [x for x in os.environ.get("BENCH_SETS", "").split(",") if x]  # e.g. BENCH_SETS=100B
            for label, make, do_zip, obo in sets:
                if only and label not in only:
                    continue
                ds = make()
                h.log(f"download {kind} {label} x {ds.count}")
                # best of reps for every set, as nginx's (a million small records took minutes per download once,
                # so that set had one run: the first, which also writes the archive nginx serves to disk)
                results.append(bench_set(kind, ds, label, reps, tmp, do_zip=do_zip, obo=obo))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for r in results:
        o, n = r["openkvs"], r["nginx"]
        rows.append([r["backend"], f"{r['records']:,} x {r['set']}", o["bytes"] / MIB, o["mb_s"], n["mb_s"],
                     r["nginx_nosendfile"]["mb_s"], r["ratio_vs_nginx"], r["ratio_vs_best_nginx"], r.get("ratio_vs_zip0", "-"), r.get("speedup_vs_one_by_one", "-"),
                     r.get("speedup_vs_one_by_one_rtt", "-"),
                     o["ttfb_ms"], r["rss_growth_mib"], r["rss_anon_growth_mib"], "ok" if r["range"]["equal"] else "MISMATCH"])
    h.table("ZIP download (curl, best of runs). ratio nginx = openkvs MiB/s / nginx MiB/s (goal >= 0.8 at 50 MiB, "
            ">= 0.5 at 64 KiB; ratio best: vs the faster nginx config); zip -0 = zip time / openkvs time; 1-by-1 = apify_client time / openkvs time (goal >= 50)"
            f"; @{RTT_MS}ms RTT: the same, both through bench/netdelay.py adding a {RTT_MS} ms round trip",
            ["backend", "set", "MiB", "openkvs MiB/s", "nginx MiB/s", "nginx nosendfile", "ratio nginx", "ratio best", "vs zip -0", "vs 1-by-1",
             f"vs 1-by-1 @{RTT_MS}ms RTT", "TTFB ms", "RSS +MiB", "anon +MiB", "range"], rows)
    for r in results:
        if "one_by_one" in r:
            o = r["one_by_one"]
            print(f"  {r['backend']}: apify_client one by one fetched {o['fetched']} of {o['of']} records in "
                  f"{o['seconds']:.1f}s" + (f" (extrapolated to all: {o['estimated_all_s']:.1f}s)" if o["extrapolated"] else ""))
            t, o = r["rtt"], r["rtt"]["one_by_one"]
            each_ms = o["seconds"] / o["fetched"] * 1000
            print(f"  {r['backend']}: through a proxy adding a {t['rtt_ms']} ms RTT: apify_client one by one fetched "
                  f"{o['fetched']} of {o['of']} records in {o['seconds']:.1f}s ({each_ms:.1f} ms each; extrapolated "
                  f"to all: {o['estimated_all_s']:.1f}s); the ZIP in {t['openkvs']['seconds']:.3f}s "
                  f"({t['openkvs']['mb_s']:.0f} MiB/s through the proxy, {r['openkvs']['mb_s']:.0f} MiB/s direct)")
        if "pg_copy" in r:
            p, a = r["pg_copy"]["psql"], r["pg_copy"]["asyncpg"]
            print(f"  {r['backend']} {r['set']}: PostgreSQL's own speed for the same rows (binary COPY, best of runs): "
                  f"psql to /dev/null {p['mb_s']:.1f} MiB/s (runs {p['runs_s']} s, psql CPU {p['client_cpu_s']:.2f} s), "
                  f"asyncpg copy_from_query {a['mb_s']:.1f} MiB/s (runs {a['runs_s']} s); openkvs / psql = "
                  f"{r['ratio_vs_psql']:.3f} (goal >= 0.8 where nginx's goal is out of PostgreSQL's reach)")
        print(f"  {r['backend']} {r['set']}: openkvs runs {r['openkvs']['runs_s']} s (the first also writes the "
              "archive to disk)")
        print(f"  {r['backend']} {r['set']}: Range from byte {r['range']['from']}: status {r['range']['status']}, "
              f"{r['range']['content_range']}, equal to the same slice of the full archive: {r['range']['equal']}")
    h.save("download", quick, results)
    return results
