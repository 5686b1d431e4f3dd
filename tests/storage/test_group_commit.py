"""SQLite's group commit (connections.Database.write): concurrent writes share transactions, each still answered
only after its own commit, and one write that fails leaves the others of its group stored."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import anyio
import pytest

from openkvs.storage.base import NotFound
from openkvs.storage.sqlite import SQLiteStorage

from .conftest import Body

pytestmark = pytest.mark.anyio


def wal_commits(db: Path) -> int:
    """Commit frames in the WAL file (SQLite's file format: a frame whose "database size after commit" field is
    not zero ends a transaction), counting only frames of the current WAL generation (salts as in the header)."""
    wal = (db.parent / (db.name + "-wal")).read_bytes()
    if len(wal) < 32:
        return 0
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    commits, pos = 0, 32
    while pos + 24 + page_size <= len(wal):
        header = wal[pos : pos + 24]
        if header[8:16] != salts:
            break
        if struct.unpack(">I", header[4:8])[0] != 0:
            commits += 1
        pos += 24 + page_size
    return commits


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        user = await st.create_user("u")
        store = await st.create_store(user.id, "s", None, "k" * 32)
        db = tmp_path / "data" / "openkvs.sqlite3"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL: only the writes below in it
        conn.close()
        n = 64

        async def put(i: int) -> None:
            await st.put_record(store.id, f"k{i:03d}", Body(b"x" * (i + 1)), "text/plain", None)

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(put, i)
        commits = wal_commits(db)
        assert 1 <= commits < n, f"{n} concurrent writes took {commits} commits"
        for i in range(n):
            rec = await st.get_record(store.id, f"k{i:03d}")
            assert rec is not None and rec.size == i + 1
        found = await st.get_store(store.id)
        assert found is not None and found.stats.storage_bytes == sum(range(1, n + 1))


async def test_a_failed_write_leaves_its_group_stored(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "data", background=False) as st:
        user = await st.create_user("u")
        keep = await st.create_store(user.id, "keep", None, "k" * 32)
        gone = await st.create_store(user.id, "gone", None, "k" * 32)
        assert await st.delete_store(gone.id)
        outcomes: dict[str, str] = {}

        async def put(store_id: str, key: str) -> None:
            try:
                await st.put_record(store_id, key, Body(b"data"), "text/plain", None)
                outcomes[key] = "stored"
            except NotFound:
                outcomes[key] = "not found"

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(put, gone.id if i % 7 == 3 else keep.id, f"k{i:02d}")
        for i in range(40):
            key = f"k{i:02d}"
            if i % 7 == 3:
                assert outcomes[key] == "not found"
            else:
                assert outcomes[key] == "stored"
                rec = await st.get_record(keep.id, key)
                assert rec is not None and rec.size == 4
        found = await st.get_store(keep.id)
        assert found is not None and found.stats.storage_bytes == 4 * sum(1 for i in range(40) if i % 7 != 3)
