"""SQLite's ``ItemSnapshot.joined`` reads the database file through a memory map, in statements of about
REMAP_BYTES with the map made again between them (storage/sqlite/datasets.py, ``_mapped_parts``). Here the map is
made again after every row or so, while other connections push to the dataset and checkpoint the WAL into the
database file under the map: the export must still be exactly the snapshot's items, in either direction and from
any range, and the connection must end unmapped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openkvs.storage.base import StorageDamaged
from openkvs.storage.sqlite import SQLiteStorage
from openkvs.storage.sqlite import datasets as sqlite_datasets

from .test_datasets import make_push, new_dataset, union

pytestmark = pytest.mark.anyio

ITEMS = 3000  # of ~2 KiB: packed rows of ~256 KiB, each a chain of overflow pages


def items(tag: str, count: int) -> list[dict[str, object]]:
    return [{"i": i, "tag": tag, "pad": f"{tag}{i:05d}" * 300} for i in range(count)]


@pytest.mark.parametrize(
    "start, stop, desc",
    [(0, 10**9, False), (0, 10**9, True), (17, 2900, False), (17, 2900, True), (1000, 1001, False)],
)
async def test_a_mapped_export_reads_its_snapshot_while_others_push_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: int, stop: int, desc: bool
) -> None:
    remaps: list[int] = []
    remap = sqlite_datasets.remap
    monkeypatch.setattr(sqlite_datasets, "REMAP_BYTES", 100_000)
    monkeypatch.setattr(sqlite_datasets, "remap", lambda conn: (remaps.append(1), remap(conn)))
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        sid = await new_dataset(st)
        first = make_push(items("a", ITEMS))
        await st.datasets.push(sid, first, union)
        want = first.items[start:stop]
        if desc:
            want = want[::-1]
        pieces = []
        async with st.datasets.snapshot(sid) as snap:
            async for piece in snap.joined(start, stop, desc=desc, batch=4000, size=64 * 1024):
                pieces.append(piece)
                # more items, then the WAL copied into the database file: pages the snapshot's map may cover
                await st.datasets.push(sid, make_push(items("b", 50)), union)
                with sqlite3.connect(st.db_path) as other:
                    other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            mapped_after = snap._conn.execute("PRAGMA mmap_size").fetchone()[0]
        assert b"\n".join(pieces) == b"\n".join(want)
        assert mapped_after == 0
        # made again about every 100 kB read: a row of ~256 KiB each time, or none for a range inside one row
        rows_read = sum(map(len, want)) // (256 * 1024)
        assert len(remaps) >= rows_read - 1, (len(remaps), rows_read)


@pytest.mark.parametrize("desc", [False, True])
async def test_a_row_missing_in_the_middle_is_damage_after_the_items_before_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, desc: bool
) -> None:
    """A damaged table, one packed row gone from the middle: the read gives the items up to the gap, each once,
    and then raises StorageDamaged (an export cuts its transfer there rather than end a document that looks
    complete). Going on from a count of the items read, the next statement after a remap had started that many
    items past the range's start, before the gap: ascending, the rows read already came again (3,000 items out, 128
    of them twice); and the gap used to end the read as if all were read."""
    monkeypatch.setattr(sqlite_datasets, "REMAP_BYTES", 100_000)
    async with SQLiteStorage(tmp_path / "d", background=False) as st:
        sid = await new_dataset(st)
        push = make_push(items("a", ITEMS))
        await st.datasets.push(sid, push, union)
        with sqlite3.connect(st.db_path) as db:
            found = db.execute("SELECT idx FROM dataset_items WHERE store_id = ? ORDER BY idx", (sid,))
            rows = [idx for (idx,) in found]
            gone = rows[len(rows) // 2]
            db.execute("DELETE FROM dataset_items WHERE store_id = ? AND idx = ?", (sid, gone))
        gone_first = rows[len(rows) // 2 - 1] + 1
        pieces = []
        async with st.datasets.snapshot(sid) as snap:
            with pytest.raises(StorageDamaged, match=f"dataset {sid}: its items"):
                async for piece in snap.joined(0, 10**9, desc=desc, batch=4000, size=64 * 1024):
                    pieces.append(piece)
            with pytest.raises(StorageDamaged):  # (the other way through: batches of items)
                async for _ in snap.items(0, 10**9, desc=desc, batch=1000):
                    pass
        got = b"\n".join(pieces).split(b"\n")
        want = push.items[gone + 1 :][::-1] if desc else push.items[:gone_first]
        assert len(got) <= len(want) and got == want[: len(got)]  # (the pieces before the failure: no item twice)
