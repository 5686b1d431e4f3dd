"""A PostgreSQL export's pieces from binary COPY (storage/postgres/datasets.py ``_Joined`` over the C of
``_copyrows.c``), without a database: the binary COPY of items built here as PostgreSQL writes it, fed in slices of
any size (asyncpg hands over whole rows, but a row cut between two feeds must come out whole), over several COPYs
one after the other: the pieces joined are the items joined, each piece within the byte budget and the item count
(a bigger item alone), and what is not a one-column COPY of items is refused."""

from __future__ import annotations

import random
import struct

import pytest

from openkvs.storage.postgres import datasets
from openkvs.storage.postgres.copyformat import SIGNATURE

pytestmark = pytest.mark.skipif(datasets._copyrows is None, reason="the C extension is not built")


def copy_of(items: list[bytes]) -> bytes:
    """``COPY (SELECT data ...) TO STDOUT (FORMAT binary)`` of these values, byte for byte."""
    rows = b"".join(struct.pack("!hi", 1, len(v)) + v for v in items)
    return SIGNATURE + struct.pack("!ii", 0, 0) + rows + struct.pack("!h", -1)


def sliced(data: bytes, rnd: random.Random, most: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.randint(1, most)
        out.append(data[i : i + n])
        i += n
    return out


def pieces_of(copies: list[list[bytes]], sep: bytes, size: int, batch: int, rnd: random.Random, most: int):
    joined = datasets._Joined(sep, size, batch)
    out: list[bytes] = []
    for items in copies:
        joined.start()
        for data in sliced(copy_of(items), rnd, most):
            out += joined.feed(data)
        assert joined.ended and joined.rows == len(items)
    last = joined.end()
    return out + ([last] if last is not None else [])


@pytest.mark.parametrize("seed", range(6))
def test_pieces_are_the_items_joined_within_the_budget(seed: int) -> None:
    rnd = random.Random(seed)
    items = [b'{"i":%d,"s":"%s"}' % (i, b"x" * rnd.choice([0, 5, 300, 2000])) for i in range(3000)]
    items[1234] = b'{"big":"' + b"y" * 9000 + b'"}'  # past the budget: a piece of its own
    cuts = sorted(rnd.sample(range(1, len(items)), 3))
    copies = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    for sep in (b"\n", b",\n"):
        size, batch = rnd.choice([4096, 8192]), rnd.choice([50, 1000])
        most = rnd.choice([61, 600, 70_000])  # a row cut anywhere, header included; or whole rows by the dozen
        pieces = pieces_of(copies, sep, size, batch, rnd, most)
        assert sep.join(pieces) == sep.join(items)
        assert all(pieces)
        for p in pieces:
            n = p.count(b"{")  # one per item here
            assert n <= batch
            assert len(p) <= size or n == 1, (len(p), n)
        # pieces are full: the next item would have taken each past the size or the count
        at = 0
        for p in pieces[:-1]:
            at += p.count(b"{")
            assert p.count(b"{") == batch or len(p) + len(sep) + len(items[at]) > size


def test_an_empty_copy_gives_no_piece() -> None:
    assert pieces_of([[]], b"\n", 1024, 10, random.Random(0), 3) == []


@pytest.mark.parametrize(
    "bad",
    [
        b"PGCOPY\n\xff\r\n\x01" + bytes(8),  # not the signature
        copy_of([b"{}"])[:-2] + struct.pack("!hii", 2, 2, 2) + b"{}",  # a row of two columns
        copy_of([b"{}"])[:-2] + struct.pack("!hi", 1, -1) + struct.pack("!h", -1),  # a NULL
        copy_of([b"{}"]) + b"\x00",  # data after the trailer
    ],
)
@pytest.mark.parametrize("sep", [b"\n", None])  # None: items' batches, the first of one item here
def test_what_is_not_a_copy_of_items_is_refused(bad: bytes, sep: bytes | None) -> None:
    joined = datasets._Joined(sep, 1024, 10)
    joined.start()
    with pytest.raises(ValueError):
        joined.feed(bad)


@pytest.fixture
async def pg(request: pytest.FixtureRequest):
    from .conftest import _postgres

    async for st in _postgres(request):
        yield st


@pytest.mark.postgres
@pytest.mark.anyio
@pytest.mark.parametrize("desc", [False, True])
async def test_copied_pieces_are_those_of_the_row_reads(pg, monkeypatch: pytest.MonkeyPatch, desc: bool) -> None:
    """On PostgreSQL, over several COPY windows (made small here) and from any range: the same bytes as the pieces
    read row by row (the path without the C), within the same budget; and ``items``' batches the same."""
    from .test_datasets import make_push, new_dataset, union

    sid = await new_dataset(pg)
    rnd = random.Random(7)
    items = [{"i": i, "pad": "é" * rnd.choice([1, 40, 700])} for i in range(3000)]
    await pg.datasets.push(sid, make_push(items), union)
    monkeypatch.setattr(datasets, "COPY_WINDOW_BYTES", 64 * 1024)  # ~170 items a COPY: many windows

    async def read(start: int, stop: int, sep: bytes) -> list[bytes]:
        async with pg.datasets.snapshot(sid) as snap:
            return [p async for p in snap.joined(start, stop, desc=desc, batch=500, sep=sep, size=16 * 1024)]

    async def batches(start: int, stop: int) -> list[list[bytes]]:
        async with pg.datasets.snapshot(sid) as snap:
            return [b async for b in snap.items(start, stop, desc=desc, batch=500)]

    for start, stop, sep in [(0, 10**9, b"\n"), (123, 2877, b",\n"), (2999, 3000, b"\n")]:
        copied, copied_batches = await read(start, stop, sep), await batches(start, stop)
        with monkeypatch.context() as m:
            m.setattr(datasets, "_copyrows", None)
            rows, row_batches = await read(start, stop, sep), await batches(start, stop)
        assert sep.join(copied) == sep.join(rows)
        assert len(sep.join(copied).split(sep)) == min(stop, 3000) - start
        assert all(len(p) <= 16 * 1024 or sep not in p for p in copied)
        assert sum(copied_batches, []) == sum(row_batches, [])
        # batches of 500 (the items are far from BATCH_BYTES), the first a sixteenth: the first byte comes sooner
        n, first = min(stop, 3000) - start, 500 // datasets._Joined.FIRST_SHARE
        assert len(copied_batches[0]) == min(n, first)
        assert all(len(b) == 500 for b in copied_batches[1:-1])


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_window_of_most_of_the_table_is_read_by_the_index(pg, monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY window that holds most rows of dataset_items (a small installation; big windows) is still a range of
    the primary key read in order, not a read of the whole table and a sort (what PostgreSQL plans for it)."""
    from openkvs.storage.base import DATASET

    from .test_datasets import make_push, new_dataset, union

    sid = await new_dataset(pg)
    await pg.datasets.push(sid, make_push([{"i": i, "pad": "x" * 300} for i in range(5000)]), union)
    user = await pg.get_user_by_name("alice")
    other = await pg.create_store(user.id, None, None, "k", kind=DATASET)
    await pg.datasets.push(other.id, make_push([{"other": i} for i in range(200)]), union)
    await pg._db.execute("ANALYZE dataset_items")  # (the statistics a table of this size has after autovacuum)
    monkeypatch.setattr(datasets, "COPY_WINDOW_BYTES", 1 << 30)  # the whole dataset in one COPY
    for desc in (False, True):
        async with pg.datasets.snapshot(sid) as snap:
            pieces = [p async for p in snap.joined(0, 5000, desc=desc)]
            batches = [b async for b in snap.items(10, 4990, desc=desc)]
            conn = snap._conn  # type: ignore[attr-defined]
            # sequential scans of the table in this transaction (the snapshot's): none
            assert await conn.fetchval("SELECT pg_stat_get_xact_numscans('dataset_items'::regclass)") == 0
        assert len(b"\n".join(pieces).split(b"\n")) == 5000
        assert sum(map(len, batches)) == 4980
