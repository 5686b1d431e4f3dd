"""The ZIP download of random stores is byte for byte what the old, entry-by-entry writer made for the same
records (tests/zip_reference.py, frozen from main before archives were laid out a batch at a time): small,
empty, gzip-encoded and (SQLite) file-backed records mixed in one store, their times set in the database to
edges (before 1980, after 2038 and 2107, the same second), whole archives and random ranges, both backends."""

from __future__ import annotations

import gzip
import random
import sqlite3
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests import zip_reference
from tests.conftest import DATABASE_URL, Server

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789!-_.'()"
EDGE_MS = [1, 315_532_799_999, 315_532_800_000, 1_700_000_000_000, 1_700_000_000_999, 0x7FFFFFFF * 1000 + 5,
           4_354_819_200_000, 4_400_000_000_123]


@dataclass
class Rec:
    key: str
    data: bytes  # decoded
    ms: int

    @property
    def decoded_size(self) -> int:
        return len(self.data)

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data)

    @property
    def modified_at(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ms)


def set_times(server: Server, backend: str, store_id: str, recs: list[Rec]) -> None:
    rows = [(r.ms, store_id, r.key) for r in recs]
    if backend == "sqlite":
        conn = sqlite3.connect(server.data_dir / "openkvs.sqlite3", timeout=30)
        with conn:
            conn.executemany("UPDATE records SET modified_at = ? WHERE store_id = ? AND key = ?", rows)
        conn.close()
    else:
        schema = server.env["OPENKVS_DATABASE_SCHEMA"]
        values = ",".join(f"({ms}, '{key}')" for ms, _, key in rows)  # the test's keys have no quote
        sql = (f"SET search_path = \"{schema}\"; UPDATE records r SET modified_at = 'epoch'::timestamptz + "
               f"v.ms * interval '1 millisecond' FROM (VALUES {values}) v(ms, key) "
               f"WHERE r.store_id = '{store_id}' AND r.key = v.key")
        subprocess.run(["psql", DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_archive_equals_the_old_writers(server: Server, backend: str, seed: int) -> None:
    rnd = random.Random(seed)
    chars = KEY_CHARS.replace("'", "")  # the PostgreSQL update above quotes keys in SQL
    keys = sorted({"k" + "".join(rnd.choice(chars) for _ in range(rnd.randint(1, 30))) for _ in range(1300)})
    recs, puts = [], []
    for key in keys:
        kind = rnd.random()
        if kind < 0.05:
            data = rnd.randbytes(rnd.choice([0, 0, 3]))
        elif kind < 0.08:
            data = rnd.randbytes(70 * 1024)  # past the inline limit: a file on SQLite, chunks on PostgreSQL
        else:
            data = rnd.randbytes(rnd.randint(1, 400))
        headers = {"Content-Type": "application/octet-stream"}
        body = data
        if rnd.random() < 0.04:
            body, headers["Content-Encoding"] = gzip.compress(data), "gzip"
        puts.append((key, body, headers))
        ms = rnd.choice(EDGE_MS) if rnd.random() < 0.2 else rnd.randrange(1_000_000_000_000, 2_000_000_000_000)
        recs.append(Rec(key, data, ms))
    with server.client() as c:
        r = c.post("/v2/key-value-stores", params={"name": f"bulk-{seed}"})
        assert r.status_code == 201, r.text
        store_id = r.json()["data"]["id"]

        def put(batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
            with server.client() as own:
                for key, body, headers in batch:
                    r = own.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=body, headers=headers)
                    assert r.status_code == 201, r.text

        # Eight writers at once: the records are the same whatever the order (their times are set below), and
        # PostgreSQL commits them together instead of waiting out 1,300 commits one after another.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, [puts[i::8] for i in range(8)]))
        set_times(server, backend, store_id, recs)
        want = zip_reference.build_archive([(r, r.data) for r in recs])  # keys sorted as bytes = the store's order
        r = c.get(f"/v2/key-value-stores/{store_id}/records")
        assert r.status_code == 200
        assert r.content == want
        for _ in range(8):
            a = rnd.randrange(len(want))
            b = rnd.randrange(a, len(want))
            r = c.get(f"/v2/key-value-stores/{store_id}/records", headers={"Range": f"bytes={a}-{b}"})
            assert r.status_code == 206
            assert r.content == want[a : b + 1], (a, b)
