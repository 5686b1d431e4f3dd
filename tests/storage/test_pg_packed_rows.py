"""Dataset items several to a row on PostgreSQL (storage/postgres/datasets.py, TABLES_VERSION 12): a push's rows
hold at most ITEMS_PER_ROW items and ROW_BYTES or INLINE_ROW_BYTES bytes (a bigger item alone), in the heap row
(not TOASTed); reads of any range, either way, by
binary COPY and by the plain seeks of the path without the C extension, give the items as a plain list of them
would; a database of the version before (a row per item) upgrades by its ADD COLUMN alone and reads the same, also
across the edges between its rows and the packed rows pushed after; what is not compact JSON never goes in."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.storage.datasets import BATCH_BYTES, ITEMS_PER_ROW, ROW_BYTES
from tests.conftest import examples

from .test_datasets import make_push, union

pytestmark = pytest.mark.postgres

pg = pytest.importorskip("openkvs.storage.postgres")
from openkvs.storage.postgres import datasets as pgd  # noqa: E402

DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def to_rows_of_one_item(version: int) -> str:
    """SQL that turns this schema's tables into those of ``version`` (< 12) as that version wrote them: each
    packed row split into rows of one item, the column ``n`` gone."""
    return f"""
    CREATE TEMP TABLE one_item_rows AS
        SELECT d.store_id, d.idx - d.n + s.o AS idx, convert_to(s.item, 'UTF8') AS data
        FROM dataset_items d, regexp_split_to_table(convert_from(d.data, 'UTF8'), E'\\n') WITH ORDINALITY s(item, o);
    DELETE FROM dataset_items;
    ALTER TABLE dataset_items DROP COLUMN n;
    INSERT INTO dataset_items (store_id, idx, data) SELECT store_id, idx, data FROM one_item_rows;
    DROP TABLE one_item_rows;
    UPDATE schema_version SET version = {version};
    """


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def storage(loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    from tests.conftest import postgres_reachable, unavailable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import secrets

    st_ = pg.PostgresStorage(DSN, namespace="t_" + secrets.token_hex(6))
    loop.run_until_complete(st_.open())
    yield st_
    loop.run_until_complete(st_.aclose())
    loop.run_until_complete(pg.PostgresStorage(DSN, namespace=st_.namespace).drop())


@pytest.fixture(params=["copy", "seeks"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reading: binary COPY (the C extension) and plain seeks (without it)."""
    if request.param == "copy" and pgd._copyrows is None:
        pytest.skip("the C extension is not built")
    if request.param == "seeks":
        monkeypatch.setattr(pgd, "_copyrows", None)
    return str(request.param)


async def new_dataset(storage: Any) -> str:
    from openkvs.storage.base import DATASET

    user = await storage.get_user_by_name("alice") or await storage.create_user("alice")
    return str((await storage.create_store(user.id, None, None, "k", kind=DATASET)).id)


async def rows_of(storage: Any, sid: str) -> list[tuple[int, int, bytes]]:
    return [tuple(r) for r in await storage._db.fetch(
        "SELECT idx, n, data FROM dataset_items WHERE store_id = $1 ORDER BY idx", sid)]


async def read(storage: Any, sid: str, lo: int, hi: int, desc: bool, batch: int, sep: bytes | None, size: int):
    """items() batches (``sep`` None) or joined() pieces of [lo, hi)."""
    async with storage.datasets.snapshot(sid) as snap:
        if sep is None:
            return [b async for b in snap.items(lo, hi, desc=desc, batch=batch)]
        return [p async for p in snap.joined(lo, hi, desc=desc, batch=batch, sep=sep, size=size)]


def check(got: list[Any], want: list[bytes], batch: int, sep: bytes | None, size: int) -> None:
    """What ItemSnapshot promises of items()' batches or joined()'s pieces (items here hold one b"{" each)."""
    if sep is None:
        assert [i for b in got for i in b] == want
        assert all(0 < len(b) <= batch for b in got)
        assert all(sum(map(len, b)) <= BATCH_BYTES or len(b) == 1 for b in got)
        return
    assert sep.join(got) == sep.join(want)
    assert all(got), "no empty piece"
    assert sum(p.count(b"{") for p in got) == len(want)
    for p in got:
        n = p.count(b"{")
        assert 0 < n <= batch
        assert len(p) <= max(1, min(size, BATCH_BYTES)) or n == 1, (len(p), n)


def item(i: int, size: int) -> dict[str, str]:
    """An item whose compact JSON is ``size`` bytes (>= 16), with one "{" and no "," or newline."""
    head = json.dumps({"k": f"{i}-"}, separators=(",", ":"))
    return {"k": f"{i}-" + "x" * max(0, size - len(head))}


def packing(sizes: list[int]) -> list[int]:
    """The n of each row of a push of items of these sizes, by the rule: a row takes the next item while it holds
    fewer than ITEMS_PER_ROW and its bytes joined by b"\\n" stay within the limit, or it is empty."""
    limit = min(ROW_BYTES, pgd.INLINE_ROW_BYTES)
    rows: list[int] = []
    held = -1
    for size in sizes:
        if rows and rows[-1] < ITEMS_PER_ROW and held + 1 + size <= limit:
            rows[-1] += 1
            held += 1 + size
        else:
            rows.append(1)
            held = size
    return rows


async def toasted(storage: Any) -> int:
    """Rows of dataset_items' TOAST table (values kept out of line)."""
    sql = "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'dataset_items'::regclass"
    toast = (await storage._db.fetchrow(sql))[0]
    return int((await storage._db.fetchrow(f"SELECT count(*) FROM {toast}"))[0])


def test_a_push_is_stored_in_rows_within_the_bounds_in_the_heap(storage: Any, loop: Any) -> None:
    limit = min(ROW_BYTES, pgd.INLINE_ROW_BYTES)

    async def go() -> None:
        sid = await new_dataset(storage)
        tiny = [item(i, 40) for i in range(300)]  # ITEMS_PER_ROW a row
        small = [item(300 + i, 500) for i in range(1000)]
        mid = [item(1300 + i, limit // 3) for i in range(7)]  # three don't fit a row: two a row
        big = [item(1307 + i, 2 * limit + i) for i in range(2)]  # past the limit: a row each (and out of line)
        pushed = tiny + small + mid + big
        assert await storage.datasets.push(sid, make_push(pushed), union) == 0
        stored = make_push(pushed).items
        rows = await rows_of(storage, sid)
        assert [n for _, n, _ in rows] == packing([len(s) for s in stored])
        assert [n for _, n, _ in rows][:2] == [ITEMS_PER_ROW, ITEMS_PER_ROW]
        at = 0
        for idx, n, data in rows:
            assert data == b"\n".join(stored[at : at + n])
            at += n
            assert idx == at - 1
            assert len(data) <= limit or n == 1
        assert at == len(stored)
        info = (await storage.datasets.info([sid]))[sid]
        assert (info.item_count, info.bytes) == (len(stored), sum(map(len, stored)))
        assert await toasted(storage) > 0  # the two big items, out of line

    loop.run_until_complete(go())


def test_packed_rows_stay_in_the_heap(storage: Any, loop: Any) -> None:
    """Rows within INLINE_ROW_BYTES are not TOASTed: no chunks of ~2 KB, each a row and an index entry."""

    async def go() -> None:
        sid = await new_dataset(storage)
        await storage.datasets.push(sid, make_push([item(i, 500) for i in range(2000)]), union)
        assert await toasted(storage) == 0

    loop.run_until_complete(go())


def test_a_pretty_printed_body_is_stored_compact(storage: Any, loop: Any, path: str) -> None:
    """The HTTP layer's preparation (C and Python) stores compact bytes: newlines between tokens dropped, a
    newline in a string escaped; the items read back as pushed."""
    from openkvs.api import items as api_items

    body = b'[\n  {\n    "a": "x\\ny",\n  "b" : [1,\n 2]\n  },\r\n\t{"c":"\\u000a"}\n]'
    want = json.loads(body)

    async def go() -> None:
        sid = await new_dataset(storage)
        for cpush in (api_items._cpush, None):
            saved = api_items._cpush
            api_items._cpush = cpush
            try:
                await storage.datasets.push(sid, api_items.prepare_push_body(body, None), union)
            finally:
                api_items._cpush = saved
        got = await read(storage, sid, 0, 10, False, 10, None, 0)
        assert [json.loads(i) for b in got for i in b] == want * 2
        assert [n for _, n, _ in await rows_of(storage, sid)] == [2, 2]

    loop.run_until_complete(go())


def test_an_older_database_upgrades_and_reads_across_old_and_packed_rows(storage: Any, loop: Any, path: str) -> None:
    """A database of version 11 (a row per item) holding two datasets: several nodes upgrade it at once, by the
    ADD COLUMN alone (its rows are rows of one item); its items read as before, and a dataset holding its old rows
    and packed rows pushed after reads right from and to every edge between them, either way."""

    old_items = [item(i, 40 + i % 13) for i in range(300)]
    other_items = [item(i, 30) for i in range(5)]
    new_pushes = [[item(300 + i, 60) for i in range(150)], [item(450, 20)], [item(451 + i, 33) for i in range(300)]]

    async def go() -> None:
        sid = await new_dataset(storage)
        other = await new_dataset(storage)
        await storage.datasets.push(sid, make_push(old_items), union)
        await storage.datasets.push(other, make_push(other_items), union)
        await storage._db.execute(to_rows_of_one_item(11))
        assert (await storage._db.fetchrow("SELECT count(*) FROM dataset_items"))[0] == 305  # a row per item
        await storage.aclose()
        nodes = [pg.PostgresStorage(DSN, namespace=storage.namespace) for _ in range(3)]
        assert await asyncio.gather(*(n.migrate() for n in nodes)) == [pg.TABLES_VERSION] * 3
        await storage.open()
        options = (await storage._db.fetchrow("SELECT reloptions FROM pg_class WHERE oid = 'dataset_items'::regclass"))
        assert "toast_tuple_target=8160" in options[0]
        stored = make_push(old_items).items
        assert {n for _, n, _ in await rows_of(storage, sid)} == {1}
        assert [b for p in await read(storage, sid, 0, 999, False, 1000, None, 0) for b in p] == stored
        assert await read(storage, other, 0, 999, True, 1000, b"\n", BATCH_BYTES) == [
            b"\n".join(make_push(other_items[::-1]).items)]
        for push in new_pushes:
            await storage.datasets.push(sid, make_push(push), union)
            stored += make_push(push).items
        assert [n for _, n, _ in await rows_of(storage, sid)][299:] == [1, 128, 22, 1, 128, 128, 44]
        edges = [0, 298, 299, 300, 301, 427, 428, 449, 450, 451, 579, 751]  # (751: the item count)
        for lo in edges:
            for hi in edges:
                if hi <= lo:
                    continue
                for desc in (False, True):
                    want = stored[lo:hi][::-1] if desc else stored[lo:hi]
                    check(await read(storage, sid, lo, hi, desc, 7, None, 0), want, 7, None, 0)
                    check(await read(storage, sid, lo, hi, desc, 50, b",", 700), want, 50, b",", 700)
                    check(await read(storage, sid, lo, hi, desc, 1000, b"\n", 10**9), want, 1000, b"\n", 10**9)

    loop.run_until_complete(go())


READ = st.tuples(
    st.booleans(),  # desc
    st.sampled_from([1, 2, 5, 1000]),  # batch
    st.sampled_from([None, b"\n", b",", b",\n", b""]),  # None: items()
    st.sampled_from([1, 100, 700, BATCH_BYTES]),  # size
)


def test_reads_are_those_of_a_plain_list(storage: Any, loop: Any, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random pushes (1 item to a few rows' worth; items of random sizes, some past ROW_BYTES), then reads from
    any start to any stop, either way, any batch, size and separator: the items of the plain list. Rows made small
    here (8 items, 300 bytes) so that a few dozen items cross many of their edges."""
    monkeypatch.setattr(pgd, "ITEMS_PER_ROW", 8)
    monkeypatch.setattr(pgd, "ROW_BYTES", 300)
    sizes = st.one_of(st.integers(16, 90), st.integers(290, 700))

    @settings(max_examples=examples(60), database=None)
    @given(pushes=st.lists(st.lists(sizes, min_size=1, max_size=25), min_size=1, max_size=4), data=st.data())
    def prop(pushes: list[list[int]], data: st.DataObject) -> None:
        count = sum(map(len, pushes))
        ends = st.integers(-2, count + 2)
        reads = data.draw(st.lists(st.tuples(ends, ends, READ), min_size=1, max_size=5))

        async def go() -> None:
            sid = await new_dataset(storage)
            stored: list[bytes] = []
            for sizes_ in pushes:
                push = make_push([item(len(stored) + k, n) for k, n in enumerate(sizes_)])
                await storage.datasets.push(sid, push, union)
                stored += push.items
            for start, stop, (desc, batch, sep, size) in reads:
                want = stored[max(start, 0) : max(stop, 0)]
                want = want[::-1] if desc else want
                check(await read(storage, sid, start, stop, desc, batch, sep, size), want, batch, sep, size)

        loop.run_until_complete(go())

    prop()



@pytest.mark.parametrize("desc", [False, True])
def test_the_rows_missing_at_the_end_read_towards_are_named(
    storage: Any, loop: Any, path: str, monkeypatch: pytest.MonkeyPatch, desc: bool
) -> None:
    """A damaged table, the packed row at the end a read goes towards gone (items 32 to 39 of 40 ascending, 0 to 7
    descending): the rows run out before the items do, and each read, by COPY or by seeks, batches or pieces,
    raises StorageDamaged naming the items from the first one missing to that end."""
    from openkvs.storage import datasets
    from openkvs.storage.base import StorageDamaged

    monkeypatch.setattr(datasets, "ITEMS_PER_ROW", 8)  # (packed_rows' bound)

    async def go() -> None:
        sid = await new_dataset(storage)
        await storage.datasets.push(sid, make_push([item(i, 20) for i in range(40)]), union)
        assert [(idx, n) for idx, n, _ in await rows_of(storage, sid)] == [(7, 8), (15, 8), (23, 8), (31, 8), (39, 8)]
        await storage._db.execute("DELETE FROM dataset_items WHERE store_id = $1 AND idx = $2", sid, 7 if desc else 39)
        missing = "0 to 7" if desc else "32 to 39"
        for sep in (None, b"\n"):
            with pytest.raises(StorageDamaged, match=f"dataset {sid}: its items {missing} are not all in its table"):
                await read(storage, sid, 0, 40, desc, 1000, sep, 1 << 20)

    loop.run_until_complete(go())
