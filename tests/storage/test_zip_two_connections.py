"""A SQLite archive of small records read on two connections in turns (snapshot.py ``_turns``): the bytes are the
old, entry-by-entry writer's (tests/zip_reference.py), whole and in random ranges, when every batch comes whole,
when a batch in the middle can't (a file, keys of another length: the rest is read on the snapshot's own
connection), and when the store was written between the snapshot's start and the second connection's: then the
second one is not used, and the archive holds the records as they were when the snapshot began."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openkvs.api.download import _archive_bytes, _archive_size
from openkvs.storage.base import KeySelection
from openkvs.storage.sqlite import SQLiteStorage
from openkvs.storage.sqlite.snapshot import SQLiteSnapshot
from tests import zip_reference

from .conftest import Body
from .test_zip_kept import Rec, check_archive, set_times, times

pytestmark = pytest.mark.anyio


async def fill_small(st: SQLiteStorage, rnd: random.Random, n: int, odd: str | None = None) -> tuple[str, list[Rec]]:
    """``n`` records of up to 200 bytes keyed k%08d; ``odd``: one record in the middle that breaks a batch's run
    ("file": 70 KiB, kept in a file; "key": a key of another length)."""
    user = await st.create_user(f"u{rnd.randrange(1 << 30)}")
    store = await st.create_store(user.id, "s", None, "k")
    recs = [Rec(f"k{i:08d}", rnd.randbytes(rnd.randint(0, 200))) for i in range(n)]
    if odd == "file":
        recs[n // 2].data = rnd.randbytes(70 * 1024)
    elif odd == "key":
        recs.insert(n // 2 + 1, Rec(f"k{n // 2:08d}x", rnd.randbytes(50)))  # (after k...n//2: key order)
    for r in recs:
        await st.put_record(store.id, r.key, Body(r.data), "application/octet-stream", None)
    return store.id, recs


def traced(connect: Callable[..., sqlite3.Connection], seen: list[tuple[int, str]]) -> Callable[..., sqlite3.Connection]:
    """``connect`` whose read-only connections add each statement they run to ``seen``, with the connection's
    number."""
    count = 0

    def traced_connect(*, readonly: bool, **kw: Any) -> sqlite3.Connection:
        nonlocal count
        conn = connect(readonly=readonly, **kw)
        if readonly:
            count += 1
            conn.set_trace_callback(lambda sql, n=count: seen.append((n, sql)))
        return conn

    return traced_connect


@pytest.mark.parametrize("odd", [None, "file", "key"])
async def test_two_connections_give_the_old_writers_bytes(tmp_path: Path, odd: str | None) -> None:
    rnd = random.Random(len(odd or ""))
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        store_id, recs = await fill_small(st, rnd, 400, odd)
        await set_times(st, store_id, recs, rnd)
        await st.fill_zip_heads()  # (a time set behind its back drops the header)
        want = zip_reference.build_archive(await times(st, store_id, recs))
        seen: list[tuple[int, str]] = []
        st._db.connect = traced(st._db.connect, seen)  # type: ignore[method-assign]
        for _ in range(3):  # batches of 5 or 37 records, at random
            seen.clear()
            kinds = await check_archive(st, store_id, want, rnd)
            assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
            # the snapshot's own connection and its second one both read batches of kept headers
            assert len({n for n, sql in seen if "group_concat(d, h)" in sql}) == 2, seen[:5]
            if odd is None:  # every batch whole: the central directory too
                assert len({n for n, sql in seen if "group_concat(zip_head" in sql}) == 2, seen[:5]


async def test_a_write_after_the_snapshot_keeps_the_second_connection_out(tmp_path: Path) -> None:
    rnd = random.Random(3)
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        store_id, recs = await fill_small(st, rnd, 300)
        want = zip_reference.build_archive(await times(st, store_id, recs))
        async with st.snapshot(store_id, KeySelection()) as snap:
            assert isinstance(snap, SQLiteSnapshot)
            snap.kept_rows = 16
            # written after the snapshot began, before its second connection opens: other bytes of the same size
            # in the second batch, and a record more
            late = recs[20]
            await st.put_record(store_id, late.key, Body(bytes(255 - b for b in late.data)), "text/plain", None)
            await st.put_record(store_id, "k00000020a", Body(b"new"), "text/plain", None)
            # the archive holds the records as the snapshot saw them
            size = await _archive_size(snap)
            assert size == len(want)
            assert b"".join([c async for c in _archive_bytes(snap, 0, size)]) == want
            assert snap._second is None  # (refused: it would have seen the writes)


async def test_rows_visited_out_of_key_order_are_not_laid_out(tmp_path: Path) -> None:
    """The batches' aggregates have no ORDER BY (it cost a tenth of them): SQLite visits the rows in the primary
    key's order. Made to visit them the other way round (PRAGMA reverse_unordered_selects), a batch's last
    header does not match its end, and it is read in key order another way (as records, or its central
    headers from rows read with ORDER BY): the same bytes."""
    rnd = random.Random(4)
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        store_id, recs = await fill_small(st, rnd, 300)
        want = zip_reference.build_archive(await times(st, store_id, recs))
        real = st._db.connect

        def reversed_scans(*, readonly: bool, **kw: Any) -> sqlite3.Connection:
            conn = real(readonly=readonly, **kw)
            if readonly:
                conn.execute("PRAGMA reverse_unordered_selects = 1")
            return conn

        st._db.connect = reversed_scans  # type: ignore[method-assign]
        kinds = await check_archive(st, store_id, want, rnd)
        assert "LocalBlock" not in kinds and "records" in kinds, kinds
