"""Shared plumbing for the benchmarks: servers, users, data sets, wrk, results.

Everything here is deliberately plain: subprocesses on free ports, polled until they answer, stopped in
``finally`` blocks. Data sets are written straight through the storage Python API (no HTTP), into
bench/.data/ for SQLite (kept between runs: a data set is rebuilt only when missing) and into a throw-away
schema for PostgreSQL (dropped when the benchmark ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / ".data"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
OPENKVS = str(VENV_BIN / "openkvs")
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_TOUCHED: set[str] = set()  # data sets this process created in PostgreSQL (dropped at the end)
LOG_LEVEL = "warning"  # the same for openkvs and the bare app: no access log on either side


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers ---------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    logfile: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(name: str, cmd: list[str], port: int, env: dict[str, str] | None = None, ready_path: str = "/",
                 timeout: float = 60.0) -> Server:
    (DATA / "logs").mkdir(parents=True, exist_ok=True)
    logfile = DATA / "logs" / f"{name}.log"
    out = open(logfile, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            cwd=REPO)
    out.close()
    server = Server(name, port, proc, logfile)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            httpx.get(server.url + ready_path, timeout=1.0)
            return server
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{name} did not answer within {timeout}s") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running(*servers_or_factories: Callable[[], Server]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for make in servers_or_factories:
            started.append(make())
        yield started
    finally:
        for s in reversed(started):
            s.stop()


# -- backends --------------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """Where one data set lives: a SQLite data dir or a PostgreSQL schema."""

    kind: str  # "sqlite" | "postgres"
    dataset: str

    @property
    def data_dir(self) -> Path:
        return DATA / f"sqlite-{self.dataset}"

    @property
    def schema(self) -> str:
        return "bench_" + re.sub(r"[^a-z0-9_]", "_", self.dataset.lower())

    def serve_cmd(self, port: int, defaults: bool = False) -> tuple[list[str], dict[str, str]]:
        """``defaults``: the settings a user runs (access log at info, metrics on, rate limits on) instead of no
        access log and no rate limits; the limits are raised above the load (Apify's 200 record requests a second
        per store would measure 429s), so that their bookkeeping is paid but nothing is refused."""
        cmd = [OPENKVS, "serve", "--port", str(port)]
        if defaults:
            cmd += ["--rate-limit-user-per-minute", "1000000000", "--rate-limit-store-per-second", "1000000000",
                    "--rate-limit-records-per-second", "1000000000"]
        else:
            cmd += ["--rate-limits", "off", "--log-level", LOG_LEVEL]
        if self.kind == "sqlite":
            return cmd + ["--data-dir", str(self.data_dir)], {}
        return cmd + ["--database-url", PG_URL], {"OPENKVS_DATABASE_SCHEMA": self.schema}

    def start(self, name: str | None = None, defaults: bool = False) -> Server:
        port = free_port()
        cmd, env = self.serve_cmd(port, defaults)
        label = "defaults" if defaults else "tuned"
        return start_server(name or f"openkvs-{self.kind}-{self.dataset}-{label}-{port}", cmd, port, env, "/v2/")

    def storage(self) -> Any:
        if self.kind == "sqlite":
            from openkvs.storage.sqlite import SQLiteStorage

            self.data_dir.mkdir(parents=True, exist_ok=True)
            return SQLiteStorage(self.data_dir, background=False)
        from openkvs.storage.postgres import PostgresStorage

        return PostgresStorage(PG_URL, namespace=self.schema, max_pool=16)

    @property
    def marker(self) -> Path:
        return DATA / f"{self.kind}-{self.dataset}.json"

    def made(self, count: int) -> dict[str, Any] | None:
        """What the marker says of a complete data set of ``count`` (None: none such, to be built). A PostgreSQL
        one is then this process's to drop at the end, as one it builds (PG_TOUCHED)."""
        if not self.marker.exists():
            return None
        m: dict[str, Any] = json.loads(self.marker.read_text())
        if m.get("count") != count:
            return None
        if self.kind == "postgres":
            PG_TOUCHED.add(self.dataset)
        return m

    def drop(self) -> None:
        """Forget the data set (the PostgreSQL schema always; SQLite's folder only when asked)."""
        if self.kind == "postgres":
            subprocess.run(["psql", PG_URL, "-qc", f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"],
                           check=False, capture_output=True)
            self.marker.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.marker.unlink(missing_ok=True)


class Body:
    """A RecordBody for put_record: yields the bytes, then knows their decoded size and CRC-32."""

    def __init__(self, data: bytes | Callable[[], Iterator[bytes]]):
        self._data = data
        self.decoded_size = 0
        self.crc32 = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = [self._data] if isinstance(self._data, bytes) else self._data()
        crc, n = 0, 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            n += len(chunk)
            yield chunk
        self.decoded_size, self.crc32 = n, crc


@dataclass
class Dataset:
    backend: Backend
    token: str
    store_id: str
    count: int
    info: dict[str, Any] = field(default_factory=dict)


async def _fill(backend: Backend, count: int, make_body: Callable[[int], Body], key_of: Callable[[int], str],
                concurrency: int) -> tuple[str, str]:
    from openkvs import auth

    storage = backend.storage()
    await storage.open()
    try:
        user = await storage.get_user_by_name("bench")
        if user is None:
            user = await storage.create_user("bench")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        store, _ = await storage.get_or_create_store(user.id, "data", None, auth.new_signing_key())
        sem = asyncio.Semaphore(concurrency)
        done = 0
        t0 = time.monotonic()

        async def put(i: int) -> None:
            nonlocal done
            async with sem:
                await storage.put_record(store.id, key_of(i), make_body(i), "application/octet-stream", None)
            done += 1
            if done % 100_000 == 0:
                log(f"  {backend.kind}/{backend.dataset}: {done}/{count} records, {time.monotonic() - t0:.0f}s")

        step = 10_000
        for lo in range(0, count, step):
            await asyncio.gather(*(put(i) for i in range(lo, min(count, lo + step))))
        if hasattr(storage, "flush_stats"):
            await storage.flush_stats()
        return token, store.id
    finally:
        await storage.aclose()


def _clone_sqlite(backend: Backend, store_id: str, count: int) -> None:
    import sqlite3

    conn = sqlite3.connect(backend.data_dir / "openkvs.sqlite3", isolation_level=None)
    try:
        cols = "size, decoded_size, crc32, modified_at, content_type, content_encoding"
        tpl = conn.execute(f"SELECT {cols}, data_id FROM records WHERE store_id = ? ORDER BY key LIMIT 1",
                           (store_id,)).fetchone()
        (data,) = conn.execute("SELECT data FROM record_data WHERE id = ?", (tpl[-1],)).fetchone()
        conn.execute("BEGIN IMMEDIATE")
        for lo in range(1, count, 50_000):
            for i in range(lo, min(count, lo + 50_000)):
                data_id = conn.execute("INSERT INTO record_data(data) VALUES (?)", (data,)).lastrowid
                conn.execute(f"INSERT INTO records(store_id, key, {cols}, data_id) VALUES (?,?,?,?,?,?,?,?,?)",
                             (store_id, f"k{i:08d}", *tpl[:-1], data_id))
        # the store's record count and ZIP totals as the writes would have kept them (storage/totals.py)
        from openkvs.storage.sqlite.tables import RECORD_TOTALS, STORE_TOTALS

        conn.execute("UPDATE stores SET generation = generation + 1, storage_bytes = "
                     "(SELECT sum(size) FROM records WHERE store_id = ?) WHERE id = ?", (store_id, store_id))
        conn.execute(f"UPDATE stores SET ({STORE_TOTALS}) = (SELECT {RECORD_TOTALS} FROM records WHERE store_id = ?), "
                     "totals_generation = generation WHERE id = ?", (store_id, store_id))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _clone_postgres(backend: Backend, store_id: str, count: int) -> None:
    from openkvs.storage.postgres.tables import RECORD_TOTALS, STORE_TOTALS

    sql = f"""
    SET search_path = {backend.schema};
    BEGIN;
    WITH t AS (SELECT r.*, c.data FROM records r JOIN blob_chunks c ON c.blob_id = r.blob_id AND c.seq = 0
               WHERE r.store_id = '{store_id}' AND r.key = 'k00000000'),
         ids AS (SELECT g, nextval('blob_ids') AS b FROM generate_series(1, {count - 1}) g),
         c AS (INSERT INTO blob_chunks (blob_id, seq, data) SELECT ids.b, 0, t.data FROM ids, t)
    INSERT INTO records (store_id, key, content_type, content_encoding, size, decoded_size, crc32, modified_at,
                         blob_id, chunk_size)
    SELECT t.store_id, 'k' || lpad(ids.g::text, 8, '0'), t.content_type, t.content_encoding, t.size,
           t.decoded_size, t.crc32, t.modified_at, ids.b, t.chunk_size FROM ids, t;
    UPDATE stores SET generation = generation + 1,
           storage_bytes = (SELECT sum(size) FROM records WHERE store_id = '{store_id}') WHERE id = '{store_id}';
    UPDATE stores SET ({STORE_TOTALS}) = (SELECT {RECORD_TOTALS} FROM records WHERE store_id = '{store_id}'),
           totals_generation = generation WHERE id = '{store_id}';
    COMMIT;
    ANALYZE records;
    """
    subprocess.run(["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


def settle(backend: Backend) -> None:
    """The data set's database brought to this checkout's version, with every record's kept ZIP header
    (records.zip_head) filled in, as a server has them once its start-up work is done (rows cloned in SQL, or a
    data set made by an older version, have none)."""
    if backend.kind != "sqlite":
        from openkvs.storage.postgres import PostgresStorage

        async def migrate() -> None:
            await PostgresStorage(PG_URL, namespace=backend.schema).migrate()  # (older rows' headers filled too)

        asyncio.run(migrate())
        return

    async def go() -> None:
        storage = backend.storage()
        await storage.open()
        try:
            fill = getattr(storage, "fill_zip_heads", None)
            n = await fill() if fill is not None else 0
            if n:
                log(f"filled the kept ZIP headers of {n} records of {backend.dataset}")
        finally:
            await storage.aclose()

    asyncio.run(go())


def clone_dataset(kind: str, name: str, count: int, body: bytes) -> Dataset:
    """``count`` records k00000000... all holding ``body``, fast: the first is written with put_record (the
    storage API), the others are copies of its row (each with its own copy of the bytes) made in one SQL
    transaction in the backend's own tables. Per-record put_record is ~2,000/s on SQLite and ~600/s on
    PostgreSQL here (one store's writes serialize), too slow for a million keys."""
    backend = Backend(kind, name)
    if (m := backend.made(count)) is not None:
        settle(backend)
        return Dataset(backend, m["token"], m["store_id"], count, m)
    ds = dataset(kind, name + "-seed", 1, lambda i: Body(body))
    t0 = time.monotonic()
    log(f"cloning {kind}/{name}: {count} records ...")
    (_clone_sqlite if kind == "sqlite" else _clone_postgres)(backend_as(ds.backend, name), ds.store_id, count)
    ds.backend.marker.unlink()
    info = {**ds.info, "count": count, "fill_seconds": round(time.monotonic() - t0, 1), "filled_by": "sql clone"}
    log(f"cloned {kind}/{name} in {info['fill_seconds']}s")
    backend.marker.write_text(json.dumps(info))
    settle(backend)
    return Dataset(backend, ds.token, ds.store_id, count, info)


def backend_as(b: Backend, name: str) -> Backend:
    """Move a freshly made data set to its final name (SQLite: rename the folder; PostgreSQL: the schema)."""
    new = Backend(b.kind, name)
    new.drop()
    if b.kind == "sqlite":
        b.data_dir.rename(new.data_dir)
    else:
        subprocess.run(["psql", PG_URL, "-qc", f"ALTER SCHEMA {b.schema} RENAME TO {new.schema}"],
                       check=True, capture_output=True)
        PG_TOUCHED.add(name)
    return new


def dataset(kind: str, name: str, count: int, make_body: Callable[[int], Body],
            key_of: Callable[[int], str] = lambda i: f"k{i:08d}", concurrency: int = 32) -> Dataset:
    """The data set ``name`` on backend ``kind``, built unless a marker says it is complete."""
    backend = Backend(kind, name)
    if (m := backend.made(count)) is not None:
        return Dataset(backend, m["token"], m["store_id"], count, m)
    backend.drop()
    if kind == "postgres":
        PG_TOUCHED.add(name)
    log(f"filling {kind}/{name}: {count} records ...")
    t0 = time.monotonic()
    token, store_id = asyncio.run(_fill(backend, count, make_body, key_of, concurrency))
    info = {"count": count, "token": token, "store_id": store_id, "fill_seconds": round(time.monotonic() - t0, 1)}
    log(f"filled {kind}/{name} in {info['fill_seconds']}s")
    DATA.mkdir(parents=True, exist_ok=True)
    backend.marker.write_text(json.dumps(info))
    return Dataset(backend, token, store_id, count, info)


# -- wrk -------------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkResult:
    rps: float
    latency_avg_ms: float
    requests: int
    errors: int  # socket errors + non-2xx
    raw: str

    def as_dict(self) -> dict[str, Any]:
        return {"rps": round(self.rps, 1), "latency_avg_ms": round(self.latency_avg_ms, 3),
                "requests": self.requests, "errors": self.errors}


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\b", out)
    lat = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return WrkResult(rps, lat, n, errors, out)


LUA = """
local keys = {nkeys}
local token = "{token}"
local base = "{base}"
local body = string.rep("x", {size})
-- each wrk thread runs its own Lua state: seeded alike, the threads would ask for the same keys in the same order
-- (PostgreSQL's batched look-ups then share them: flattering). setup runs once per thread in the main state.
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed({seed} + 7919 * thread_id)
end
request = function()
  local path = base .. string.format("k%08d", math.random(0, keys - 1))
  local headers = {{["Authorization"] = "Bearer " .. token}}
  if "{method}" == "PUT" then
    headers["Content-Type"] = "application/octet-stream"
    return wrk.format("PUT", path, headers, body)
  end
  return wrk.format("GET", path, headers)
end
"""


def wrk_script(method: str, base: str, token: str, nkeys: int, size: int, seed: int = 1) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"wrk-{method.lower()}-{seed}.lua"
    path.write_text(LUA.format(method=method, base=base, token=token, nkeys=nkeys, size=size, seed=seed))
    return path


def wrk_start(url: str, script: Path, threads: int, conns: int, seconds: float) -> subprocess.Popen[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, int(seconds))}s", "--latency", "-s", str(script), url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_finish(proc: subprocess.Popen[str]) -> WrkResult:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed:\n{out}")
    return parse_wrk(out)


def wrk(url: str, script: Path, threads: int = 2, conns: int = 32, seconds: float = 10) -> WrkResult:
    return wrk_finish(wrk_start(url, script, threads, conns, seconds))


# -- memory ----------------------------------------------------------------------------------------------------


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/PID/status in KiB: VmRSS (all resident pages), RssAnon (the process's own
    memory: heap, stacks) or RssFile (pages of mapped files, e.g. a memory-mapped database: page cache the
    kernel may drop at any time)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Peak VmRSS of a process, and peak RssAnon, sampled every 50 ms in a thread while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.before = self.peak = self.anon_before = self.anon_peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> RssSampler:
        self.before = self.peak = rss_kib(self.pid)
        self.anon_before = self.anon_peak = rss_kib(self.pid, "RssAnon")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_kib(self.pid))
        self.anon_peak = max(self.anon_peak, rss_kib(self.pid, "RssAnon"))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._sample()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 1024

    @property
    def anon_growth_mib(self) -> float:
        return (self.anon_peak - self.anon_before) / 1024


# -- output ----------------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
              for r in cells[1:]]
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    return text


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:,.3f}" if abs(c) < 10 else f"{c:,.1f}"
    return str(c)


def save(name: str, quick: bool, results: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    doc = {"benchmark": name, "quick": quick, "utc": stamp, "cpus": os.cpu_count(), "results": results}
    path.write_text(json.dumps(doc, indent=2))
    with open(RESULTS / "all.jsonl", "a") as f:
        f.write(json.dumps(doc) + "\n")
    log(f"results -> {path.relative_to(REPO)}")
    return path


def drop_postgres_datasets() -> None:
    """Drop the bench_* schemas this process made or used (PG_TOUCHED), and only those: the PostgreSQL database is
    shared with others' tests and benchmarks, and a marker in bench/.data may stand for another run's schema (one
    running now, or one made in another database by an earlier BENCH_PG_URL)."""
    for name in sorted(PG_TOUCHED):
        Backend("postgres", name).drop()
