"""ZIP archives of stores whose keys are of one length in stretches (k00000001, ...: the central directory of such
a batch is laid out from its kept headers joined, zipwriter.central_from_heads; the local headers and bytes come
from group_concat / string_agg with each row's header as its separator) are byte for byte what the old,
entry-by-entry writer made (tests/zip_reference.py): whole archives and random ranges, on both backends, with
empty, gzip-encoded and big records, times at their edges and keys of another length in between."""

from __future__ import annotations

import random

import pytest

from openkvs.storage.base import Storage
from openkvs.storage.sqlite import SQLiteStorage
from tests import zip_reference

from .conftest import Body
from .test_zip_kept import GzBody, Rec, check_archive, put_many, set_times, times

pytestmark = pytest.mark.anyio


async def fill_uniform(storage: Storage, rnd: random.Random, n: int, others: int) -> tuple[str, list[Rec]]:
    """``n`` records keyed k%08d (some with other bytes than ASCII of the same length), ``others`` with keys of
    other lengths among them."""
    user = await storage.create_user(f"u{rnd.randrange(1 << 30)}")
    store = await storage.create_store(user.id, "s", None, "k")
    keys = {f"k{i:08d}" for i in range(n)} | {f"k{i:06d}é" for i in rnd.sample(range(n), n // 10)}
    keys |= {f"k{rnd.randrange(n):08d}" + "x" * rnd.randint(1, 3) for _ in range(others)}
    recs, puts = [], []
    for key in sorted(keys, key=str.encode):
        kind = rnd.random()
        data = (b"" if kind < 0.03 else rnd.randbytes(70 * 1024) if kind < 0.04 else rnd.randbytes(rnd.randint(1, 200)))
        puts.append((key, GzBody(data) if rnd.random() < 0.02 else Body(data)))
        recs.append(Rec(key, data))
    await put_many(storage, store.id, puts)
    return store.id, recs


@pytest.mark.parametrize("others", [0, 3])
async def test_keys_of_one_length_give_the_old_writers_bytes(storage: Storage, others: int) -> None:
    rnd = random.Random(10 + others)
    store_id, recs = await fill_uniform(storage, rnd, 300, others)
    await set_times(storage, store_id, recs, rnd)
    if isinstance(storage, SQLiteStorage):
        await storage.fill_zip_heads()  # (a time set behind its back drops the header)
    want = zip_reference.build_archive(await times(storage, store_id, recs))
    for _ in range(3):  # batches of 5 or 37 records, at random
        kinds = await check_archive(storage, store_id, want, rnd)
        assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
