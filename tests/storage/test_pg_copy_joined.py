"""A PostgreSQL export's pieces from binary COPY (storage/postgres/datasets.py ``_Joined`` over the C of
``_copyrows.c``), without a database: the binary COPY of packed rows (``idx, n, data``) built here as PostgreSQL
writes it, fed in slices of any size (asyncpg hands over whole rows, but a row cut between two feeds must come out
whole), over several COPYs one after the other, ascending or descending, from any range (the rows at its ends
trimmed): the pieces joined are the items joined, each piece within the byte budget and the item count (a bigger
item alone), and what is not a COPY of packed rows is refused."""

from __future__ import annotations

import random
import struct

import pytest

from openkvs.storage.postgres import datasets
from openkvs.storage.postgres.copyformat import SIGNATURE

pytestmark = pytest.mark.skipif(datasets._copyrows is None, reason="the C extension is not built")


def copy_of(rows: list[tuple[int, int, bytes]]) -> bytes:
    """``COPY (SELECT idx, n, data ...) TO STDOUT (FORMAT binary)`` of these rows, byte for byte."""
    body = b"".join(struct.pack("!hiqiii", 3, 8, idx, 4, n, len(data)) + data for idx, n, data in rows)
    return SIGNATURE + struct.pack("!ii", 0, 0) + body + struct.pack("!h", -1)


def packed(items: list[bytes], rnd: random.Random) -> list[tuple[int, int, bytes]]:
    """The items in rows of random lengths (1 to 40 items): (idx of the last, n, data)."""
    rows, i = [], 0
    while i < len(items):
        n = min(rnd.choice([1, 2, 7, 40]), len(items) - i)
        rows.append((i + n - 1, n, b"\n".join(items[i : i + n])))
        i += n
    return rows


def sliced(data: bytes, rnd: random.Random, most: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.randint(1, most)
        out.append(data[i : i + n])
        i += n
    return out


def pieces_of(copies, sep, size, batch, rnd, most, lo, hi, desc):
    """The pieces of [lo, hi) from these COPYs (lists of rows, in the order asked)."""
    joined = datasets._Joined(sep, size, batch, lo, hi, desc)
    out: list = []
    for rows in copies:
        joined.start()
        for data in sliced(copy_of(rows), rnd, most):
            out += joined.feed(data)
        assert joined.ended
    assert joined.done
    last = joined.end()
    return out + ([last] if last is not None else [])


def rows_of_range(rows, lo: int, hi: int, desc: bool, cuts: int, rnd: random.Random):
    """The rows a read of [lo, hi) gets (from the one holding lo to the one holding hi - 1), in COPYs."""
    picked = [r for r in rows if r[0] >= lo and r[0] - r[1] + 1 < hi]
    if desc:
        picked.reverse()
    at = sorted(rnd.sample(range(1, len(picked)), min(cuts, len(picked) - 1))) if len(picked) > 1 else []
    return [picked[a:b] for a, b in zip([0, *at], [*at, len(picked)], strict=True)]


@pytest.mark.parametrize("seed", range(8))
def test_pieces_are_the_items_joined_within_the_budget(seed: int) -> None:
    rnd = random.Random(seed)
    items = [b'{"i":%d,"s":"%s"}' % (i, b"x" * rnd.choice([0, 5, 300, 2000])) for i in range(3000)]
    items[1234] = b'{"big":"' + b"y" * 9000 + b'"}'  # past the budget: a piece of its own
    rows = packed(items, rnd)
    for sep in (b"\n", b",\n"):
        for desc in (False, True):
            lo, hi = rnd.choice([(0, 3000), (rnd.randrange(1500), rnd.randrange(1500, 3001)), (5, 6)])
            copies = rows_of_range(rows, lo, hi, desc, 3, rnd)
            size, batch = rnd.choice([4096, 8192]), rnd.choice([1, 50, 1000])
            most = rnd.choice([61, 600, 70_000])  # a row cut anywhere, header included; or whole rows by the dozen
            pieces = pieces_of(copies, sep, size, batch, rnd, most, lo, hi, desc)
            want = items[lo:hi][::-1] if desc else items[lo:hi]
            assert sep.join(pieces) == sep.join(want)
            assert all(pieces)
            for p in pieces:
                n = p.count(b"{")  # one per item here
                assert n <= batch
                assert len(p) <= size or n == 1, (len(p), n)
            # pieces are full: the next item would have taken each past the size or the count
            at = 0
            for p in pieces[:-1]:
                at += p.count(b"{")
                assert p.count(b"{") == batch or len(p) + len(sep) + len(want[at]) > size
            # items' batches (sep None): the same items, the first batch a FIRST_SHARE
            batches = pieces_of(copies, None, size, batch, rnd, most, lo, hi, desc)
            assert [i for b in batches for i in b] == want
            assert all(len(b) <= max(1, batch // datasets._Joined.FIRST_SHARE) for b in batches[:1])
            assert all(len(b) <= batch and (sum(map(len, b)) <= size or len(b) == 1) for b in batches)


def test_an_empty_copy_gives_no_piece() -> None:
    assert pieces_of([[]], b"\n", 1024, 10, random.Random(0), 3, 0, 0, False) == []


def _bad(row: bytes) -> bytes:
    return SIGNATURE + struct.pack("!ii", 0, 0) + row + struct.pack("!h", -1)


@pytest.mark.parametrize(
    "bad",
    [
        b"PGCOPY\n\xff\r\n\x01" + bytes(8),  # not the signature
        _bad(struct.pack("!hiqi", 2, 8, 0, 2) + b"{}"),  # a row of two columns
        _bad(struct.pack("!hiqiii", 3, 8, 0, 4, 1, -1)),  # a NULL
        _bad(struct.pack("!hiqiii", 3, 8, 0, 4, 0, 2) + b"{}"),  # a row of no items
        copy_of([(0, 1, b"{}")]) + b"\x00",  # data after the trailer
        copy_of([(1, 1, b"{}")]),  # item 0 missing
        copy_of([(0, 1, b"{}"), (3, 2, b"{}\n{}")]),  # item 1 missing
    ],
)
@pytest.mark.parametrize("sep", [b"\n", None])  # None: items' batches, the first of one item here
def test_what_is_not_a_copy_of_packed_rows_is_refused(bad: bytes, sep: bytes | None) -> None:
    joined = datasets._Joined(sep, 1024, 10, 0, 10, False)
    joined.start()
    with pytest.raises(ValueError):
        joined.feed(bad)


@pytest.mark.parametrize("sep", [b",", None])  # (b"\n" takes a whole row as it is stored, unsplit)
@pytest.mark.parametrize("data", [b"{}\n{}", b"{}", b"{}\n{}\n{}\n{}"])
def test_a_row_that_does_not_hold_its_n_items_is_refused(sep: bytes | None, data: bytes) -> None:
    joined = datasets._Joined(sep, 1024, 10, 0, 3, False)
    joined.start()
    with pytest.raises(ValueError):
        joined.feed(copy_of([(2, 3, data)]))


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
