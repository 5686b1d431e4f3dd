"""What the rate limiter costs a server: 1 KiB record GET requests/s with limits off, on in memory, and on through
Redis, in the same run on the same data (the limits set far above the load, so every request is checked and none
is refused). Ratio: on/off."""

from __future__ import annotations

from typing import Any

from bench import harness as h
from bench.records import NKEYS, RECORD

REDIS_URL = "redis://127.0.0.1:6379/0"
HIGH_LIMITS = [
    "--rate-limit-user-per-minute", "1000000000",
    "--rate-limit-store-per-second", "10000000",
    "--rate-limit-records-per-second", "10000000",
]


def _starter(backend: h.Backend, *flags: str) -> Any:
    def start() -> h.Server:
        port = h.free_port()
        cmd, env = backend.serve_cmd(port)
        cmd = [c for c in cmd if c not in ("--rate-limits", "off")] + list(flags)  # serve_cmd turns limits off
        return h.start_server(f"openkvs-limits-{port}", cmd, port, env, "/v2/")

    return start


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    seconds = 4 if quick else 10
    reps = 1 if quick else 2
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    for kind in backends:
        ds = h.dataset(kind, "rec1k", NKEYS, lambda i: h.Body(RECORD))
        variants = {
            "off": _starter(ds.backend, "--rate-limits", "off"),
            "memory": _starter(ds.backend, "--rate-limits", "on", *HIGH_LIMITS),
            "redis": _starter(ds.backend, "--rate-limits", "on", "--redis-url", REDIS_URL, *HIGH_LIMITS),
        }
        with h.running(*variants.values()) as servers:
            script = h.wrk_script("GET", f"/v2/key-value-stores/{ds.store_id}/records/", ds.token, NKEYS, len(RECORD))
            for s in servers:
                h.wrk(s.url, script, 2, 32, 2)  # warm-up
            best: dict[str, h.WrkResult] = {}
            for _ in range(reps):  # alternate the three; keep each one's best
                for name, s in zip(variants, servers, strict=True):
                    r = h.wrk(s.url, script, 2, 32, seconds)
                    if name not in best or r.rps > best[name].rps:
                        best[name] = r
        off = best["off"].rps
        res = {"backend": kind, **{k: v.as_dict() for k, v in best.items()}}
        results.append(res)
        for name in ("memory", "redis"):
            rows.append([kind, name, best[name].rps, off, best[name].rps / off, best[name].errors])
    h.table("Rate limiter cost (1 KiB record GET, wrk; ratio = limits on / limits off, same run)",
            ["backend", "limiter", "on rps", "off rps", "ratio", "errors"], rows)
    h.save("ratelimits", quick, results)
    return results
