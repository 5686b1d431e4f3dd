"""SQLite's WAL checkpoints run in a thread of their own (openkvs/storage/sqlite/checkpoints.py), not inside the
writer's COMMITs: writes go on while one runs, the WAL is copied into the database once it holds FRAMES that the
file lacks, and closing waits for a checkpoint that runs, then removes the WAL as before."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from openkvs.storage.sqlite import SQLiteStorage
from openkvs.storage.sqlite import checkpoints as ck

from .test_datasets import make_push, new_dataset, union

pytestmark = pytest.mark.anyio

PUSH = [{"i": i, "pad": "p" * 400} for i in range(1000)]  # ~110 pages of the WAL


def checkpointed_by_sqlite(db: Path) -> tuple[int, int]:
    """A PASSIVE checkpoint from a connection of the test's: (frames in the WAL, frames it copied)."""
    conn = sqlite3.connect(db)
    try:
        _, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log), int(copied)
    finally:
        conn.close()


async def until(check, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await anyio.sleep(0.05)


async def test_writes_go_on_while_a_checkpoint_runs_and_the_wal_is_copied_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started = threading.Event()
    run = ck.Checkpoints._run

    def held(self: ck.Checkpoints) -> None:  # a checkpoint that takes as long as the test wants
        started.set()
        release.wait(60)
        run(self)

    monkeypatch.setattr(ck.Checkpoints, "_run", held)
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        checkpoints = st._db._checkpoints
        assert checkpoints is not None
        sid = await new_dataset(st)
        pushes = 0
        while not started.is_set():  # until the WAL holds FRAMES the file lacks, and a checkpoint begins
            await st.datasets.push(sid, make_push(PUSH), union)
            pushes += 1
            assert pushes < 100
        lacking = checkpoints.lacking()
        assert lacking is not None and lacking >= ck.FRAMES
        for _ in range(5):  # the checkpoint holds, the writes don't wait for it
            await st.datasets.push(sid, make_push(PUSH), union)
        assert checkpoints.lacking() > lacking  # type: ignore[operator]
        release.set()
        await until(lambda: (checkpoints.lacking() or 0) < ck.FRAMES)
        async with st.datasets.snapshot(sid) as snap:
            assert snap.info.item_count == (pushes + 5) * len(PUSH)


async def test_what_it_reads_of_the_wal_index_is_what_sqlite_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck, "FRAMES", 10**9)  # no checkpoint of ours: the frames stay lacking
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        checkpoints = st._db._checkpoints
        assert checkpoints is not None
        sid = await new_dataset(st)
        for _ in range(3):
            await st.datasets.push(sid, make_push(PUSH), union)
        ours = checkpoints.lacking()
        assert ours is not None and ours > 300  # (three pushes of ~110 pages)
        # none copied yet: the WAL's frames are what the file lacks; SQLite's checkpoint copies them all
        assert checkpointed_by_sqlite(tmp_path / "data" / "openkvs.sqlite3") == (ours, ours)
        assert checkpoints.lacking() == 0


async def test_closing_waits_for_a_running_checkpoint_and_removes_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    run = ck.Checkpoints._run

    def slow(self: ck.Checkpoints) -> None:
        started.set()
        time.sleep(0.5)  # (still running when close begins)
        run(self)

    monkeypatch.setattr(ck.Checkpoints, "_run", slow)
    db = tmp_path / "data" / "openkvs.sqlite3"
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        sid = await new_dataset(st)
        while not started.is_set():
            await st.datasets.push(sid, make_push(PUSH), union)
    assert not db.with_name(db.name + "-wal").exists() and not db.with_name(db.name + "-shm").exists()
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        async with st.datasets.snapshot(sid) as snap:
            assert snap.info.item_count % len(PUSH) == 0 and snap.info.item_count >= 10 * len(PUSH)



async def test_a_steady_stream_of_writes_keeps_the_wal_short(tmp_path: Path) -> None:
    """Checkpoints beside the writes never catch up with a writer that goes on: before the writer copied the rest
    itself, the WAL grew by every push (600 MB after 1,200 pushes of 1,000 items)."""
    db = tmp_path / "data" / "openkvs.sqlite3"
    wal = db.with_name(db.name + "-wal")
    pushes = 4 * ck.RESTART_FRAMES // 100  # (~110 frames each: four times the length at which the WAL begins again)
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        sid = await new_dataset(st)
        longest = 0
        for _ in range(pushes):
            await st.datasets.push(sid, make_push(PUSH), union)
            longest = max(longest, wal.stat().st_size)
        page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
        # (generous: a checkpoint beside the writes that is running when the WAL reaches its length holds the copy
        # off until it ends, and the pushes go on meanwhile)
        assert longest < 2 * ck.RESTART_FRAMES * (24 + page)
        async with st.datasets.snapshot(sid) as snap:
            assert snap.info.item_count == pushes * len(PUSH)
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        async with st.datasets.snapshot(sid) as snap:
            assert snap.info.item_count == pushes * len(PUSH)


async def test_a_reader_holding_old_frames_keeps_them_and_the_wal_begins_again_after_it(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        checkpoints = st._db._checkpoints
        assert checkpoints is not None

        def frames() -> int:  # the WAL's frames, from its index (as the test above shows, what SQLite says)
            index = checkpoints._index()
            assert index is not None
            return index[0]

        sid = await new_dataset(st)
        await st.datasets.push(sid, make_push(PUSH), union)
        async with st.datasets.snapshot(sid) as held:  # an export's snapshot: its frames must stay readable
            pushes = 0
            while frames() < ck.RESTART_FRAMES + 1000:  # (the writer's copy stops at the frames the reader needs)
                await st.datasets.push(sid, make_push(PUSH), union)
                pushes += 1
                assert pushes < 200
            assert held.info.item_count == len(PUSH)
            read = [p async for p in held.joined(0, len(PUSH))]  # (its items, read while the writes went on)
            assert b"".join(read).count(b"\n") == len(PUSH) - 1
        more = 0
        while frames() >= ck.RESTART_FRAMES:  # the reader gone: a commit copies the rest, a write begins it again
            await st.datasets.push(sid, make_push(PUSH), union)
            more += 1
            assert more < 50
        async with st.datasets.snapshot(sid) as snap:
            assert snap.info.item_count == (1 + pushes + more) * len(PUSH)


async def test_the_writers_copy_never_runs_on_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small write commits on the event loop thread when the writer is idle (connections.py write_small): the
    copy to the WAL's end (and its fsyncs, 12-19 ms) is the writer thread's, and a WAL of small writes alone
    begins again too (once it is long, the next write goes through the writer thread)."""
    from .test_queues import new_queue, req

    monkeypatch.setattr(ck, "FRAMES", 10**9)  # no checkpoint beside the writes: only the writer's copy
    monkeypatch.setattr(ck, "RESTART_FRAMES", 20)
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        conn, checkpoints = st._db._wconn, st._db._checkpoints
        assert conn is not None and checkpoints is not None
        ran: list[tuple[str, str]] = []  # (thread, statement) of the writer connection's checkpoints and commits
        conn.set_trace_callback(
            lambda sql: ran.append((threading.current_thread().name, sql)) if sql == "COMMIT" or "checkpoint" in sql
            else None
        )
        loop = threading.current_thread().name
        qs, qid = await new_queue(st)
        longest = 0
        for n in range(100):  # small writes alone, each a few frames
            await qs.add_requests(qid, [req(f"http://x/{n}", pad="q" * 3000)], forefront=False, client_key="k")
            longest = max(longest, (checkpoints._index() or (0, 0))[0])
        conn.set_trace_callback(None)
        assert "COMMIT" in {sql for thread, sql in ran if thread == loop}, "(the test's writes took the loop's way)"
        copies = [thread for thread, sql in ran if "checkpoint" in sql]
        assert copies and loop not in copies
        assert longest < 3 * ck.RESTART_FRAMES
