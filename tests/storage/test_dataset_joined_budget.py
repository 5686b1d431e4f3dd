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


def sized(i: int, n: int) -> dict[str, object]:
    """An item of exactly ``n`` bytes of compact JSON (n >= 20)."""
    head = {"i": i, "pad": ""}
    pad = n - len(json.dumps(head, separators=(",", ":")))
    return {"i": i, "pad": "x" * pad}


async def test_items_of_one_size_come_in_pieces_within_the_budget_as_the_largest_grows(storage: Storage) -> None:
    """Items of about one size (most datasets), then a push of larger ones: the pieces hold the items in order,
    many to a piece, under twice the budget; on PostgreSQL within the budget itself, which is what its plain
    seeks rely on (the largest item a dataset holds bounds a piece there: a bound that did not follow the new
    items would let ~315-item pieces of 301-byte items pass 64 KiB); items() batches hold the same items."""
    sid = await new_dataset(storage)
    items = [sized(i, 100) for i in range(2000)]
    await storage.datasets.push(sid, make_push(items), union)
    later = [sized(2000 + i, 300) for i in range(1500)]
    await storage.datasets.push(sid, make_push(later), union)
    stored = make_push(items).items + make_push(later).items
    assert {len(s) for s in stored} == {100, 300}
    bound = SIZE if type(storage).__name__.startswith("Postgres") else 2 * SIZE - 1
    for start, stop, desc in [(0, 10**9, False), (0, 10**9, True), (1900, 3100, False), (1900, 3100, True)]:
        for sep in (b"\n", b",\n"):
            async with storage.datasets.snapshot(sid) as snap:
                pieces = [p async for p in snap.joined(start, stop, desc=desc, batch=4000, sep=sep, size=SIZE)]
                batches = [b async for b in snap.items(start, stop, desc=desc, batch=4000)]
            want = stored[start : min(stop, len(stored))]
            if desc:
                want = want[::-1]
            assert sep.join(pieces) == sep.join(want)
            assert [r for b in batches for r in b] == want
            assert max(map(len, pieces)) <= bound
            assert len(pieces) < len(want) // 100, "many items to a piece"


@pytest.mark.postgres
async def test_postgres_upgrade_measures_the_largest_item_of_datasets_already_stored() -> None:
    """Tables of the version before the largest item was kept, holding datasets of items of 100 and 150 bytes:
    the upgrade (several nodes at once) measures each dataset's largest item, so that its pieces keep to the
    budget from then on, and pushes keep it."""
    pg = pytest.importorskip("openkvs.storage.postgres")
    from tests.conftest import postgres_reachable, unavailable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncio
    import os
    import secrets

    import asyncpg

    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "t_" + secrets.token_hex(6)
    st = pg.PostgresStorage(dsn, namespace=schema)
    await st.open()
    try:
        from openkvs.storage.base import DATASET

        user = await st.create_user("u")
        small, big = [(await st.create_store(user.id, None, None, "k", kind=DATASET)).id for _ in range(2)]
        small_items = [sized(i, 100) for i in range(2000)]
        big_items = small_items[:1000] + [sized(1000 + i, 150) for i in range(1500)]
        await st.datasets.push(small, make_push(small_items), union)
        await st.datasets.push(big, make_push(big_items), union)
        await st.aclose()
        conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
        try:
            from .test_pg_packed_rows import to_rows_of_one_item

            await conn.execute("ALTER TABLE dataset_counts DROP COLUMN max_item")
            await conn.execute(to_rows_of_one_item(10))  # (a row per item, as version 10 stored them)
        finally:
            await conn.close()
        nodes = [pg.PostgresStorage(dsn, namespace=schema) for _ in range(3)]
        assert await asyncio.gather(*(n.migrate() for n in nodes)) == [pg.TABLES_VERSION] * 3
        conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
        try:  # (what the pieces below then rely on; without it they would be checked by the database instead)
            kept = dict(await conn.fetch("SELECT store_id, max_item FROM dataset_counts"))
        finally:
            await conn.close()
        assert kept == {small: 100, big: 150}
        await st.open()
        for sid, items in ((small, small_items), (big, big_items)):
            async with st.datasets.snapshot(sid) as snap:
                pieces = [p async for p in snap.joined(0, 10**9, batch=4000, size=SIZE)]
            assert b"\n".join(pieces) == b"\n".join(make_push(items).items)
            assert max(map(len, pieces)) <= SIZE
        await st.datasets.push(small, make_push([sized(5000 + i, 150) for i in range(1500)]), union)
        async with st.datasets.snapshot(small) as snap:
            pieces = [p async for p in snap.joined(0, 10**9, batch=4000, size=SIZE)]
        assert max(map(len, pieces)) <= SIZE
        assert len(b"\n".join(pieces)) == 2000 * 101 + 1500 * 151 - 1
    finally:
        await st.aclose()
        await pg.PostgresStorage(dsn, namespace=schema).drop()
