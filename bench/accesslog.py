"""What the access log and the metrics cost: 1 KiB record GET requests/s (wrk) with the log off
(``--log-level warning``), the default text log, the json log, and with both log and metrics off, in the same run
on the same data; ratio = log on / log off (goal >= 0.9, issue 17). The servers' standard output (the log) goes
to a file, as under systemd or Docker.

Also, without wrk and with much less noise on a shared machine: ``python -m bench.accesslog --cpu`` drives the
ASGI app in process (no sockets) and reports CPU microseconds per record GET for each variant
(``time.process_time`` over a few thousand requests, best of 5)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.records import NKEYS, RECORD

VARIANTS = {
    "log off": ["--log-level", "warning"],
    "text": ["--log-level", "info", "--log-format", "text"],
    "json": ["--log-level", "info", "--log-format", "json"],
    "log+metrics off": ["--log-level", "warning", "--metrics", "off"],
}


def _starter(backend: h.Backend, flags: list[str]) -> Any:
    def start() -> h.Server:
        port = h.free_port()
        cmd, env = backend.serve_cmd(port)
        i = cmd.index("--log-level")
        cmd = cmd[:i] + cmd[i + 2 :] + flags
        return h.start_server(f"openkvs-log-{port}", cmd, port, env, "/v2/")

    return start


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    seconds = 4 if quick else 10
    reps = 2 if quick else 3
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    for kind in backends:
        ds = h.dataset(kind, "rec1k", NKEYS, lambda i: h.Body(RECORD))
        with h.running(*(_starter(ds.backend, f) for f in VARIANTS.values())) as servers:
            script = h.wrk_script("GET", f"/v2/key-value-stores/{ds.store_id}/records/", ds.token, NKEYS, len(RECORD))
            for s in servers:
                h.wrk(s.url, script, 2, 16, 2)  # warm-up
            best: dict[str, h.WrkResult] = {}
            cpu: dict[str, float] = {}  # the server's CPU microseconds per request: less moved by the machine's load
            for _ in range(reps):  # alternate the variants (the machine's load moves); keep each one's best
                for name, s in zip(VARIANTS, servers, strict=True):
                    before = _cpu_seconds(s.pid)
                    r = h.wrk(s.url, script, 2, 16, seconds)
                    us = (_cpu_seconds(s.pid) - before) / max(r.requests, 1) * 1e6
                    cpu[name] = min(cpu.get(name, us), us)
                    if name not in best or r.rps > best[name].rps:
                        best[name] = r
        off = best["log off"].rps
        results.append({"backend": kind, **{k: {**v.as_dict(), "cpu_us": round(cpu[k], 1)} for k, v in best.items()}})
        for name in VARIANTS:
            rows.append([kind, name, best[name].rps, best[name].rps / off, cpu[name], cpu["log off"] / cpu[name],
                         best[name].errors])
    h.table("Access log cost (1 KiB record GET, wrk -c16; ratio = rps / rps with the log off, same run; CPU ratio = "
            "server CPU per request with the log off / this one's)",
            ["backend", "variant", "rps", "ratio", "CPU us/req", "CPU ratio", "errors"], rows)
    h.save("accesslog", quick, results)
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- in process: CPU per request ---------------------------------------------------------------------------------


def cpu_per_request(requests: int = 2000, rounds: int = 9) -> dict[str, float]:
    import asyncio
    import os
    import tempfile
    import time

    from openkvs import auth
    from openkvs.app import create_app
    from openkvs.config import Settings
    from openkvs.storage.sqlite import SQLiteStorage

    sink = open(os.devnull, "w")

    async def start(flags: dict[str, Any], storage: Any) -> tuple[Any, dict[str, Any], Any]:
        app = create_app(Settings.load({"rate_limits": "off", **flags}), storage)
        writer = getattr(app, "writer", None)
        if writer is not None:
            writer._write = sink.write  # same formatting and batching; the write itself goes to /dev/null
        state: dict[str, Any] = {}
        lifespan_in: asyncio.Queue[Any] = asyncio.Queue()
        lifespan_out: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state},
                                         lifespan_in.get, lifespan_out.put))
        await lifespan_in.put({"type": "lifespan.startup"})
        await lifespan_out.get()

        async def stop() -> None:
            await lifespan_in.put({"type": "lifespan.shutdown"})
            await lifespan_out.get()
            await task

        return app, state, stop

    async def measure(app: Any, state: dict[str, Any], store_id: str, token: str) -> float:
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            pass

        t0 = time.process_time()
        for i in range(requests):
            path = f"/v2/key-value-stores/{store_id}/records/k{i % 100}"
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                     "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                     "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555),
                     "server": ("127.0.0.1", 8000), "state": dict(state)}
            await app(scope, receive, send)
        return (time.process_time() - t0) / requests * 1e6

    async def main() -> dict[str, float]:
        d = tempfile.mkdtemp(prefix="bench-accesslog-")
        storage = SQLiteStorage(d, background=False)
        await storage.open()
        user = await storage.create_user("bench")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        store = await storage.create_store(user.id, "s", None, auth.new_signing_key())
        for i in range(100):
            await storage.put_record(store.id, f"k{i}", h.Body(RECORD), "application/octet-stream", None)
        variants = {
            "log off": {"log_level": "warning"},
            "text": {"log_level": "info", "log_format": "text"},
            "json": {"log_level": "info", "log_format": "json"},
            "log+metrics off": {"log_level": "warning", "metrics": "off"},
        }
        apps = {name: await start(flags, storage) for name, flags in variants.items()}
        out: dict[str, float] = {}
        for _ in range(rounds):  # the variants interleaved (the machine's load moves); each one's best round
            for name, (app, state, _) in apps.items():
                us = await measure(app, state, store.id, token)
                out[name] = min(out.get(name, us), us)
        for _, _, stop in apps.values():
            await stop()
        await storage.aclose()
        return out

    return asyncio.run(main())


if __name__ == "__main__":
    if "--cpu" in sys.argv:
        res = cpu_per_request()
        base = res["log off"]
        for name, us in res.items():
            print(f"{name:16} {us:7.1f} us CPU per record GET   ({us / base:.3f} x log off)")
