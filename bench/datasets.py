"""Datasets (issue 13): push throughput and export speed, each against a baseline measured in the same run.

- Push: items/s for batches of 1, 100 and 1,000 items of ~500 bytes (one client, sequential requests, a
  keep-alive connection), against the same body bytes PUT as one key-value store record (the storage's own write
  speed; counted as items/s of the same items). Goal: the 1,000-item batch at >= 0.5 of the record.
- Export of ITEMS items (~500 B each; 1,000,000 in a full run) as ``jsonl`` and ``csv``: MiB/s against nginx
  serving the identical output bytes as a static file (saved from the first export), the two downloaded in turns
  (ROUNDS each) by the same reader (``download.fetch``: 1 MiB reads, bytes dropped), best and median of each, and
  the servers' CPU seconds per download. Goals: >= 0.3 for jsonl, >= 0.1 for csv. Peak RSS growth of the server
  during the first export of each format.
- The database engine's own floor for the jsonl export, in the same minutes: SQLite's ``sqlite3`` CLI printing the
  same rows (its output is the export's bytes exactly; checked), PostgreSQL's ``psql`` binary COPY of the same rows,
  both to /dev/null; and openkvs's own storage read of the export (``ItemSnapshot.joined``, in process, no HTTP).
  The export's ratio to each: how much of the engine's speed the HTTP export keeps.
- Time to first byte (curl's time_starttransfer) for every format, at offset 0, at the middle, and with desc.
- The same items fetched with apify-client's ``iterate_items`` (what users do today), items/s.

The big dataset is made fast: 1,000 items pushed through the storage API (the push path itself: encoding, the
path index), then copied inside the database, doubling, until ITEMS (identical blocks, so the same path index per
block as pushes would make). Its size: ``BENCH_DS_ITEMS`` (default 1,000,000; quick 100,000).
``BENCH_DS_BIG=10000000``: also the first-byte times and the RSS growth of a whole jsonl export on a dataset of
that many items (SQLite, and PostgreSQL unless ``--backends`` leaves it out).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import harness as h
from bench.download import MIB, best_of, curl, fetch, interleaved, start_nginx

FORMATS = ("json", "jsonl", "csv", "html", "xlsx", "xml", "rss")
# Downloads of each export and of nginx's copy, in turns (quick run, full run): nginx's best of 3 moved 0.16-0.33 s
# at load 0 (the lead's run, BENCHMARKS.md), so a ratio of best runs alone passed or failed with the denominator.
ROUNDS = {True: {"jsonl": 3, "csv": 3}, False: {"jsonl": 12, "csv": 8}}


def item(i: int) -> dict[str, Any]:
    """~500 bytes of JSON, a realistic scraped shape (nested object, array)."""
    return {
        "url": f"https://shop.example.com/products/{i:09d}",
        "title": f"Product number {i} with a reasonably long descriptive title",
        "price": round(10 + (i % 997) * 0.37, 2),
        "inStock": i % 3 != 0,
        "shop": {"city": "Prague", "street": "Vodickova 123", "zip": "11000"},
        "tags": ["alpha", "beta", "gamma"],
        "description": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud.",
        "#debug": {"ms": i % 100},
    }


# -- the data set ----------------------------------------------------------------------------------------------


async def _seed(backend: h.Backend) -> tuple[str, str]:
    """A user with a token and a dataset holding items 0..999, pushed through the storage API."""
    from openkvs import auth
    from openkvs.api.items import merge_block, prepare_push
    from openkvs.storage.base import DATASET

    storage = backend.storage()
    await storage.open()
    try:
        user = await storage.get_user_by_name("bench") or await storage.create_user("bench")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        store, _ = await storage.get_or_create_store(user.id, "items", None, auth.new_signing_key(), kind=DATASET)
        await storage.datasets.push(store.id, prepare_push([item(i) for i in range(1000)], None), merge_block)
        return token, store.id
    finally:
        await storage.aclose()


def _double_sqlite(backend: h.Backend, store_id: str, count: int) -> None:
    import sqlite3

    conn = sqlite3.connect(backend.data_dir / "openkvs.sqlite3", isolation_level=None)
    try:
        n = 1000
        while n < count:
            add = min(n, count - n)
            conn.execute("BEGIN IMMEDIATE")
            # (whole rows: a row ends at the end of each 1,000-item push of the seed)
            conn.execute("INSERT INTO dataset_items(store_id, idx, n, data) SELECT store_id, idx + ?, n, data "
                         "FROM dataset_items WHERE store_id = ? AND idx < ?", (n, store_id, add))
            conn.execute("INSERT INTO dataset_paths(store_id, block, paths) SELECT store_id, block + ?, paths "
                         "FROM dataset_paths WHERE store_id = ? AND block < ?", (n // 1000, store_id, -(-add // 1000)))
            conn.execute("COMMIT")
            n += add
            h.log(f"  sqlite: {n} items")
        # (a row holds n items joined by newlines: the bytes counter is the items' own)
        conn.execute("UPDATE dataset_counts SET item_count = ?, clean_count = ?, bytes = "
                     "(SELECT sum(length(data) - n + 1) FROM dataset_items WHERE store_id = ?) WHERE store_id = ?",
                     (count, count, store_id, store_id))
    finally:
        conn.close()


def _double_postgres(backend: h.Backend, store_id: str, count: int) -> None:
    # (the items were one push of 1,000: its packed rows end at multiples of 1,000, so ``idx < add`` copies whole
    # rows, with their n; the largest item stays the push's)
    n = 1000
    while n < count:
        add = min(n, count - n)
        sql = f"""
        SET search_path = {backend.schema};
        INSERT INTO dataset_items (store_id, idx, n, data)
            SELECT store_id, idx + {n}, n, data FROM dataset_items WHERE store_id = '{store_id}' AND idx < {add};
        INSERT INTO dataset_paths (store_id, block, paths)
            SELECT store_id, block + {n // 1000}, paths FROM dataset_paths
            WHERE store_id = '{store_id}' AND block < {-(-add // 1000)};
        """
        subprocess.run(["psql", h.PG_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)
        n += add
        h.log(f"  postgres: {n} items")
    sql = f"""
    SET search_path = {backend.schema};
    UPDATE dataset_counts SET item_count = {count}, clean_count = {count},
        bytes = (SELECT sum(length(data) - (n - 1)) FROM dataset_items WHERE store_id = '{store_id}')
        WHERE store_id = '{store_id}';
    ANALYZE dataset_items;
    """
    subprocess.run(["psql", h.PG_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


def items_dataset(kind: str, count: int) -> h.Dataset:
    name = f"ds-items-{count}"
    backend = h.Backend(kind, name)
    if (m := backend.made(count)) is not None:
        return h.Dataset(backend, m["token"], m["store_id"], count, m)
    backend.drop()
    if kind == "postgres":
        h.PG_TOUCHED.add(name)
    t0 = time.monotonic()
    h.log(f"making {kind}/{name} ...")
    token, store_id = asyncio.run(_seed(backend))
    (_double_sqlite if kind == "sqlite" else _double_postgres)(backend, store_id, count)
    info = {"count": count, "token": token, "store_id": store_id, "fill_seconds": round(time.monotonic() - t0, 1)}
    h.DATA.mkdir(parents=True, exist_ok=True)
    backend.marker.write_text(json.dumps(info))
    return h.Dataset(backend, token, store_id, count, info)


# -- push ------------------------------------------------------------------------------------------------------


def _rate(seconds: float, batch: int, send: Any) -> tuple[float, int]:
    """Items per second of ``send(n)`` called back to back for ``seconds``, and the number of calls."""
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        send(n)
        n += 1
    return n * batch / (time.monotonic() - t0), n


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    import psutil  # type: ignore[import-untyped]  # psutil has no type hints; types-psutil is not in the lock

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def push_rates(srv: h.Server, token: str, quick: bool, seconds: float | None = None) -> list[dict[str, Any]]:
    """Items per second of pushes of 1, 100 and 1,000 items, and of the same bytes PUT as one record each, in
    turns (ROUNDS rounds of a push stretch then a PUT stretch, so that the machine's moods and the storage's
    checkpoints fall on both alike); the server's CPU per item of each. The dataset and the store are deleted
    after each batch size: a run leaves the data set as it found it (its pushes grew it by ~1 GB a run, and the
    ratio drifted down run after run)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    seconds = seconds or (3.0 if quick else 10.0)
    rounds = 2 if quick else 5
    out = []
    with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as c:
        for batch in (1, 100, 1000):
            body = json.dumps([item(i) for i in range(batch)], separators=(",", ":")).encode()
            name = f"push-{batch}-{time.time_ns()}"
            ds = f"/v2/datasets/{c.post('/v2/datasets', params={'name': name}).json()['data']['id']}"
            kvs = f"/v2/key-value-stores/{c.post('/v2/key-value-stores', params={'name': name}).json()['data']['id']}"
            keys = itertools.count()

            def push(n: int, url: str = f"{ds}/items", body: bytes = body) -> None:
                r = c.post(url, content=body)
                assert r.status_code == 201, r.text

            def put(n: int, kvs: str = kvs, body: bytes = body, keys: Any = keys) -> None:
                r = c.put(f"{kvs}/records/k{next(keys)}", content=body)
                assert r.status_code in (200, 201), r.text

            # the server's CPU per item too: on a shared machine the steadier measure
            took = {"push": [0.0, 0, 0.0], "put": [0.0, 0, 0.0]}  # seconds, calls, CPU seconds
            for _ in range(rounds):
                for side, send in (("push", push), ("put", put)):
                    cpu0, t0 = _cpu(srv.pid), time.monotonic()
                    _, calls = _rate(seconds / rounds, batch, send)
                    took[side][0] += time.monotonic() - t0
                    took[side][1] += calls
                    took[side][2] += _cpu(srv.pid) - cpu0
            c.delete(ds)
            c.delete(kvs)
            (push_s, pushes, push_cpu), (put_s, puts, put_cpu) = took["push"], took["put"]
            items_s, record_items_s = pushes * batch / push_s, puts * batch / put_s
            cpu_us, record_cpu_us = push_cpu / pushes / batch * 1e6, put_cpu / puts / batch * 1e6
            out.append({"batch": batch, "body_bytes": len(body), "rounds": rounds, "items_s": round(items_s),
                        "record_items_s": round(record_items_s), "ratio": round(items_s / record_items_s, 3),
                        "cpu_us_item": round(cpu_us, 2), "record_cpu_us_item": round(record_cpu_us, 2),
                        "cpu_ratio": round(record_cpu_us / cpu_us, 3)})
    return out


# -- export ----------------------------------------------------------------------------------------------------


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) so far of a server: its process and its children (nginx's worker)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(_cpu(p.pid) for p in [proc, *proc.children(recursive=True)])


def _with_server_cpu(pid: int, download: Callable[[], dict[str, float]]) -> dict[str, float]:
    c0 = _server_cpu(pid)
    got = download()
    return {**got, "server_cpu_s": _server_cpu(pid) - c0}


def export_rates(srv: h.Server, ds: h.Dataset, prefix: Path, quick: bool) -> dict[str, Any]:
    """Each format exported once (saved for nginx, RSS sampled), then openkvs and nginx serving those bytes
    downloaded in turns, ROUNDS times each, by the same reader (download.fetch); and curl from nginx in the same
    turns, the reader of earlier runs. Ratios of the best runs and of the medians."""
    url = f"{srv.url}/v2/datasets/{ds.store_id}/items"
    (prefix / "www").mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for fmt in ("jsonl", "csv"):
        saved = prefix / "www" / f"items.{fmt}"
        with h.RssSampler(srv.pid) as rss:
            first = fetch(f"{url}?format={fmt}", ds.token, str(saved))
        results[fmt] = {"bytes": first["bytes"], "rss_growth_mib": round(rss.growth_mib, 1),
                        "rss_anon_growth_mib": round(rss.anon_growth_mib, 1)}
    with h.running(lambda: start_nginx(prefix)) as (ngx,):
        for fmt in ("jsonl", "csv"):
            ours, theirs = f"{url}?format={fmt}", f"{ngx.url}/items.{fmt}"
            fetch(theirs, None)  # nginx's warm-up, as openkvs had its first export
            r = results[fmt]
            r.update(interleaved(ROUNDS[quick][fmt], {
                "openkvs": functools.partial(_with_server_cpu, srv.pid, functools.partial(fetch, ours, ds.token)),
                "nginx": functools.partial(_with_server_cpu, ngx.pid, functools.partial(fetch, theirs, None)),
                "nginx_curl": functools.partial(curl, theirs, None),
            }))
            assert r["openkvs"]["bytes"] == r["nginx"]["bytes"] == r["nginx_curl"]["bytes"] == r["bytes"]
            r["ratio"] = round(r["openkvs"]["mb_s"] / r["nginx"]["mb_s"], 3)
            r["ratio_median"] = round(r["openkvs"]["median_mb_s"] / r["nginx"]["median_mb_s"], 3)
    # the engine's own floor and openkvs's storage read right after, in the same minutes
    reps = 1 if quick else 3
    r = results["jsonl"]
    r["engine"] = engine_floor(ds, r["bytes"], reps)
    r["storage_read"] = storage_read(ds, reps)
    r["ratio_vs_engine"] = round(r["openkvs"]["mb_s"] / r["engine"]["mb_s"], 3)
    r["ratio_vs_storage_read"] = round(r["openkvs"]["mb_s"] / r["storage_read"]["mb_s"], 3)
    return results


_ROWS_SQL = "SELECT data FROM {table} WHERE store_id = '{store_id}' ORDER BY idx"


def _timed(cmd: list[str], count_bytes: bool = False) -> dict[str, float]:
    """Wall seconds and the command's CPU (its own and its children's) of ``cmd`` with stdout to /dev/null (or
    counted, ``count_bytes``)."""
    c0 = os.times()
    t0 = time.perf_counter()
    if count_bytes:
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
        size = len(out)
    else:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        size = 0
    dt = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    return {"seconds": dt, "cpu_s": cpu, "bytes": size}


def engine_floor(ds: h.Dataset, size: int, reps: int) -> dict[str, Any]:
    """The database engine's own speed for the rows of the jsonl export (best of ``reps``): SQLite's CLI printing
    them (the export's bytes exactly: the first run counts them) or psql's binary COPY of them, to /dev/null."""
    if ds.backend.kind == "sqlite":
        db = str(ds.backend.data_dir / "openkvs.sqlite3")
        cmd = ["sqlite3", "-readonly", db, _ROWS_SQL.format(table="dataset_items", store_id=ds.store_id)]
        printed = _timed(cmd, count_bytes=True)["bytes"]
        if printed != size:
            raise RuntimeError(f"the sqlite3 CLI printed {printed} bytes, the export {size}")
        tool = "sqlite3 CLI"
    else:
        sql = _ROWS_SQL.format(table=f"{ds.backend.schema}.dataset_items", store_id=ds.store_id)
        cmd = ["psql", h.PG_URL, "-qc", f"\\copy ({sql}) TO '/dev/null' WITH (FORMAT binary)"]
        tool = "psql binary COPY"
    best = best_of(reps, lambda: {**_timed(cmd), "bytes": size})
    return {"tool": tool, **best}


def storage_read(ds: h.Dataset, reps: int) -> dict[str, Any]:
    """openkvs's own read of the jsonl export's pieces (``ItemSnapshot.joined`` as the export calls it), in
    process, no HTTP: each piece and its separator written to /dev/null (best of ``reps``; CPU of this process)."""
    from openkvs.api.items import EXPORT_BATCH, RAW_PIECE

    async def once() -> dict[str, float]:
        storage = ds.backend.storage()
        await storage.open()
        try:
            with open(os.devnull, "wb", buffering=0) as sink:
                c0, t0 = time.process_time(), time.perf_counter()
                size = 0
                async with storage.datasets.snapshot(ds.store_id) as snap:
                    async for piece in snap.joined(0, snap.info.item_count, batch=EXPORT_BATCH, size=RAW_PIECE):
                        sink.write(piece)
                        sink.write(b"\n")
                        size += len(piece) + 1
                return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "bytes": size}
        finally:
            await storage.aclose()

    return best_of(reps, lambda: asyncio.run(once()))


def first_bytes(srv: h.Server, ds: h.Dataset) -> list[dict[str, Any]]:
    """Seconds from sending the request to the first body byte, a new connection each (closed after that byte:
    the server stops the export)."""
    url = f"{srv.url}/v2/datasets/{ds.store_id}/items"
    rows = []
    for fmt in FORMATS:
        for label, params in (("start", {}), ("middle", {"offset": ds.count // 2}), ("desc", {"desc": 1})):
            with httpx.Client(headers={"Authorization": f"Bearer {ds.token}"}, timeout=60) as c:
                t0 = time.monotonic()
                with c.stream("GET", url, params={"format": fmt, **params}) as r:
                    next(r.iter_raw(1))
                    ms = (time.monotonic() - t0) * 1000
                rows.append({"format": fmt, "where": label, "ttfb_ms": round(ms, 1), "status": r.status_code})
    return rows


def iterate_with_client(srv: h.Server, ds: h.Dataset, limit: int) -> dict[str, Any]:
    from apify_client import ApifyClient

    client = ApifyClient(ds.token, api_url=srv.url, max_retries=1)
    t0 = time.monotonic()
    n = sum(1 for _ in client.dataset(ds.store_id).iterate_items(limit=limit))
    seconds = time.monotonic() - t0
    t0 = time.monotonic()
    got = curl(f"{srv.url}/v2/datasets/{ds.store_id}/items?format=json&limit={limit}", ds.token)
    return {"items": n, "iterate_items_s": round(n / seconds), "export_items_s": round(limit / got["seconds"]),
            "ratio": round((limit / got["seconds"]) / (n / seconds), 2)}


def run(backends: list[str], quick: bool) -> None:
    count = int(os.environ.get("BENCH_DS_ITEMS", 100_000 if quick else 1_000_000))
    results: dict[str, Any] = {"items": count}
    for kind in backends:
        ds = items_dataset(kind, count)
        prefix = h.DATA / f"ds-nginx-{kind}"
        with h.running(ds.backend.start) as (srv,):
            r: dict[str, Any] = {"fill_seconds": ds.info.get("fill_seconds")}
            r["push"] = push_rates(srv, ds.token, quick)
            h.table(f"push ({kind}): items/s, one client; server CPU us/item",
                    ["batch", "items/s", "as a record", "ratio", "CPU us/item", "as a record", "CPU ratio"],
                    [[p["batch"], p["items_s"], p["record_items_s"], p["ratio"], p["cpu_us_item"],
                      p["record_cpu_us_item"], p["cpu_ratio"]] for p in r["push"]])
            r["export"] = export_rates(srv, ds, prefix, quick)
            h.table(f"export of {count} items ({kind}), downloads in turns, the same reader: MiB/s best and median; "
                    "CPU s medians", ["format", "runs", "openkvs", "median", "nginx", "median", "ratio", "median",
                                      "nginx by curl", "median", "server CPU", "nginx CPU", "reader CPU",
                                      "RSS +MiB"],
                    [[f, len(e["openkvs"]["runs_s"]), e["openkvs"]["mb_s"], e["openkvs"]["median_mb_s"],
                      e["nginx"]["mb_s"], e["nginx"]["median_mb_s"], e["ratio"], e["ratio_median"],
                      e["nginx_curl"]["mb_s"], e["nginx_curl"]["median_mb_s"], e["openkvs"]["server_cpu_s"],
                      e["nginx"]["server_cpu_s"], e["nginx"]["reader_cpu_s"], e["rss_growth_mib"]]
                     for f, e in r["export"].items()])
            j = r["export"]["jsonl"]
            h.table(f"jsonl export of {count} items ({kind}) against the engine's own read of the same rows: MB/s",
                    ["openkvs", j["engine"]["tool"], "ratio", "CPU s", "storage read", "ratio", "CPU s"],
                    [[j["openkvs"]["mb_s"], j["engine"]["mb_s"], j["ratio_vs_engine"], j["engine"]["cpu_s"],
                      j["storage_read"]["mb_s"], j["ratio_vs_storage_read"], j["storage_read"]["cpu_s"]]])
            r["first_byte"] = first_bytes(srv, ds)
            h.table(f"first byte ({kind}, {count} items): ms", ["format", "where", "ms", "status"],
                    [[x["format"], x["where"], x["ttfb_ms"], x["status"]] for x in r["first_byte"]])
            r["iterate"] = iterate_with_client(srv, ds, min(count, 100_000))
            h.table(f"iterate_items vs one export ({kind})", ["items", "iterate items/s", "export items/s", "ratio"],
                    [[r["iterate"]["items"], r["iterate"]["iterate_items_s"], r["iterate"]["export_items_s"],
                      r["iterate"]["ratio"]]])
        big = int(os.environ.get("BENCH_DS_BIG", 0))
        if big:
            bds = items_dataset(kind, big)
            with h.running(bds.backend.start) as (srv,):
                r["big"] = {"items": big, "first_byte": first_bytes(srv, bds)}
                h.table(f"first byte ({kind}, {big} items): ms", ["format", "where", "ms", "status"],
                        [[x["format"], x["where"], x["ttfb_ms"], x["status"]] for x in r["big"]["first_byte"]])
                url = f"{srv.url}/v2/datasets/{bds.store_id}/items?format=jsonl"
                with h.RssSampler(srv.pid) as rss:
                    whole = curl(url, bds.token)
                r["big"]["jsonl"] = {**whole, "mb_s": whole["bytes"] / MIB / whole["seconds"],
                                     "rss_growth_mib": round(rss.growth_mib, 1),
                                     "rss_anon_growth_mib": round(rss.anon_growth_mib, 1)}
                h.table(f"whole jsonl export ({kind}, {big} items)", ["GB", "s", "MB/s", "RSS +MiB", "RssAnon +MiB"],
                        [[whole["bytes"] / 1e9, whole["seconds"], r["big"]["jsonl"]["mb_s"],
                          r["big"]["jsonl"]["rss_growth_mib"], r["big"]["jsonl"]["rss_anon_growth_mib"]]])
        results[kind] = r
    h.save("datasets", quick, results)
