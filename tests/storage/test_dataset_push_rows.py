"""Pushes of any size on both backends: every item at its own index, in order, whatever the push's length (SQLite
inserts a push's rows by statements of 512, 256, ... 1 rows) and wherever it starts in a block."""

from __future__ import annotations

import pytest

from openkvs.storage.base import Storage
from openkvs.storage.datasets import BLOCK

from .test_datasets import make_push, new_dataset, read_all, union

pytestmark = pytest.mark.anyio

SIZES = [1, 2, 3, 511, 512, 513, 1, 1023, 1024, 1025, 7, 2000]


async def test_pushes_of_every_size_keep_each_item_at_its_index(storage: Storage) -> None:
    sid = await new_dataset(storage)
    pushed: list[dict[str, object]] = []
    for size in SIZES:
        batch = [{"i": len(pushed) + k, "s": "é" * (k % 3)} for k in range(size)]
        assert await storage.datasets.push(sid, make_push(batch), union) == len(pushed)
        pushed += batch
    info = (await storage.datasets.info([sid]))[sid]
    assert info.item_count == len(pushed)
    assert info.bytes == sum(len(b) for b in make_push(pushed).items)
    assert await read_all(storage, sid) == pushed
    assert await read_all(storage, sid, BLOCK - 3, BLOCK + 600, desc=True) == pushed[BLOCK - 3 : BLOCK + 600][::-1]
