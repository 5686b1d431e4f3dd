"""Request queues (issue 14), both backends, through HTTP with rate limits off (harness.Backend.start):

- **Crawl protocol throughput** without fetching anything: ``N`` requests added in batches of 25, then taken with
  ``POST /head/lock?limit=25``, each read with ``GET /requests/{id}`` and marked handled with ``PUT /requests/{id}``:
  the calls the SDK's shared mode makes (API-request-queues.md section 11: head items lack ``userData``, so it
  reads each locked request), by 1, 4 and 16 clients at once (asyncio tasks in this process, each with its own
  clientKey, one httpx connection each); and with 4 clients without the GET (the protocol as measured before).
  Requests/s = N / wall time of the whole crawl; the server's CPU per crawled request (/proc) beside it.
  Baseline: the same protocol on Crawlee's own ``FileSystemStorageClient`` (``add_requests``,
  ``fetch_next_request``, ``mark_request_as_handled``: what users run today on one machine), one client.
  Goal: 4 clients on openkvs >= 1x the single local client.
- **Head lock latency** at 1,000 and at 1,000,000 pending requests: median of 200 sequential
  ``POST /head/lock?limit=1&lockSecs=600`` (each takes the next request), and again after 10,000 locks lapsed.
  Goal: 1M / 1k <= 2. The big queue is filled with SQL in the backend's own tables (like harness.clone_dataset):
  request IDs there are not derived from a uniqueKey, which the head does not look at.

N = 2,000 (``--quick``: 1,000, and 100,000 instead of 1,000,000 pending).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from typing import Any

import httpx

from bench import harness as h

LOCK = 600
# (label, clients, whether each locked request is read as the SDK does)
VARIANTS = [("clients_1", 1, True), ("clients_4", 4, True), ("clients_16", 16, True), ("clients_4_no_get", 4, False)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_user(backend: h.Backend) -> str:
    from openkvs import auth

    async def make() -> str:
        storage = backend.storage()
        await storage.open()
        try:
            user = await storage.get_user_by_name("bench") or await storage.create_user("bench")
            token = auth.new_token()
            await storage.add_token(user.id, auth.hash_token(token))
            return token
        finally:
            await storage.aclose()

    return asyncio.run(make())


async def crawl(url: str, token: str, clients: int, n: int, sdk: bool = True) -> float:
    """The add -> head/lock -> (get ->) mark handled protocol over ``n`` requests with ``clients`` clients;
    requests/s. ``sdk``: read each locked request before marking it, as the SDK's shared mode does."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        qid = (await c.post("/v2/request-queues")).json()["data"]["id"]
    base = f"/v2/request-queues/{qid}"
    reqs = [{"url": f"https://example.com/{i}", "uniqueKey": f"https://example.com/{i}"} for i in range(n)]
    handled = 0

    async def client(k: int) -> None:
        nonlocal handled
        key = f"bench-{k}"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                     limits=httpx.Limits(max_connections=1)) as c:
            mine = reqs[k::clients]
            for i in range(0, len(mine), 25):
                r = await c.post(f"{base}/requests/batch", params={"clientKey": key}, json=mine[i:i + 25])
                assert r.status_code == 201, r.text
            while True:
                r = await c.post(f"{base}/head/lock", params={"lockSecs": LOCK, "limit": 25, "clientKey": key})
                data = r.json()["data"]
                if not data["items"]:
                    if not data["queueHasLockedRequests"]:
                        return
                    await asyncio.sleep(0.01)
                    continue
                for item in data["items"]:
                    if sdk:
                        r = await c.get(f"{base}/requests/{item['id']}")
                        assert r.status_code == 200, r.text
                    body = {"id": item["id"], "url": item["url"], "uniqueKey": item["uniqueKey"],
                            "handledAt": "2026-12-01T00:00:00.000Z"}
                    r = await c.put(f"{base}/requests/{item['id']}", params={"clientKey": key}, json=body)
                    assert r.status_code == 200, r.text
                    handled += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    seconds = time.perf_counter() - t0
    assert handled == n, (handled, n)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        q = (await c.get(base)).json()["data"]
        assert (q["totalRequestCount"], q["handledRequestCount"]) == (n, n), q
    return n / seconds


async def crawl_local(n: int) -> float:
    """The same protocol on Crawlee's FileSystemStorageClient, one client."""
    from crawlee import Request
    from crawlee.configuration import Configuration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import RequestQueue

    with tempfile.TemporaryDirectory() as tmp:
        config = Configuration(storage_dir=tmp, purge_on_start=True)
        rq = await RequestQueue.open(name="bench", storage_client=FileSystemStorageClient(), configuration=config)
        t0 = time.perf_counter()
        for i in range(0, n, 25):
            await rq.add_requests([Request.from_url(f"https://example.com/{j}") for j in range(i, min(n, i + 25))])
        done = 0
        while (req := await rq.fetch_next_request()) is not None:
            await rq.mark_request_as_handled(req)
            done += 1
        seconds = time.perf_counter() - t0
        assert done == n, done
        await rq.drop()
    return n / seconds


def fill(backend: h.Backend, qid: str, count: int) -> None:
    """``count`` pending requests in queue ``qid``, back-placed in order, by SQL (see the module docstring)."""
    body = '{"uniqueKey":"u","url":"https://example.com/x","method":"GET","retryCount":0}'
    now = int(time.time() * 1000) - 1000
    if backend.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(backend.data_dir / "openkvs.sqlite3", isolation_level=None, timeout=60)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?) "
                "INSERT INTO queue_requests(queue_id, id, unique_key, url, method, retry_count, body, size, "
                "order_time, order_seq, lock_owner) SELECT ?, printf('r%014d', i), 'u' || i, 'https://example.com/x', "
                "'GET', 0, ?, length(?), ?, i, NULL FROM g",
                (count, qid, body, body, now),
            )
            conn.execute(
                "INSERT INTO queue_state(queue_id, total, handled, next_seq, first_client, had_multiple_clients) "
                "VALUES (?, ?, 0, ?, NULL, 0) ON CONFLICT(queue_id) DO UPDATE SET total = excluded.total, "
                "next_seq = excluded.next_seq", (qid, count, count + 1),
            )
            conn.execute("COMMIT")
            # The fill went through the WAL (hundreds of MiB for a million): copy it into the database now, or
            # the server's first commits would each pay for checkpointing it and the latency would measure that.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return
    sql = f"""
    SET search_path = {backend.schema};
    BEGIN;
    INSERT INTO queue_requests (queue_id, id, unique_key, url, method, retry_count, body, size, order_time,
                                order_seq, lock_owner)
    SELECT '{qid}', 'r' || lpad(g::text, 14, '0'), 'u' || g, 'https://example.com/x', 'GET', 0, '{body}',
           {len(body)}, {now}, g, NULL FROM generate_series(1, {count}) g;
    INSERT INTO queue_state (queue_id, total, handled, next_seq, first_client, had_multiple_clients)
    VALUES ('{qid}', {count}, 0, {count + 1}, NULL, false)
    ON CONFLICT (queue_id) DO UPDATE SET total = EXCLUDED.total, next_seq = EXCLUDED.next_seq;
    COMMIT;
    ANALYZE queue_requests;
    """
    subprocess.run(["psql", h.PG_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


def lock_latency(url: str, token: str, qid: str, times: int = 200) -> float:
    """Median seconds of ``POST /head/lock?limit=1`` over ``times`` sequential calls."""
    samples = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for _ in range(times):
            t0 = time.perf_counter()
            r = c.post(f"/v2/request-queues/{qid}/head/lock", params={"lockSecs": LOCK, "limit": 1,
                                                                      "clientKey": "lat"})
            samples.append(time.perf_counter() - t0)
            assert r.status_code == 201 and len(r.json()["data"]["items"]) == 1, r.text
    return statistics.median(samples)


def expire_locks(url: str, token: str, qid: str, count: int) -> None:
    """``count`` requests locked for 1 s, then left to lapse: they are back in the head, behind a lapsed lock."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for _ in range(count // 25):
            r = c.post(f"/v2/request-queues/{qid}/head/lock", params={"lockSecs": 1, "limit": 25, "clientKey": "x"})
            assert r.status_code == 201
    time.sleep(1.5)


def run(backends: list[str], quick: bool) -> list[dict[str, Any]]:
    """``BENCH_QUEUES_LATENCY=0`` in the environment: the crawl only, without the head/lock latency part."""
    import os

    n = 1000 if quick else 2000
    big = 100_000 if quick else 1_000_000
    latency = os.environ.get("BENCH_QUEUES_LATENCY", "1") != "0"
    results: list[dict[str, Any]] = []
    rows = []
    for kind in backends:
        # The local baseline around each backend's crawls, its best run kept (the machine's load moves)
        local = asyncio.run(crawl_local(n))
        h.log(f"crawlee FileSystemStorageClient, 1 client: {local:.0f} requests/s")
        backend = h.Backend(kind, f"queues-{int(time.time())}")
        backend.drop()
        token = new_user(backend)
        if kind == "postgres":
            h.PG_TOUCHED.add(backend.dataset)
        with h.running(backend.start) as (srv,):
            res: dict[str, Any] = {"backend": kind, "n": n}
            for label, clients, sdk in VARIANTS:
                before = cpu_seconds(srv.pid)
                rate = asyncio.run(crawl(srv.url, token, clients, n, sdk))
                cpu_us = (cpu_seconds(srv.pid) - before) / n * 1e6
                res[label] = round(rate, 1)
                res[f"{label}_server_cpu_us"] = round(cpu_us, 0)
                h.log(f"{kind}: {label}: {rate:.0f} requests/s ({rate / local:.2f}x local), "
                      f"server CPU {cpu_us:.0f} us per request")
            again = asyncio.run(crawl_local(n))
            h.log(f"crawlee FileSystemStorageClient, 1 client, again: {again:.0f} requests/s")
            local = max(local, again)
            res["local_fs_1_client"] = round(local, 1)
            if latency:
                res.update(head_lock_latency(backend, srv, token, big))
        backend.drop()
        results.append(res)
        rows.append([kind, f"{local:.0f}", *(f"{res[v]:.0f} ({res[v] / local:.2f}x, {res[f'{v}_server_cpu_us']:.0f} us)"
                                             for v, _, _ in VARIANTS),
                     *((f"{res['lock_ms_1k']:.2f}", f"{res[f'lock_ms_{big}']:.2f}", f"{res['lock_ratio']:.2f}",
                        f"{res['lock_ratio_lapsed']:.2f}") if latency else ())])
    h.table(f"request queues: crawl protocol requests/s (N={n}; ratio to the best local fs run, server CPU per "
            "request)" + (", head/lock latency (ms, median)" if latency else ""),
            ["backend", "local fs 1", *(v for v, _, _ in VARIANTS),
             *(("lock 1k", f"lock {big}", "ratio", "ratio after lapsed") if latency else ())], rows)
    h.save("queues", quick, results)
    print(json.dumps(results))
    return results


def head_lock_latency(backend: h.Backend, srv: h.Server, token: str, big: int) -> dict[str, Any]:
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        small_q = c.post("/v2/request-queues", params={"name": "lat-small"}).json()["data"]["id"]
        big_q = c.post("/v2/request-queues", params={"name": "lat-big"}).json()["data"]["id"]
    fill(backend, small_q, 1000 + 400)
    t0 = time.monotonic()
    fill(backend, big_q, big + 10_400)
    h.log(f"{backend.kind}: filled {big} pending requests in {time.monotonic() - t0:.0f}s")
    small = lock_latency(srv.url, token, small_q)
    large = lock_latency(srv.url, token, big_q)
    expire_locks(srv.url, token, big_q, 10_000)
    large_expired = lock_latency(srv.url, token, big_q)
    return {"lock_ms_1k": round(small * 1000, 2), f"lock_ms_{big}": round(large * 1000, 2),
            "lock_ms_big_after_10k_lapsed": round(large_expired * 1000, 2),
            "lock_ratio": round(large / small, 2), "lock_ratio_lapsed": round(large_expired / small, 2)}
