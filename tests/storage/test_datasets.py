"""Dataset items on both backends (storage/datasets.py): atomic appends with dense indexes, exact counters, the
path index per block, and snapshots that neither see later pushes nor lose items to a delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from openkvs.storage.base import NotFound, Storage
from openkvs.storage.datasets import BLOCK, Push

pytestmark = pytest.mark.anyio


def union(old: list[Any], pieces: Sequence[list[Any]]) -> list[Any]:
    """An ordered union: the merge the HTTP layer passes, in its simplest form."""
    out = list(old)
    seen = set(map(json.dumps, out))
    for piece in pieces:
        for p in piece:
            if json.dumps(p) not in seen:
                seen.add(json.dumps(p))
                out.append(p)
    return out


def make_push(items: list[dict[str, Any]]) -> Push:
    keys: list[str] = []
    for it in items:
        keys += [k for k in it if k not in keys]
    return Push(
        items=[json.dumps(it, separators=(",", ":"), ensure_ascii=False).encode() for it in items],
        clean_count=sum(1 for it in items if any(not k.startswith("#") for k in it)),
        keys=keys,
        paths=[list(it) for it in items],
    )


async def new_dataset(storage: Storage) -> str:
    from openkvs.storage import base

    user = await storage.create_user("alice")
    kind = getattr(base, "DATASET", None)
    if kind is None:
        store = await storage.create_store(user.id, None, None, "k")
    else:
        store = await storage.create_store(user.id, None, None, "k", kind=kind)  # type: ignore[call-arg]
    return store.id


async def read_all(storage: Storage, sid: str, start: int = 0, stop: int = 10**9, desc: bool = False) -> list[Any]:
    async with storage.datasets.snapshot(sid) as snap:
        out: list[Any] = []
        async for batch in snap.items(start, stop, desc=desc, batch=7):
            out += [json.loads(b) for b in batch]
        return out


async def test_pushes_append_with_consecutive_indexes_and_exact_counters(storage: Storage) -> None:
    sid = await new_dataset(storage)
    assert await storage.datasets.push(sid, make_push([{"a": 1}, {"#h": 2}]), union) == 0
    assert await storage.datasets.push(sid, make_push([]), union) == 2
    assert await storage.datasets.push(sid, make_push([{"b": "é", "a": 3}]), union) == 2
    info = (await storage.datasets.info([sid]))[sid]
    assert info.item_count == 3
    assert info.clean_item_count == 2  # {"#h": 2} has only a hidden key
    assert info.fields == ["a", "#h", "b"]
    assert info.bytes == len(b'{"a":1}') + len(b'{"#h":2}') + len('{"b":"é","a":3}'.encode())
    assert await read_all(storage, sid) == [{"a": 1}, {"#h": 2}, {"b": "é", "a": 3}]


async def test_reads_seek_in_both_directions(storage: Storage) -> None:
    sid = await new_dataset(storage)
    await storage.datasets.push(sid, make_push([{"i": i} for i in range(50)]), union)
    assert [x["i"] for x in await read_all(storage, sid, 10, 15)] == [10, 11, 12, 13, 14]
    assert [x["i"] for x in await read_all(storage, sid, 45, 999)] == [45, 46, 47, 48, 49]
    assert [x["i"] for x in await read_all(storage, sid, 0, 50, desc=True)] == list(range(49, -1, -1))
    assert [x["i"] for x in await read_all(storage, sid, 30, 40, desc=True)] == list(range(39, 29, -1))
    assert await read_all(storage, sid, 60, 70) == []


async def test_block_paths_are_merged_per_block_of_items(storage: Storage) -> None:
    sid = await new_dataset(storage)
    await storage.datasets.push(sid, make_push([{"a": 1}] * (BLOCK - 1) + [{"b": 1}, {"c": 1}]), union)
    await storage.datasets.push(sid, make_push([{"d": 1}] * BLOCK + [{"a": 1}]), union)
    async with storage.datasets.snapshot(sid) as snap:
        assert snap.info.item_count == 2 * BLOCK + 2
        assert await snap.block_paths(0, 5) == [(0, ["a", "b"]), (1, ["c", "d"]), (2, ["d", "a"])]
        assert await snap.block_paths(1, 1) == [(1, ["c", "d"])]
    # blocks of equal lists come once, with the first block that has it
    await storage.datasets.push(sid, make_push([{"d": 1}] * (3 * BLOCK - 2) + [{"c": 1}]), union)
    async with storage.datasets.snapshot(sid) as snap:
        assert await snap.block_paths(0, 10) == [(0, ["a", "b"]), (1, ["c", "d"]), (2, ["d", "a"]), (3, ["d"]), (5, ["c"])]
        assert await snap.block_paths(4, 5) == [(4, ["d"]), (5, ["c"])]


async def test_snapshot_ignores_later_pushes_and_outlives_a_delete(storage: Storage) -> None:
    sid = await new_dataset(storage)
    await storage.datasets.push(sid, make_push([{"i": i} for i in range(2500)]), union)
    async with storage.datasets.snapshot(sid) as snap:
        await storage.datasets.push(sid, make_push([{"late": 1}]), union)
        assert (await storage.datasets.info([sid]))[sid].item_count == 2501
        assert await storage.delete_store(sid)
        seen = []
        async for batch in snap.items(0, 10**9):
            seen += [json.loads(b)["i"] for b in batch]
        assert snap.info.item_count == 2500
        assert seen == list(range(2500))
    assert (await storage.datasets.info([sid]))[sid].item_count == 0  # the items went with the store
    with pytest.raises(NotFound):
        await storage.datasets.push(sid, make_push([{"a": 1}]), union)
    with pytest.raises(NotFound):
        async with storage.datasets.snapshot(sid):
            pass


async def test_concurrent_pushes_stay_whole_dense_and_ordered(storage: Storage) -> None:
    sid = await new_dataset(storage)
    firsts: dict[int, int] = {}

    async def pusher(p: int) -> None:
        for round_ in range(3):
            items = [{"p": p, "r": round_, "k": k} for k in range(40)]
            firsts[p * 10 + round_] = await storage.datasets.push(sid, make_push(items), union)

    async with anyio.create_task_group() as tg:
        for p in range(8):
            tg.start_soon(pusher, p)
    items = await read_all(storage, sid)
    assert len(items) == 8 * 3 * 40
    for key, first in firsts.items():  # each push is one contiguous run, in its own order
        p, r = divmod(key, 10)
        assert items[first : first + 40] == [{"p": p, "r": r, "k": k} for k in range(40)]
    assert sorted(firsts.values()) == list(range(0, 960, 40))


async def test_batches_stop_at_a_byte_budget(storage: Storage) -> None:
    """Items may be 9 MiB each: a batch of them is cut at BATCH_BYTES, so reading holds a few MiB, not gigabytes."""
    from openkvs.storage.datasets import BATCH_BYTES

    sid = await new_dataset(storage)
    big = "x" * (3 * 1024 * 1024)
    await storage.datasets.push(sid, make_push([{"i": i, "pad": big} for i in range(7)]), union)
    for desc in (False, True):
        async with storage.datasets.snapshot(sid) as snap:
            batches = [b async for b in snap.items(0, 7, desc=desc, batch=1000)]
        sizes = [sum(map(len, b)) for b in batches]
        assert all(s < BATCH_BYTES + len(big) + 100 for s in sizes), sizes
        order = [json.loads(x)["i"] for b in batches for x in b]
        assert order == (list(range(6, -1, -1)) if desc else list(range(7)))
        assert len(batches) >= 3
