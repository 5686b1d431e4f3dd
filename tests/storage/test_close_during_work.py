"""SQLite's connections are used by one thread at a time and closed only once no thread uses them, whatever became
of the task that waited for the thread: a task cancelled with asyncio's own ``Task.cancel()`` (which anyio's
shield does not stop) while its write or read ran in a worker thread used to hand the writer to the next write
while its transaction still ran, and a close then closed connections under running threads. sqlite3 segfaulted
(tests/test_inprocess.py, 4 runs in 5, in the fill of older rows' ZIP headers cancelled by a closing storage)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from openkvs.api.download import _archive_bytes, _archive_size
from openkvs.storage.base import KeySelection, StorageUnavailable
from openkvs.storage.sqlite import DB_NAME, SQLiteStorage
from openkvs.storage.sqlite.tables import RECORD_COLS, RECORD_TOTALS, STORE_TOTALS, zip_head

from .conftest import Body

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ROWS = 12_000  # rows without a ZIP header: six of the fill's write transactions
KEPT_ROWS = 3_000  # small records with their ZIP headers, in a store of their own


async def _until(event: threading.Event) -> None:
    for _ in range(10_000):
        if event.is_set():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the worker thread never started")


class Tracked:
    """Functions run on a connection in worker threads, counting how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.outcomes: list[Any] = []

    def run(self, conn: sqlite3.Connection, sql: str, entered: threading.Event | None = None,
            release: threading.Event | None = None) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if entered is not None:
                entered.set()
            if release is not None:
                release.wait(10)
            try:
                result = conn.execute(sql).fetchall()
            except BaseException as exc:
                self.outcomes.append(exc)
                raise
            self.outcomes.append(result)
            return result
        finally:
            with self.lock:
                self.running -= 1


async def test_a_cancelled_write_keeps_the_writer_until_its_transaction_ends(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        db = st._db
        await db.write(lambda conn: conn.execute("CREATE TABLE scratch(x)"))
        tracked, entered, release = Tracked(), threading.Event(), threading.Event()
        first = asyncio.ensure_future(db.write(tracked.run, "INSERT INTO scratch VALUES (1)", entered, release))
        await _until(entered)
        first.cancel()
        asyncio.get_running_loop().call_later(0.2, release.set)
        # the next write waits for the cancelled one's transaction instead of running beside it on the connection
        await db.write(tracked.run, "INSERT INTO scratch VALUES (2)")
        with pytest.raises(asyncio.CancelledError):
            await first
        assert tracked.most == 1
        assert tracked.outcomes == [[], []]  # both committed, none failed
        assert await db.read(lambda conn: conn.execute("SELECT x FROM scratch ORDER BY x").fetchall()) == [(1,), (2,)]


@pytest.mark.parametrize("cancelled", [False, True], ids=["running", "cancelled"])
async def test_close_waits_for_a_read_running_in_its_thread(tmp_path: Path, cancelled: bool) -> None:
    st = SQLiteStorage(tmp_path / "d", background=False)
    await st.open()
    try:
        tracked, entered, release = Tracked(), threading.Event(), threading.Event()
        read = asyncio.ensure_future(st._db.read(tracked.run, "SELECT count(*) FROM stores", entered, release))
        await _until(entered)
        if cancelled:
            read.cancel()
        closing = asyncio.ensure_future(st.aclose())
        asyncio.get_running_loop().call_later(0.2, release.set)
        await closing
        if cancelled:
            with pytest.raises(asyncio.CancelledError):
                await read
        else:
            assert await read == [(0,)]
        assert tracked.outcomes == [[(0,)]]  # the read's statement ran on a connection still open
    finally:
        await st.aclose()


async def test_closing_while_threads_work_never_crashes(tmp_path: Path) -> None:
    """A storage opened with its background tasks (the fill of rows without a ZIP header starts at once) and
    closed a few milliseconds later, while writes, reads, a snapshot and a ZIP archive (its batches on two
    connections) run and some are cancelled, many times over, in a process of its own (``python -X
    faulthandler``): it must end well, not by a signal."""
    d = tmp_path / "d"
    async with SQLiteStorage(d, background=False) as st:
        user = await st.create_user("u")
        store = await st.create_store(user.id, "s", None, "k")
        await st.put_record(store.id, "a", Body(b"x" * 100), "application/octet-stream", None)
        kept = await st.create_store(user.id, "kept", None, "k")  # small records with their headers kept
    conn = sqlite3.connect(d / DB_NAME)
    with conn:  # one transaction
        conn.executemany(
            "INSERT INTO records(store_id, key, size, decoded_size, crc32, modified_at, content_type) "
            "VALUES (?, ?, 0, 0, 0, 1700000000000, 'application/octet-stream')",
            [(store.id, f"k{i:06d}") for i in range(ROWS)],
        )
        for i in range(KEPT_ROWS):
            row = (f"k{i:06d}", 100, 100, zlib.crc32(b"z" * 100), 1700000000000, "application/octet-stream", None)
            data_id = conn.execute("INSERT INTO record_data(data) VALUES (?)", (b"z" * 100,)).lastrowid
            conn.execute(
                f"INSERT INTO records(store_id, {RECORD_COLS}, zip_head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (kept.id, *row, data_id, zip_head(row)),
            )
        conn.execute(
            f"UPDATE stores SET ({STORE_TOTALS}) = (SELECT {RECORD_TOTALS} FROM records WHERE store_id = ?), "
            "totals_generation = generation WHERE id = ?",
            (kept.id, kept.id),
        )
    conn.close()
    code = f"import asyncio; from tests.storage.test_close_during_work import churn; asyncio.run(churn({str(d)!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.split()[-1] == "ok"
    conn = sqlite3.connect(d / DB_NAME, isolation_level=None)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


async def churn(data_dir: str, cycles: int = 25, seed: int = 1) -> None:
    """The work of ``test_closing_while_threads_work_never_crashes``, in its own process."""
    d = Path(data_dir)
    rnd = random.Random(seed)
    raw = sqlite3.connect(d / DB_NAME, isolation_level=None)
    store_id, kept_id = (raw.execute("SELECT id FROM stores WHERE name = ?", (n,)).fetchone()[0] for n in ("s", "kept"))
    for cycle in range(cycles):
        raw.execute(  # for the fill to do again
            "UPDATE records SET zip_head = NULL WHERE zip_head IS NOT NULL AND store_id = ?", (store_id,)
        )
        st = SQLiteStorage(d)  # with its background tasks: the fill starts at once
        await st.open()

        async def snapshot(st: SQLiteStorage = st) -> None:
            async with st.snapshot(store_id, KeySelection()) as snap:
                async for _ in snap.records(batch=500):
                    await asyncio.sleep(0)

        async def archive(st: SQLiteStorage = st) -> None:  # batches of kept headers on two connections
            async with st.snapshot(kept_id, KeySelection()) as snap:
                snap.kept_rows = 500  # type: ignore[attr-defined]
                async for _ in _archive_bytes(snap, 0, await _archive_size(snap)):
                    await asyncio.sleep(0)

        async def count(st: SQLiteStorage = st) -> Any:
            return await st._db.read(lambda c: c.execute("SELECT count(*), sum(length(key)) FROM records").fetchall())

        work = [asyncio.ensure_future(w) for w in (
            *(st.put_record(store_id, f"w{cycle}-{i}", Body(b"y" * 300), "text/plain", None) for i in range(4)),
            *(st.list_keys(store_id, KeySelection(), None, 1000) for _ in range(3)),
            *(count() for _ in range(3)),
            snapshot(),
            archive(),
        )]
        await asyncio.sleep(rnd.uniform(0, 0.02))
        for task in work:
            if rnd.random() < 0.5:
                task.cancel()
        await asyncio.sleep(rnd.choice([0, 0, 0.001]))
        await st.aclose()
        for outcome in await asyncio.gather(*work, return_exceptions=True):
            # what a request may get from a storage closing under it: its cancel, or "storage is closed"
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError | StorageUnavailable
            ):
                raise AssertionError(f"cycle {cycle}: {outcome!r}") from outcome
    raw.close()
    print("ok")
