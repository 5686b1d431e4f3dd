"""No statement is left in progress on the writer connection between transactions. A write statement begun but
not run to its end (``... RETURNING`` read in part, ``PRAGMA wal_checkpoint``), whose cursor something still
refers to, makes SQLite refuse every COMMIT of that connection ('cannot commit transaction - SQL statements in
progress'), even after a ROLLBACK: every write of the server failed with a 500 for as long as the cursor lived.
Seen once in CI, in the request-queue schemathesis run: write_small's checkpoint returned the PRAGMA's cursor,
which the worker thread's work item still held for a moment after the event loop had gone on to the next commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from openkvs.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio


def _insert(conn: sqlite3.Connection, x: int) -> None:
    conn.execute("INSERT INTO scratch VALUES (?)", (x,))


def _returning_in_part(conn: sqlite3.Connection) -> sqlite3.Cursor:
    cur = conn.execute("INSERT INTO scratch VALUES (10), (11), (12) RETURNING x")
    cur.fetchone()  # one row of three read: the INSERT's statement is still in progress
    return cur


def _fails_with_a_cursor_open(conn: sqlite3.Connection) -> None:
    cur = conn.execute("INSERT INTO scratch VALUES (20), (21) RETURNING x")
    cur.fetchone()
    raise ValueError("refused after the insert")  # the traceback keeps this frame, and ``cur`` in it


async def _rows(st: SQLiteStorage) -> list[Any]:
    return await st._db.read(lambda conn: [r[0] for r in conn.execute("SELECT x FROM scratch ORDER BY x")])


@pytest.fixture
async def st(tmp_path: Path) -> Any:
    async with SQLiteStorage(tmp_path / "d", background=False) as storage:
        await storage._db.write(lambda conn: conn.execute("CREATE TABLE scratch(x)").fetchall())
        yield storage


async def test_the_next_write_commits_while_a_checkpoints_cursor_is_still_referenced(st: SQLiteStorage) -> None:
    kept = await st._db.write_raw(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)"))
    await st._db.write(_insert, 1)  # through the writer thread
    await st._db.write_small(_insert, 2)  # on the event loop
    assert await _rows(st) == [1, 2]
    del kept


@pytest.mark.parametrize("way", ["write", "write_small"])
async def test_a_returning_cursor_handed_out_leaves_the_writer_usable(st: SQLiteStorage, way: str) -> None:
    kept = await getattr(st._db, way)(_returning_in_part)
    await st._db.write(_insert, 1)
    assert await _rows(st) == [1, 10, 11, 12]  # the whole INSERT committed, and the next write too
    with pytest.raises(sqlite3.ProgrammingError):  # the rest of its rows are not there to read any more
        kept.fetchall()


@pytest.mark.parametrize("way", ["write", "write_small", "group"])
async def test_a_write_failing_with_a_cursor_open_leaves_the_writer_usable(st: SQLiteStorage, way: str) -> None:
    db = st._db
    if way == "group":  # queued behind a running write: committed in one transaction with another write
        results = await asyncio.gather(
            db.write(_insert, 0), db.write(_fails_with_a_cursor_open), db.write(_insert, 1), return_exceptions=True
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ValueError)
        caught = results[1]
    else:
        with pytest.raises(ValueError) as info:
            await getattr(db, way)(_fails_with_a_cursor_open)
        caught = info.value
    await db.write(_insert, 2)  # while the exception (and its traceback) is still alive here
    await db.write_small(_insert, 3)
    assert caught is not None
    assert await _rows(st) == ([0, 1, 2, 3] if way == "group" else [2, 3])  # nothing of the failed write
