"""Record GET (or, with --method PUT, PUT) only, bare and openkvs back to back (and optionally another checkout's openkvs on the same data):
`records.py`'s GET measurement without its PUT and keys-page parts, repeated, with the server's CPU per request
(from /proc/PID/stat), which moves less with other people's load than requests/s do.

    .venv/bin/python -m bench.get_ab --backends sqlite,postgres --reps 3 --seconds 5 [--other /path/to/checkout]

`--other` (repeatable): that checkout's code serves the same data set (run with this venv's Python, from its directory),
e.g. main, for a before/after in the same minutes.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench import harness as h
from bench.records import NKEYS, RECORD, start_bare

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU so far (the system part is where a response's send() calls go)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def wrk_errors(raw: str) -> str:
    """wrk's lines about errors (socket errors by kind, non-2xx responses)."""
    return "; ".join(
        line.strip() for line in raw.splitlines() if "Socket errors" in line or "Non-2xx" in line
    )


def start_other(tree: str, backend: h.Backend, defaults: bool = False) -> h.Server:
    port = h.free_port()
    cmd, env = backend.serve_cmd(port, defaults)
    cmd = [sys.executable, "-m", "openkvs", *cmd[1:]]
    (h.DATA / "logs").mkdir(parents=True, exist_ok=True)
    logfile = h.DATA / "logs" / f"other-{port}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=tree)
    server = h.Server(f"other-{port}", port, proc, logfile)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(logfile.read_text()[-2000:])
        try:
            httpx.get(server.url + "/v2/", timeout=1.0)
            return server
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.1)


def start_bare_ours(tree: str = str(h.REPO)) -> h.Server:
    """The bare app served through openkvs/server.py's HttpProtocol (as ``openkvs serve`` serves openkvs), not
    uvicorn's own: what our protocol's checks cost per request, apart from the app. ``tree``: whose server.py."""
    port = h.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port), "--log-level", h.LOG_LEVEL,
           "--no-server-header", "--no-proxy-headers", "--timeout-graceful-shutdown", "5", "--no-access-log",
           "--http", "openkvs.server:HttpProtocol", "--app-dir", tree]
    return h.start_server(f"bare-ours-{port}", cmd, port, ready_path="/v2/key-value-stores/x/records/k00000000")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="sqlite")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--other", action="append", default=[], help="another checkout (repeatable)")
    p.add_argument("--method", default="GET", choices=("GET", "PUT"), help="PUT: 1 KiB bodies to the same keys")
    p.add_argument("--defaults", action="store_true",
                   help="openkvs with the settings users run (access log, rate limits: bench/harness.py)")
    p.add_argument("--bare-ours", action="store_true",
                   help="also the bare app served through openkvs/server.py's HttpProtocol (each checkout's)")
    p.add_argument("--conns", type=int, default=32, help="wrk connections (1: a single client's latency)")
    args = p.parse_args()
    for kind in args.backends.split(","):
        ds = h.dataset(kind, "perfrec1k", NKEYS, lambda i: h.Body(RECORD))
        factories: list[Callable[[], h.Server]] = [
            start_bare, functools.partial(ds.backend.start, defaults=args.defaults)
        ]
        factories += [functools.partial(start_other, tree, ds.backend, args.defaults) for tree in args.other]
        if args.bare_ours:  # through this checkout's server.py, and each other one's
            factories += [functools.partial(start_bare_ours, tree) for tree in [str(h.REPO), *args.other]]
        with h.running(*factories) as servers:
            names = ["bare", "openkvs", *(Path(t).name for t in args.other)]
            if args.bare_ours:
                names += ["bare-ours", *(f"bare-{Path(t).name}" for t in args.other)]
            scripts = {
                "bare": h.wrk_script(args.method, "/v2/key-value-stores/x/records/", "x", NKEYS, len(RECORD),
                                     seed=2),
                "openkvs": h.wrk_script(args.method, f"/v2/key-value-stores/{ds.store_id}/records/", ds.token, NKEYS,
                                        len(RECORD)),
            }
            for name in names[2:]:
                scripts[name] = scripts["bare" if name.startswith("bare-") else "openkvs"]
            for name, srv in zip(names, servers, strict=True):
                h.wrk(srv.url, scripts[name], min(2, args.conns), args.conns, 2)  # warm-up
            for rep in range(args.reps):
                res = {}
                for name, srv in zip(names, servers, strict=True):
                    u0, s0 = cpu_seconds(srv.pid)
                    r = h.wrk(srv.url, scripts[name], min(2, args.conns), args.conns, args.seconds)
                    u1, s1 = cpu_seconds(srv.pid)
                    cpu = (u1 - u0 + s1 - s0) / max(r.requests, 1) * 1e6
                    res[name] = (r.rps, cpu, (s1 - s0) / max(r.requests, 1) * 1e6, r.errors)
                    if r.errors:  # a timeout on a loaded machine, say: shown with the numbers, the run goes on
                        print(f"  {name}: {r.errors} errors: {wrk_errors(r.raw)}", flush=True)
                line = "  ".join(
                    f"{n} {rps:,.0f} req/s {cpu:.0f} us CPU/req ({system:.0f} sys)"
                    + (f" ({errs} errors)" if errs else "")
                    for n, (rps, cpu, system, errs) in res.items()
                )
                ratios = "  ".join(f"{n}/bare {res[n][0] / res['bare'][0]:.2f}" for n in names[1:])
                print(f"{kind} {args.method} -c{args.conns} rep {rep + 1}: {line}  |  {ratios}", flush=True)


if __name__ == "__main__":
    main()
