"""Dataset items several to a row (storage/datasets.py, ITEMS_PER_ROW and ROW_BYTES) on SQLite: a push's rows, and
reads of any range of a dataset whose rows hold any number of items, against a plain Python list of the items.

The property test shrinks the row bounds (a few items, a few hundred bytes) so that a small dataset has many rows,
rows cut by bytes, items bigger than a row, and runs of rows of one item (what a push of one item, or a database
from before version 11, holds) next to packed ones."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkvs.storage import datasets as sd
from openkvs.storage.sqlite import SQLiteStorage
from tests.conftest import examples

from .test_datasets import make_push, new_dataset, union

SEPS = [b"\n", b"|", b"\n\n"]  # (none of them inside an item here: a piece can be split back into its items)


def item(i: int, size: int) -> dict[str, Any]:
    return {"i": i, "p": "é" * (size // 2)}  # (compact JSON of about ``size`` + 15 bytes)


def test_rows_keep_to_their_bounds_and_give_the_items_back() -> None:
    sizes = [10, 500, sd.ROW_BYTES + 7, 3, 300_000, *([400] * 700), sd.ROW_BYTES - 20, 1, 2]
    items = [json.dumps(item(i, n), separators=(",", ":"), ensure_ascii=False).encode() for i, n in enumerate(sizes)]
    rows = sd.packed_rows(items)
    assert b"\n".join(data for _, data in rows) == b"\n".join(items)
    assert sum(n for n, _ in rows) == len(items)
    for n, data in rows:
        assert n <= sd.ITEMS_PER_ROW
        assert len(data) <= sd.ROW_BYTES or n == 1, (n, len(data))
    # the rows are as long as the bounds allow: the next item would pass one of them
    first = 0
    for n, data in rows[:-1]:
        following = items[first + n]
        assert n == sd.ITEMS_PER_ROW or len(data) + 1 + len(following) > sd.ROW_BYTES
        first += n


def test_row_part_is_the_items_asked_for() -> None:
    items = [b"a0", b"b11", b"c222", b"d3333"]  # items 10 .. 13
    row = b"\n".join(items)
    for lo in range(10, 14):
        for hi in range(lo + 1, 15):
            assert sd.row_part(row, 10, 13, lo, hi) == b"\n".join(items[lo - 10 : hi - 10]), (lo, hi)
    assert sd.row_part(row, 10, 13, 10, 14) is row  # the whole row: the stored bytes themselves


pushes_st = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3, 5]),  # the push's ITEMS_PER_ROW (1: the rows of a database from before version 11)
        st.lists(st.sampled_from([0, 3, 20, 90, 200]), min_size=1, max_size=14),  # its items' sizes
    ),
    min_size=1,
    max_size=6,
)
reads_st = st.lists(
    st.tuples(
        st.integers(-2, 60),  # start
        st.integers(-2, 60),  # stop
        st.booleans(),  # desc
        st.integers(1, 9),  # batch
        st.sampled_from([1, 40, 120, 400, 10_000]),  # size of a joined piece
        st.sampled_from(SEPS),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pushes=pushes_st, reads=reads_st)
def test_reads_of_packed_rows_are_the_list_of_items(
    monkeypatch: pytest.MonkeyPatch, pushes: list[tuple[int, list[int]]], reads: list[Any]
) -> None:
    monkeypatch.setattr(sd, "ROW_BYTES", 120)  # items of 200 B are past it: rows of one

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with SQLiteStorage(Path(tmp) / "data", background=False) as storage:
                sid = await new_dataset(storage)
                pushed: list[bytes] = []
                for per_row, sizes in pushes:
                    monkeypatch.setattr(sd, "ITEMS_PER_ROW", per_row)
                    push = make_push([item(len(pushed) + k, n) for k, n in enumerate(sizes)])
                    assert await storage.datasets.push(sid, push, union) == len(pushed)
                    pushed += push.items
                info = (await storage.datasets.info([sid]))[sid]
                assert (info.item_count, info.bytes) == (len(pushed), sum(map(len, pushed)))
                async with storage.datasets.snapshot(sid) as snap:
                    for start, stop, desc, batch, size, sep in reads:
                        await check_read(snap, pushed, start, stop, desc, batch, size, sep)

    anyio.run(run)


async def check_read(
    snap: Any, pushed: list[bytes], start: int, stop: int, desc: bool, batch: int, size: int, sep: bytes
) -> None:
    want = pushed[max(start, 0) : max(stop, 0)]
    if desc:
        want = want[::-1]
    batches = [b async for b in snap.items(start, stop, desc=desc, batch=batch)]
    assert [x for b in batches for x in b] == want, (start, stop, desc, batch)
    assert all(0 < len(b) <= batch for b in batches)
    pieces = [p async for p in snap.joined(start, stop, desc=desc, batch=batch, sep=sep, size=size)]
    assert sep.join(pieces) == sep.join(want), (start, stop, desc, batch, size, sep)
    for p in pieces:
        count = len(p.split(sep))
        assert 0 < count <= batch
        assert len(p) <= size or count == 1, (len(p), size)
    # every piece but the last is full: the next item would have passed its count or its size
    at = 0
    for p in pieces[:-1]:
        at += len(p.split(sep))
        assert len(p.split(sep)) == batch or len(p) + len(sep) + len(want[at]) > size


def test_a_database_of_version_10_reads_the_same_after_the_upgrade_and_with_packed_rows_after_it(
    tmp_path: Path,
) -> None:
    """A database whose rows hold one item each (version 10: made here by its own statements), upgraded: its items
    read back identically, and pushes after it (packed rows) continue it, read right across every edge."""
    from tests.storage.conftest import UNDO_PACKED_ROWS_SQLITE

    data = tmp_path / "data"
    old = [item(i, [3, 500, 40][i % 3]) for i in range(300)]
    old_rows = make_push(old).items

    async def make() -> str:
        async with SQLiteStorage(data, background=False) as st:
            return await new_dataset(st)

    sid = anyio.run(make)
    conn = sqlite3.connect(data / "openkvs.sqlite3")
    conn.executescript(UNDO_PACKED_ROWS_SQLITE + "PRAGMA user_version = 10;")
    # version 10's push: one row per item, then the counters (the path index is not read here)
    conn.executemany(
        "INSERT INTO dataset_items(store_id, idx, data) VALUES (?, ?, ?)",
        [(sid, i, row) for i, row in enumerate(old_rows)],
    )
    conn.execute(
        "INSERT INTO dataset_counts(store_id, item_count, clean_count, bytes, fields) VALUES (?, ?, ?, ?, ?)",
        (sid, len(old), len(old), sum(map(len, old_rows)), json.dumps(["i", "p"])),
    )
    conn.commit()
    conn.close()

    async def check() -> None:
        async with SQLiteStorage(data, background=False) as st:
            assert await st.tables_version() == (11, 11)
            async with st.datasets.snapshot(sid) as snap:
                assert [x async for b in snap.items(0, 10**9) for x in b] == old_rows
                assert [p async for p in snap.joined(0, 10**9)] == [b"\n".join(old_rows)]
            new = [item(300 + i, [3, 500, 40][i % 3]) for i in range(700)]
            assert await st.datasets.push(sid, make_push(new), union) == 300
            assert await st.datasets.push(sid, make_push([item(1000, 7)]), union) == 1000
            pushed = old_rows + make_push(new).items + make_push([item(1000, 7)]).items
            info = (await st.datasets.info([sid]))[sid]
            assert (info.item_count, info.bytes) == (1001, sum(map(len, pushed)))
            async with st.datasets.snapshot(sid) as snap:
                # every start and stop around the edge between the old rows and the new, and the first new rows'
                edges = [0, 1, 298, 299, 300, 301, 427, 428, 429, 555, 556, 999, 1000, 1001]
                for start in edges:
                    for stop in edges:
                        for desc in (False, True):
                            await check_read(snap, pushed, start, stop, desc, 5, 1000, b"\n")
                for desc in (False, True):
                    await check_read(snap, pushed, 0, 1001, desc, 4000, 64 * 1024, b"|")
                    await check_read(snap, pushed, 0, 1001, desc, 333, sd.BATCH_BYTES, b"\n")

    anyio.run(check)
    conn = sqlite3.connect(data / "openkvs.sqlite3")
    rows = conn.execute("SELECT n, count(*) FROM dataset_items GROUP BY n ORDER BY n").fetchall()
    conn.close()
    assert rows[0] == (1, 301)  # the old rows and the push of one item
    assert sum(n * c for n, c in rows) == 1001 and len(rows) > 1  # the push of 700: packed rows
