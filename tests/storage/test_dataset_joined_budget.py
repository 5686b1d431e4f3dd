"""``ItemSnapshot.joined`` with a byte budget (``size``): what a json or jsonl export of unchanged items reads, in
pieces of about 1 MiB. On both backends the pieces are the snapshot's items in order, each piece within the budget
(under twice the budget unless it is a single item bigger than that), whatever mix of small and big items a range holds (SQLite: a joined
value past the budget fails its statement and the piece is read again smaller; PostgreSQL: a range whose lengths
add up past it is read by the running sum instead), and the snapshot stays usable and unchanged after those."""

from __future__ import annotations

import json

import pytest

from openkvs.storage.base import Storage

from .test_datasets import make_push, new_dataset, union

pytestmark = pytest.mark.anyio

SIZE = 64 * 1024


def mixed_items() -> list[dict[str, object]]:
    """Small items with runs of big ones (some past the budget alone), so that a count learned on one stretch
    is wrong for the next."""
    items: list[dict[str, object]] = []
    for i in range(1500):
        if 300 <= i < 310 or i in (700, 701, 1200):
            pad = "b" * (SIZE + 1000 * (i % 3))  # bigger than the budget alone
        elif 900 <= i < 960:
            pad = "m" * 20_000  # three fit in a piece, four don't
        else:
            pad = "é\n\"s\"" * (i % 7)
        items.append({"i": i, "pad": pad})
    return items


async def test_pieces_keep_to_the_budget_and_hold_the_items_in_order(storage: Storage) -> None:
    sid = await new_dataset(storage)
    items = mixed_items()
    await storage.datasets.push(sid, make_push(items), union)
    stored = make_push(items).items
    for start, stop, desc in [(0, 10**9, False), (0, 10**9, True), (250, 1300, False), (250, 1300, True)]:
        for sep in (b"\n", b",\n"):
            async with storage.datasets.snapshot(sid) as snap:
                pieces = [p async for p in snap.joined(start, stop, desc=desc, batch=4000, sep=sep, size=SIZE)]
            want = stored[start : min(stop, len(stored))]
            if desc:
                want = want[::-1]
            assert all(pieces), "no empty pieces"
            assert sep.join(pieces) == sep.join(want)
            for p in pieces:  # (stored items hold no raw newline: a piece without sep is one item)
                assert len(p) < 2 * SIZE or sep not in p, (len(p), "a piece of several items past the bound")
            assert sum(len(p) <= SIZE for p in pieces) > len(pieces) // 2, "most pieces within the budget"
            # the small items do come many to a piece (no piece per item)
            assert len(pieces) < len(want) // 10


async def test_the_snapshot_is_unchanged_after_pieces_read_again(storage: Storage) -> None:
    sid = await new_dataset(storage)
    items = mixed_items()
    await storage.datasets.push(sid, make_push(items), union)
    async with storage.datasets.snapshot(sid) as snap:
        first = [p async for p in snap.joined(0, 10**9, batch=4000, size=SIZE)]
        await storage.datasets.push(sid, make_push([{"later": True}]), union)  # not in this snapshot
        again = [r async for b in snap.items(0, 10**9) for r in b]
        pieces = [p async for p in snap.joined(0, 10**9, desc=True, batch=4000, size=SIZE)]
    assert b"\n".join(first) == b"\n".join(again) == b"\n".join(make_push(items).items)
    assert b"\n".join(pieces) == b"\n".join(reversed(again))
    assert json.loads(again[-1])["i"] == 1499
