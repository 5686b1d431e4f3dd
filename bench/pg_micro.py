"""Micro benchmark of PostgresStorage through the storage API (no HTTP): PUT/s and GET/s with concurrency 16,
snapshot read MiB/s (what the ZIP download does: records() batches, read_blob of each) and records/s; and
``lookupcpu``: PostgreSQL's backend CPU per record GET look-up (``look_up_store`` by ID with a key, one at a time,
the Store held: what a GET asks), from /proc of this storage's backends (PostgreSQL on this machine).

    .venv/bin/python -m bench.pg_micro                 # everything, prints one JSON line per measurement
    .venv/bin/python -m bench.pg_micro put get         # some of: put get snap64k snap50m snap100b lookupcpu
    .venv/bin/python -m bench.pg_micro --fresh         # drop and rebuild the data sets (schema bench_pgmicro)

Data sets live in the schema ``bench_pgmicro`` of BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) and
are reused by later runs; the 100k x 100 B set is made by copying one record's rows in SQL (like harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import zlib

import asyncpg

from openkvs.storage.base import KeySelection
from openkvs.storage.postgres import PostgresStorage

DSN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = os.environ.get("BENCH_PG_SCHEMA", "bench_pgmicro")
MiB = 1024 * 1024
CONC = 16


class Body:
    def __init__(self, data: bytes, piece: int = 256 * 1024) -> None:
        self.data, self.piece = data, piece
        self.decoded_size = 0
        self.crc32 = 0

    async def __aiter__(self):
        for i in range(0, len(self.data), self.piece):
            p = self.data[i : i + self.piece]
            self.decoded_size += len(p)
            self.crc32 = zlib.crc32(p, self.crc32)
            yield p


async def store_of(s: PostgresStorage, name: str):
    u = await s.get_user_by_name("bench") or await s.create_user("bench")
    st, created = await s.get_or_create_store(u.id, name, None, "k")
    return st, created


async def stored_bytes(s: PostgresStorage, store_id: str) -> int:
    store = await s.get_store(store_id)
    assert store is not None  # (store_of made it)
    return store.stats.storage_bytes


async def ensure_sets(s: PostgresStorage) -> dict[str, str]:
    ids = {}
    st, _ = await store_of(s, "s64k")
    if await stored_bytes(s, st.id) != 2000 * 64 * 1024:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                await s.put_record(st.id, f"k{i:06d}", Body(os.urandom(64 * 1024)), "application/octet-stream", None)

        await asyncio.gather(*(one(i) for i in range(2000)))
    ids["snap64k"] = st.id
    st, _ = await store_of(s, "s50m")
    if await stored_bytes(s, st.id) != 20 * 50 * MiB:
        block = os.urandom(MiB)
        for i in range(20):
            await s.put_record(st.id, f"k{i:03d}", Body(block * 50), "application/octet-stream", None)
    ids["snap50m"] = st.id
    st, _ = await store_of(s, "s100b")
    if await stored_bytes(s, st.id) != 100_000 * 100:
        await s.put_record(st.id, "k00000000", Body(os.urandom(100)), "application/octet-stream", None)
        conn = await asyncpg.connect(DSN, server_settings={"search_path": SCHEMA})
        try:
            async with conn.transaction():
                cols = [
                    r["column_name"]
                    for r in await conn.fetch(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                        "AND table_name = 'records' ORDER BY ordinal_position",
                        SCHEMA,
                    )
                ]
                sel = ", ".join(
                    # (zip_head NULL: the trigger makes each row's own)
                    {"key": "'k' || lpad(ids.g::text, 8, '0')", "blob_id": "ids.b", "zip_head": "NULL"}.get(c, f"t.{c}")
                    for c in cols
                )
                await conn.execute(
                    f"""WITH t AS (SELECT r.*, c.data FROM records r JOIN blob_chunks c
                                   ON c.blob_id = r.blob_id AND c.seq = 0
                                   WHERE r.store_id = $1 AND r.key = 'k00000000'),
                         ids AS (SELECT g, nextval('blob_ids') AS b FROM generate_series(1, 99999) g),
                         c AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT ids.b, 0, t.data FROM ids, t)
                    INSERT INTO records ({", ".join(cols)}) SELECT {sel} FROM ids, t""",
                    st.id,
                )
                await conn.execute(
                    "UPDATE stores SET generation = generation + 1, "
                    "storage_bytes = (SELECT sum(size) FROM records WHERE store_id = $1) WHERE id = $1",
                    st.id,
                )
            await conn.execute("ANALYZE records")
        finally:
            await conn.close()
    ids["snap100b"] = st.id
    return ids


async def bench_put(s: PostgresStorage, seconds: float) -> dict:
    st, _ = await store_of(s, "puts")
    data = os.urandom(1024)
    n = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal n
        while time.perf_counter() < stop:
            await s.put_record(st.id, f"k{random.randrange(1000):04d}", Body(data), "application/octet-stream", None)
            n += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONC)))
    return {"put_per_s": round(n / (time.perf_counter() - t))}


async def bench_get(s: PostgresStorage, seconds: float) -> dict:
    st, _ = await store_of(s, "puts")
    data = os.urandom(1024)
    for i in range(1000):
        if await s.get_record(st.id, f"k{i:04d}") is None:
            await s.put_record(st.id, f"k{i:04d}", Body(data), "application/octet-stream", None)
    n = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal n
        while time.perf_counter() < stop:
            # what GET /records/{key} does with storage: find the store, the record, stream the bytes
            store = await s.get_store(st.id)
            assert store is not None
            rec = await s.get_record(store.id, f"k{random.randrange(1000):04d}")
            assert rec is not None  # (all 1000 put above)
            async for _ in s.read_blob(rec):
                pass
            n += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONC)))
    return {"get_per_s": round(n / (time.perf_counter() - t))}


def _backend_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (/proc/PID/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def bench_lookupcpu(s: PostgresStorage, count: int = 20_000) -> dict:
    """PostgreSQL's CPU per look-up of a 1 KiB record: the sum over the storage's backends (pg_stat_activity by its
    application_name) of their CPU across ``count`` look-ups, one at a time, after 300 to warm up."""
    st, _ = await store_of(s, "puts")
    user = await s.get_user_by_name("bench")
    assert user is not None
    keys = [f"k{i:04d}" for i in range(100)]
    for k in keys:
        if await s.get_record(st.id, k) is None:
            await s.put_record(st.id, k, Body(os.urandom(1024)), "application/octet-stream", None)
    readable = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")
    for i in range(300):
        await s.look_up_store(user.id, store_id=st.id, key=keys[i % 100], readable=readable)
    conn = await asyncpg.connect(DSN)
    try:
        pids = [r[0] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", s.application_name)]
    finally:
        await conn.close()
    cpu, t = _backend_cpu(pids), time.perf_counter()
    for i in range(count):
        await s.look_up_store(user.id, store_id=st.id, key=keys[i % 100], readable=readable)
    wall = time.perf_counter() - t
    return {"backend_us_per_lookup": round(1e6 * (_backend_cpu(pids) - cpu) / count, 1),
            "wall_us_per_lookup": round(1e6 * wall / count, 1), "backends": len(pids)}


async def bench_snap(s: PostgresStorage, store_id: str) -> dict:
    t = time.perf_counter()
    nbytes = nrec = 0
    async with s.snapshot(store_id, KeySelection()) as snap:
        async for batch in snap.records():
            for rec in batch:
                async for piece in snap.read_blob(rec):
                    nbytes += len(piece)
                nrec += 1
    dt = time.perf_counter() - t
    return {"MiB_per_s": round(nbytes / MiB / dt, 1), "records_per_s": round(nrec / dt), "seconds": round(dt, 2)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["put", "get", "snap64k", "snap50m", "snap100b"])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    if a.fresh:
        await PostgresStorage(DSN, namespace=SCHEMA).drop()
    s = PostgresStorage(DSN, namespace=SCHEMA, max_pool=10)
    await s.open()
    try:
        # (the data sets only for the snapshot benchmarks that read them)
        ids = await ensure_sets(s) if any(w.startswith("snap") for w in a.which) else {}
        for w in a.which:
            if w == "put":
                r = await bench_put(s, a.seconds)
            elif w == "get":
                r = await bench_get(s, a.seconds)
            elif w == "lookupcpu":
                r = await bench_lookupcpu(s)
            else:
                r = await bench_snap(s, ids[w])
            print(json.dumps({"label": a.label, "bench": w, **r}), flush=True)
    finally:
        await s.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
