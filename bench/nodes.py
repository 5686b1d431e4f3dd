"""Two openkvs processes on one PostgreSQL database (same schema) against one, small-record GET and PUT
requests/second with wrk. One node: one wrk (-t2 -c32). Two nodes: two wrk runs at once, one per node, each
with half the threads and connections (-t1 -c16), summed: the same total load generator and concurrency, so
the ratio is two nodes / one node. On this 2-core machine both nodes and wrk share the same two cores, so the
number says what a second process costs or gains when CPU is already the limit, not what a second machine
would add."""

from __future__ import annotations

from typing import Any

from bench import harness as h
from bench.records import NKEYS, RECORD


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    if "postgres" not in backends:
        h.log("nodes: needs PostgreSQL (--backends ...,postgres); skipped")
        return []
    seconds = 4 if quick else 10
    ds = h.dataset("postgres", "nodes1k", NKEYS, lambda i: h.Body(RECORD))
    base = f"/v2/key-value-stores/{ds.store_id}/records/"
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    with h.running(ds.backend.start, ds.backend.start) as (a, b):
        for method in ("GET", "PUT"):
            s1 = h.wrk_script(method, base, ds.token, NKEYS, len(RECORD), seed=1)
            s2 = h.wrk_script(method, base, ds.token, NKEYS, len(RECORD), seed=2)
            for srv in (a, b):  # warm-up (connections, pools, the token cache)
                h.wrk(srv.url, s1, 1, 16, 2)
            # one node (the other is idle)
            one = h.wrk(a.url, s1, 2, 32, seconds)
            # two nodes at once
            pa = h.wrk_start(a.url, s1, 1, 16, seconds)
            pb = h.wrk_start(b.url, s2, 1, 16, seconds)
            ra, rb = h.wrk_finish(pa), h.wrk_finish(pb)
            two = ra.rps + rb.rps
            errors = ra.errors + rb.errors
            results.append({"method": method, "one": one.as_dict(), "two": [ra.as_dict(), rb.as_dict()],
                            "two_sum_rps": two, "ratio": two / one.rps})
            rows.append([method, one.rps, ra.rps, rb.rps, two, two / one.rps, one.errors + errors])
    h.table(f"Two openkvs nodes on one PostgreSQL schema vs one (1 KiB records, wrk {seconds}s; ratio = two/one)",
            ["method", "one node rps", "node A rps", "node B rps", "two nodes rps", "ratio", "errors"], rows)
    h.save("nodes", quick, results)
    return results
