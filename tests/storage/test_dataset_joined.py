"""``ItemSnapshot.joined`` on both backends (storage/datasets.py): the batches of ``items``, each joined by the
separator, as the backend reads them (SQLite joins them itself with group_concat): the same bytes, in
either direction, from any range, and batches still cut at BATCH_BYTES for big items."""

from __future__ import annotations

import json

import pytest

from openkvs.storage.base import Storage
from openkvs.storage.datasets import BATCH_BYTES
from openkvs.storage.postgres import datasets as pg
from openkvs.storage.postgres.datasets import PgItemSnapshot
from openkvs.storage.sqlite.datasets import SQLiteItemSnapshot

from .test_datasets import make_push, new_dataset, union

pytestmark = pytest.mark.anyio


async def both(storage: Storage, sid: str, start: int, stop: int, desc: bool, batch: int, sep: bytes):
    async with storage.datasets.snapshot(sid) as snap:
        rows = [r async for b in snap.items(start, stop, desc=desc, batch=batch) for r in b]
        joined = [j async for j in snap.joined(start, stop, desc=desc, batch=batch, sep=sep)]
    return rows, joined


async def test_joined_batches_are_the_items_joined(storage: Storage) -> None:
    sid = await new_dataset(storage)
    items = [{"i": i, "s": "é\n\"x\"" * (i % 5), "n": None, "a": [i, 1.5]} for i in range(2500)]
    await storage.datasets.push(sid, make_push(items), union)
    await storage.datasets.push(sid, make_push([{"later": True}]), union)  # a second push: one more item
    for start, stop, desc, batch in [(0, 10**9, False, 1000), (0, 10**9, True, 1000), (17, 2400, False, 333),
                                     (17, 2400, True, 333), (2499, 2501, False, 7), (5, 5, False, 10)]:
        for sep in (b"\n", b",\n"):
            rows, joined = await both(storage, sid, start, stop, desc, batch, sep)
            assert all(joined), "no empty pieces"
            assert sep.join(joined) == sep.join(rows)
            assert len(joined) == -(-len(rows) // batch)  # whole batches: as many pieces as items() has batches
    rows, _ = await both(storage, sid, 0, 10**9, True, 1000, b"\n")
    assert [json.loads(r).get("i") for r in rows[:3]] == [None, 2499, 2498]


async def test_joined_batches_stop_at_a_byte_budget(storage: Storage) -> None:
    sid = await new_dataset(storage)
    big = "x" * (3 * 1024 * 1024)
    await storage.datasets.push(sid, make_push([{"i": i, "pad": big if i % 2 else "s"} for i in range(9)]), union)
    for desc in (False, True):
        rows, joined = await both(storage, sid, 0, 9, desc, 1000, b"\n")
        assert b"\n".join(joined) == b"\n".join(rows)
        assert all(len(j) < BATCH_BYTES + len(big) + 100 for j in joined), [len(j) for j in joined]
        assert len(joined) >= 2


async def test_pieces_of_buffers_are_the_pieces_joined(storage: Storage) -> None:
    """``buffers=True``: a piece may come as the list of what the backend read (SQLite's rows and the b"\\n"
    between them, PostgreSQL's COPY data), never copied into one object; its concatenation is the piece."""
    sid = await new_dataset(storage)
    for k in range(4):  # pushes of their own: rows of several pushes in one piece
        await storage.datasets.push(sid, make_push([{"i": k * 600 + i, "pad": "p" * (i % 900)} for i in range(600)]),
                                    union)
    listed = 0
    async with storage.datasets.snapshot(sid) as snap:
        for start, stop, desc in [(0, 10**9, False), (0, 10**9, True), (33, 2001, False), (33, 2001, True)]:
            for sep in (b"\n", b",\n"):
                kw = {"desc": desc, "batch": 4000, "sep": sep, "size": 256 * 1024}
                plain = [p async for p in snap.joined(start, stop, **kw)]  # type: ignore[arg-type]
                pieces = [p async for p in snap.joined(start, stop, buffers=True, **kw)]  # type: ignore[arg-type]
                assert [b"".join(p) if isinstance(p, list) else p for p in pieces] == plain, (start, stop, desc, sep)
                listed += sum(isinstance(p, list) for p in pieces)
                assert all(isinstance(p, bytes) for p in plain)
    if isinstance(snap, SQLiteItemSnapshot) or (isinstance(snap, PgItemSnapshot) and pg._copyrows is not None):
        assert listed, "no piece came as buffers"
