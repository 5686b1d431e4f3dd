"""``ItemSnapshot.joined`` as the interface gives it to a backend that does not override it (storage/datasets.py):
built on the backend's ``items`` alone, it keeps the byte budget ``size`` and the ``batch`` bound as the SQLite and
PostgreSQL overrides do (tests/storage/test_dataset_joined_budget.py). The snapshot here is the smallest backend:
``items`` over a list, cut as the interface says (at most ``batch`` items and about BATCH_BYTES a batch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openkvs.storage.datasets import BATCH_BYTES, BLOCK, DatasetInfo, ItemSnapshot

pytestmark = pytest.mark.anyio

SIZE = 64 * 1024


class ListSnapshot(ItemSnapshot):
    def __init__(self, items: list[bytes]) -> None:
        self._items = items
        self.info = DatasetInfo(len(items), len(items), sum(map(len, items)), [])

    async def items(self, start: int, stop: int, *, desc: bool = False, batch: int = BLOCK) -> AsyncIterator[list[bytes]]:
        lo, hi = max(start, 0), min(stop, len(self._items))
        order = list(range(hi - 1, lo - 1, -1)) if desc else list(range(lo, hi))
        out: list[bytes] = []
        size = 0
        for i in order:
            out.append(self._items[i])
            size += len(self._items[i])
            if len(out) == batch or size >= BATCH_BYTES:
                yield out
                out, size = [], 0
        if out:
            yield out

    async def block_paths(self, first: int, last: int) -> list[tuple[int, list[Any]]]:
        return []


def stored_items() -> list[bytes]:
    """Small items with runs of big ones (some past the budget alone)."""
    items = []
    for i in range(3000):
        if 300 <= i < 310 or i in (700, 701, 1200):
            pad = b"b" * (SIZE + 1000 * (i % 3))
        elif 900 <= i < 960:
            pad = b"m" * 20_000
        else:
            pad = b"s" * (500 + i % 7)
        items.append(b'{"i":%d,"pad":"%s"}' % (i, pad))
    return items


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("sep", [b"\n", b",\n"])
async def test_default_pieces_keep_to_the_budget_and_hold_the_items_in_order(desc: bool, sep: bytes) -> None:
    items = stored_items()
    for start, stop in [(0, 10**9), (250, 1300)]:
        pieces = [p async for p in ListSnapshot(items).joined(start, stop, desc=desc, batch=4000, sep=sep, size=SIZE)]
        want = items[start : min(stop, len(items))]
        if desc:
            want = want[::-1]
        assert all(pieces), "no empty pieces"
        assert sep.join(pieces) == sep.join(want)
        for p in pieces:  # (the items hold no raw newline: a piece without sep is one item)
            assert len(p) <= SIZE or sep not in p, (len(p), "a piece of several items past the budget")
        assert len(pieces) < len(want) // 10, "the small items come many to a piece"


async def test_default_pieces_hold_at_most_batch_items() -> None:
    items = [b'{"i":%d}' % i for i in range(1000)]
    pieces = [p async for p in ListSnapshot(items).joined(0, 1000, batch=64, size=SIZE)]
    assert [p.count(b"\n") + 1 for p in pieces] == [64] * 15 + [40]
    assert b"\n".join(pieces) == b"\n".join(items)
