"""Exports stream (API-datasets.md section 7), against a real server process:

    * a client that stops reading holds the server back (back-pressure): its memory stays flat, then the rest
      arrives complete; a whole export of every format grows the server's memory by well under 64 MiB
    * a client that goes away stops the work within about a second (the server's CPU goes quiet)
    * a failure after the first byte (the database connection of the export killed) aborts the connection: the
      client sees a truncated transfer, never a complete-looking document
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATABASE_URL, TLS

from . import unique

pytestmark = pytest.mark.server_process

ITEMS = 60_000  # ~500 bytes each: ~30 MB of jsonl, ~100 MB of xml
MiB = 1024 * 1024


def rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def wait_until_idle(pid: int, limit: float, window: float = 0.3) -> None:
    """Until the process spends at most 20 ms of CPU (two clock ticks) in ``window`` seconds (blocked: here on a
    full socket), or at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < 0.025:
            return


class Peak:
    """The server's peak RssAnon while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self) -> Peak:
        self.before = rss_anon(self.pid)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_anon(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> int:
        return max(self.peak, rss_anon(self.pid)) - self.before


def item(i: int) -> dict:
    return {
        "url": f"https://example.com/p/{i}", "title": f"Product {i} " + "t" * 120, "price": i % 1000 / 7,
        "shop": {"city": "Prague", "zip": "11000"}, "tags": ["a", "b", "c"], "note": "n" * 200,
    }


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def big(request, tmp_path_factory, start_server):
    s = start_server(tmp_path_factory.mktemp(f"stream-{request.param}"), request.param, "--rate-limits", "off")
    with s.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("big")}).json()["data"]["id"]
        for lo in range(0, ITEMS, 2000):
            assert c.post(f"/v2/datasets/{did}/items", json=[item(i) for i in range(lo, lo + 2000)]).status_code == 201
    s.backend = request.param  # type: ignore[attr-defined]
    return s, did


def client(s) -> httpx.Client:
    # identity: the sizes and memory here are of the formats' own bytes (compressed exports: test_datasets_compression)
    headers = {"Authorization": f"Bearer {s.token}", "Accept-Encoding": "identity"}
    return httpx.Client(base_url=s.url, headers=headers, timeout=60, verify=TLS)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])  # stored bytes as read; csv rendered from joined pieces
def test_a_stalled_reader_holds_the_server_back(big, fmt):
    s, did = big
    pid = s.proc.pid
    with client(s) as c, Peak(pid) as peak:
        with c.stream("GET", f"/v2/datasets/{did}/items", params={"format": fmt}) as r:
            chunks = r.iter_bytes()
            got = next(chunks)
            wait_until_idle(pid, limit=3)  # not reading: the socket fills, the server must wait
            stalled = peak.growth
            for chunk in chunks:
                got += chunk
    assert stalled < 24 * MiB, stalled / MiB
    if fmt == "jsonl":
        urls = [json.loads(line)["url"] for line in got.splitlines()]
    else:
        urls = [row["url"] for row in csv.DictReader(io.StringIO(got.decode("utf-8-sig")))]  # (a BOM first)
    assert urls == [f"https://example.com/p/{i}" for i in range(ITEMS)]


@pytest.mark.parametrize("fmt", ["json", "csv", "xlsx", "xml", "html"])
def test_whole_exports_keep_memory_flat(big, fmt):
    s, did = big
    with client(s) as c, Peak(s.proc.pid) as peak:
        size = 0
        with c.stream("GET", f"/v2/datasets/{did}/items", params={"format": fmt, "desc": "1"}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                size += len(chunk)
    assert size > 2 * MiB  # (xlsx is deflated: the smallest)
    assert peak.growth < 64 * MiB, (fmt, peak.growth / MiB)


@pytest.mark.parametrize("fmt", ["xml", "jsonl", "csv"])  # rendered rows; stored bytes as read (PostgreSQL: by
# COPY); csv rendered from storage's joined pieces
def test_a_client_that_goes_away_stops_the_work(big, fmt):
    s, did = big
    pid = s.proc.pid
    with client(s) as c:
        with c.stream("GET", f"/v2/datasets/{did}/items", params={"format": fmt}) as r:
            next(r.iter_bytes())
            time.sleep(0.3)
        # the response is closed: httpx drops the connection of an unfinished body
    time.sleep(1.0)
    before = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - before < 0.25  # idle: no rendering goes on for nobody


@pytest.mark.postgres
def test_a_failure_after_the_first_byte_aborts_the_connection(big):
    s, did = big
    if s.backend != "postgres":
        pytest.skip("kills the export's PostgreSQL connection")
    schema = s.env["OPENKVS_DATABASE_SCHEMA"]
    with client(s) as c:
        with c.stream("GET", f"/v2/datasets/{did}/items", params={"format": "json"}) as r:
            chunks = r.iter_bytes()
            got = next(chunks)
            time.sleep(0.5)
            # only this server's connections (its schema names them), never another test's on the shared server
            kill = (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                f"AND application_name = 'openkvs:{schema}' AND query LIKE '%dataset_items%'"
            )
            out = subprocess.run(["psql", DATABASE_URL, "-Atc", f"SET search_path = {schema}; {kill}"],
                                 capture_output=True, text=True, timeout=30)
            assert "t" in out.stdout.split(), out.stdout + out.stderr
            with pytest.raises(httpx.HTTPError):
                for chunk in chunks:
                    got += chunk
    with pytest.raises(ValueError):
        json.loads(got)  # truncated, never a complete-looking document
