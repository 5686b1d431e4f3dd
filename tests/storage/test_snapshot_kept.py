"""SQLite snapshots reuse the connections of ended ones (connections.SNAPSHOTS_KEPT: a connect costs ~0.2 ms, a
dataset page read opens a snapshot): a kept connection must see what was pushed after its last snapshot, whatever
state that snapshot ended in (read to the end, left mid-read, or failed), and none may stay open after close."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from openkvs.storage.base import NotFound
from openkvs.storage.sqlite import SQLiteStorage, connections

from .test_datasets import make_push, new_dataset, union


def test_a_kept_connection_sees_every_push_since_its_last_snapshot() -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with SQLiteStorage(Path(tmp) / "data", background=False) as storage:
                sid = await new_dataset(storage)
                seen: list[int] = []
                used: set[int] = set()
                for round_ in range(3 * connections.SNAPSHOTS_KEPT):
                    await storage.datasets.push(sid, make_push([{"i": round_, "k": k} for k in range(300)]), union)
                    async with storage.datasets.snapshot(sid) as snap:
                        used.add(id(snap._conn))  # type: ignore[attr-defined]
                        seen.append(snap.info.item_count)
                        async for _rows in snap.items(0, 10**9, batch=100):
                            if round_ % 3 == 1:
                                break  # left mid-read: the next snapshot on this connection starts afresh
                        if round_ % 3 == 2:
                            got = [r async for rows in snap.items(0, 10**9) for r in rows]
                            assert len(got) == 300 * (round_ + 1)
                    try:  # a snapshot that fails (no such dataset) gives its connection back too
                        async with storage.datasets.snapshot("no-such-dataset-x"):
                            pass
                    except NotFound:
                        pass
                assert seen == [300 * (r + 1) for r in range(3 * connections.SNAPSHOTS_KEPT)]
                assert len(used) <= 2  # (kept and reused: not a connection per snapshot)
                kept = list(storage._db._kept)  # type: ignore[attr-defined]
                assert 1 <= len(kept) <= connections.SNAPSHOTS_KEPT
            for conn in kept:  # closed with the storage
                try:
                    conn.execute("SELECT 1")
                except Exception as exc:
                    assert "closed" in str(exc)
                else:
                    raise AssertionError("a kept connection is still open after close")

    anyio.run(run)
