"""Record bytes in an S3 bucket (issue 18), against the same S3 server read and written directly, in one run.

Needs PostgreSQL and an S3 server: ``deploy/s3-swift.sh start`` (Swift + s3api on 127.0.0.1:7480; or set
``BENCH_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``).

- ZIP download (``GET /records``, curl to /dev/null, best of 3) of 20 x 50 MiB and 2,000 x 64 KiB random records
  whose bytes are objects in the bucket (``--blob-inline-max 0``), against the same objects fetched straight from
  the same S3 server with the same client library (openkvs.storage.bucket.s3) and the same parallelism: 50 MiB
  objects one at a time (the ZIP streams them in order), 64 KiB objects 16 at a time (the snapshot's read-ahead,
  bucket/prefetch.py). Goals: >= 0.7 and >= 0.5. And against today's bytes in PostgreSQL, same data: faster.
- PUT of 50 MiB records through openkvs (one at a time, from memory, httpx) against a direct multipart upload of
  the same bytes (the same S3BlobStore.upload, 8 MiB parts, one at a time). Goal: >= 0.7.

``python -m bench bucket [--quick]`` (quick: 4 x 50 MiB and 400 x 64 KiB).

Memory (``python -m bench.bucket --memory [--quick]``): the server's peak RSS growth (VmRSS, and RssAnon) while
it takes PUTs of 20 x 50 MiB records and while it sends their ZIP, with the bytes in the bucket and the metadata in
PostgreSQL, then in SQLite (``--data-dir``). Goal: < 100 MiB growth each.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from typing import Any

import httpx

from bench import harness as h

MIB = 1024 * 1024
S3_ENDPOINT = os.environ.get("BENCH_S3_ENDPOINT", "http://127.0.0.1:7480")
BUCKET = "openkvs-bench"
CREDS = {
    "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test:tester"),
    "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
}
RUNS = 3
SMALL_PARALLEL = 16  # = bucket/prefetch.py DEPTH


def _bucket() -> Any:
    from openkvs.storage.bucket.s3 import S3Bucket
    from openkvs.storage.bucket.sigv4 import Credentials

    creds = Credentials(CREDS["AWS_ACCESS_KEY_ID"], CREDS["AWS_SECRET_ACCESS_KEY"])
    return S3Bucket(BUCKET, endpoint=S3_ENDPOINT, region="us-east-1", credentials=creds, path_style=True)


def _blobs(prefix: str) -> Any:
    from openkvs.storage.bucket import S3BlobStore
    from openkvs.storage.bucket.sigv4 import Credentials

    creds = Credentials(CREDS["AWS_ACCESS_KEY_ID"], CREDS["AWS_SECRET_ACCESS_KEY"])
    return S3BlobStore(f"s3://{BUCKET}/{prefix}", endpoint=S3_ENDPOINT, path_style=True, credentials=creds)


class Node:
    """An openkvs serve on a fresh PostgreSQL schema (or with ``sqlite`` a fresh data dir), with (``bucket``) or
    without a bucket, and a user's token."""

    def __init__(self, bucket: bool, sqlite: bool = False) -> None:
        self.schema = f"bench_bucket_{secrets.token_hex(4)}"
        self.sqlite = sqlite
        if sqlite:
            self.env = {"OPENKVS_DATA_DIR": str(h.DATA / self.schema), **CREDS}
        else:
            self.env = {"OPENKVS_DATABASE_URL": h.PG_URL, "OPENKVS_DATABASE_SCHEMA": self.schema, **CREDS}
        if bucket:
            self.env.update(
                OPENKVS_BLOB_STORE=f"s3://{BUCKET}/{self.schema}", OPENKVS_S3_ENDPOINT=S3_ENDPOINT,
                OPENKVS_S3_PATH_STYLE="true", OPENKVS_BLOB_INLINE_MAX="0",
            )
        env = {**os.environ, **self.env}
        subprocess.run([h.OPENKVS, "migrate"], env=env, check=True, capture_output=True)
        out = subprocess.run([h.OPENKVS, "users", "create", "bench"], env=env, check=True, capture_output=True,
                             text=True)
        self.token = out.stdout.strip().splitlines()[-1]
        self.start()
        self.client = httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {self.token}"},
                                   timeout=300)

    def start(self) -> None:
        port = h.free_port()
        cmd = [h.OPENKVS, "serve", "--port", str(port), "--rate-limits", "off", "--log-level", h.LOG_LEVEL]
        self.server = h.start_server(f"bucket-{self.schema}", cmd, port, self.env, "/v2/")

    def restart(self) -> None:
        """A fresh process on the same data (memory measured from its idle state)."""
        self.server.stop()
        self.start()
        self.client.base_url = httpx.URL(self.server.url)

    def store(self, name: str) -> str:
        r = self.client.post("/v2/key-value-stores", params={"name": name})
        r.raise_for_status()
        return str(r.json()["data"]["id"])

    def put(self, store_id: str, key: str, data: bytes) -> None:
        r = self.client.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=data,
                            headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text

    def zip_mbps(self, store_id: str) -> tuple[float, int]:
        """Best of RUNS: MB/s of the archive through curl, and its size."""
        best, size = 0.0, 0
        for _ in range(RUNS):
            out = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}",
                 "-H", f"Authorization: Bearer {self.token}", f"{self.server.url}/v2/key-value-stores/{store_id}/records"],
                check=True, capture_output=True, text=True,
            ).stdout.split()
            assert out[2] == "200", out
            size, secs = int(out[0]), float(out[1])
            best = max(best, size / secs / 1e6)
        return best, size

    async def collect(self) -> None:
        from openkvs.storage.postgres import PostgresStorage

        node = PostgresStorage(h.PG_URL, namespace=self.schema, blob_store=_blobs(self.schema))
        await node.open()
        try:
            await node.collect_garbage(grace=0)
        finally:
            await node.aclose()

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        if self.env.get("OPENKVS_BLOB_STORE"):
            asyncio.run(_clear(self.schema))
        if self.sqlite:
            shutil.rmtree(self.env["OPENKVS_DATA_DIR"], ignore_errors=True)
            return
        subprocess.run(["psql", h.PG_URL, "-qc", f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"], check=False,
                       capture_output=True)


def object_keys(node: Node, store_id: str) -> list[tuple[str, int]]:
    """The bucket keys of a store's records, in key order (from PostgreSQL: the blob ids)."""
    out = subprocess.run(
        ["psql", h.PG_URL, "-qtA", "-c",
         f"SELECT blob_id, size FROM {node.schema}.records WHERE store_id = '{store_id}' ORDER BY key"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return [(f"{node.schema}/blobs/{line.split('|')[0]}", int(line.split("|")[1])) for line in out]


async def direct_get_mbps(keys: list[tuple[str, int]], parallel: int) -> float:
    """Best of RUNS: MB/s of GETting every object (whole) straight from S3, ``parallel`` at a time."""
    bucket = _bucket()
    try:
        best = 0.0
        for _ in range(RUNS):
            sem = asyncio.Semaphore(parallel)
            total = 0

            async def one(key: str, size: int, sem: asyncio.Semaphore = sem) -> None:
                nonlocal total
                async with sem:
                    async for piece in bucket.get(key, 0, size):
                        total += len(piece)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(k, s) for k, s in keys))
            best = max(best, total / (time.perf_counter() - t0) / 1e6)
        return best
    finally:
        await bucket.aclose()


async def direct_put_mbps(datas: list[bytes]) -> float:
    """MB/s of multipart uploads of ``datas`` one at a time, with the code openkvs uses (S3BlobStore.upload)."""
    blobs = _blobs(f"direct-{secrets.token_hex(4)}")

    async def rest(d: bytes) -> Any:  # 1 MiB pieces, as a request body arrives
        for i in range(0, len(d), MIB):
            yield d[i : i + MIB]

    async def started(_: str) -> None:
        return None

    try:
        t0 = time.perf_counter()
        for i, d in enumerate(datas):
            await blobs.upload(i, bytearray(), rest(d).__aiter__(), started)
        mbps = sum(map(len, datas)) / (time.perf_counter() - t0) / 1e6
        await blobs.delete(range(len(datas)))
        return mbps
    finally:
        await blobs.aclose()


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    if "postgres" not in backends:
        h.log("bucket: needs the postgres backend, skipped")
        return {}
    n_big, n_small = (4, 400) if quick else (20, 2000)
    big = [os.urandom(50 * MIB) for _ in range(n_big)]
    small = [os.urandom(64 * 1024) for _ in range(n_small)]
    asyncio.run(_create_bucket())
    results: dict[str, Any] = {"n_big": n_big, "n_small": n_small}
    s3 = Node(bucket=True)
    pg = Node(bucket=False)
    try:
        # PUT 50 MiB: through openkvs vs direct multipart, alternating, best of RUNS
        sid_big = s3.store("big")
        via, direct = 0.0, 0.0
        for run_no in range(RUNS):
            t0 = time.perf_counter()
            for i, d in enumerate(big):
                s3.put(sid_big, f"r{i:03d}", d)
            via = max(via, len(big) * 50 * MIB / (time.perf_counter() - t0) / 1e6)
            asyncio.run(s3.collect())  # the replaced versions' objects go now: the S3 server's tmpfs is small
            direct = max(direct, asyncio.run(direct_put_mbps(big)))
            h.log(f"  PUT 50 MiB run {run_no + 1}: openkvs {via:.0f} MB/s, direct {direct:.0f} MB/s (best so far)")
        results["put_50mib"] = {"openkvs_mbps": via, "direct_mbps": direct, "ratio": via / direct}

        sid_small = s3.store("small")
        for i, d in enumerate(small):
            s3.put(sid_small, f"r{i:05d}", d)
        pg_big, pg_small = pg.store("big"), pg.store("small")
        for i, d in enumerate(big):
            pg.put(pg_big, f"r{i:03d}", d)
        for i, d in enumerate(small):
            pg.put(pg_small, f"r{i:05d}", d)

        for label, sid, pg_sid, parallel in (("50mib", sid_big, pg_big, 1), ("64kib", sid_small, pg_small,
                                                                              SMALL_PARALLEL)):
            keys = object_keys(s3, sid)
            zip_mbps, size = s3.zip_mbps(sid)
            direct_mbps = asyncio.run(direct_get_mbps(keys, parallel))
            pg_mbps, _ = pg.zip_mbps(pg_sid)
            results[f"zip_{label}"] = {
                "archive_bytes": size, "openkvs_bucket_mbps": zip_mbps, "direct_s3_mbps": direct_mbps,
                "direct_parallel": parallel, "ratio": zip_mbps / direct_mbps, "openkvs_postgres_mbps": pg_mbps,
                "vs_postgres": zip_mbps / pg_mbps,
            }
            h.log(f"  ZIP {label}: bucket {zip_mbps:.0f} MB/s, direct S3 {direct_mbps:.0f} MB/s "
                  f"(ratio {zip_mbps / direct_mbps:.2f}), bytes in PostgreSQL {pg_mbps:.0f} MB/s")
    finally:
        s3.close()
        pg.close()
    print(json.dumps(results, indent=2))
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / f"bucket-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(json.dumps(results))
    return results


def memory(quick: bool) -> dict[str, Any]:
    """Peak RSS growth of the server during PUTs of big records and during their ZIP, bytes in the bucket, on
    each metadata backend (one server per backend, fresh)."""
    n, size = (4, 50 * MIB) if quick else (20, 50 * MIB)
    base = os.urandom(size)  # each record: its own 16 bytes, then this (the process holds one copy, not n)
    asyncio.run(_create_bucket())
    results: dict[str, Any] = {"records": n, "record_mib": size // MIB}
    for backend in ("postgres", "sqlite"):
        node = Node(bucket=True, sqlite=backend == "sqlite")
        try:
            sid = node.store("big")
            idle = h.rss_kib(node.server.pid) / 1024
            with h.RssSampler(node.server.pid) as put_rss:
                t0 = time.perf_counter()
                for i in range(n):
                    node.put(sid, f"r{i:03d}", secrets.token_bytes(16) + base[16:])
                put_s = time.perf_counter() - t0
            node.restart()  # the ZIP's growth from a fresh process (what the PUTs left is not the ZIP's)
            with h.RssSampler(node.server.pid) as zip_rss:
                zip_mbps, archive = node.zip_mbps(sid)
            results[backend] = {
                "rss_idle_mib": round(idle, 1),
                "put_rss_growth_mib": round(put_rss.growth_mib, 1),
                "put_rss_anon_growth_mib": round(put_rss.anon_growth_mib, 1),
                "put_mbps": round(n * size / put_s / 1e6),
                "zip_rss_growth_mib": round(zip_rss.growth_mib, 1),
                "zip_rss_anon_growth_mib": round(zip_rss.anon_growth_mib, 1),
                "zip_mbps": round(zip_mbps),
                "archive_bytes": archive,
            }
            h.log(f"  {backend}+s3: {results[backend]}")
        finally:
            node.close()
    results["load"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / f"bucket-memory-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(
        json.dumps(results)
    )
    return results


async def _clear(prefix: str) -> None:
    b = _bucket()
    try:
        await b.delete([o.key async for o in b.list(prefix + "/")])
    finally:
        await b.aclose()


async def _create_bucket() -> None:
    b = _bucket()
    try:
        await b.create_bucket()
    finally:
        await b.aclose()


if __name__ == "__main__":
    import sys

    if "--memory" in sys.argv:
        memory("--quick" in sys.argv)
    else:
        run(["postgres"], "--quick" in sys.argv)
