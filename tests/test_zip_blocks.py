"""Archives laid out from headers kept since write time (zipwriter.local_header, LocalBlock, CentralBlock) are byte
for byte the archives of the old, entry-by-entry writer (tests/zip_reference.py): the kept header of any entry
(names of any script and length, times from before 1970 to after 2107, sizes up to and past 4 GiB), and whole
archives and random ranges of batches given as blocks, mixed with batches given as entries. A block that does not
fit (past 4 GiB, entries changed between the passes) stops the archive instead of making a corrupt one."""

from __future__ import annotations

import asyncio
import random
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from openkvs.zipwriter import (
    CENTRAL_LEAD,
    CENTRAL_MID,
    ArchiveDataError,
    CentralBlock,
    LocalBlock,
    iter_range,
    local_header,
)
from tests import zip_reference
from tests.test_zip_columns import EDGE_MS, EPOCH, Entry, random_entries


def kept(e: Entry) -> bytes:
    return local_header(e.key, e.decoded_size, e.crc32, e.ms // 1000)


@pytest.mark.parametrize("seed", range(6))
def test_kept_header_is_the_old_writers(seed: int) -> None:
    rnd = random.Random(seed)
    for e in random_entries(rnd, 300):
        name = e.key.encode()
        assert kept(e) == zip_reference._local_header(e, name, e.decoded_size, 0)
        # and at any offset below 4 GiB, the same bytes
        assert kept(e) == zip_reference._local_header(e, name, e.decoded_size, 0xFFFFFFFE)
    for ms in EDGE_MS:
        for size in (0, 5, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 40):
            e = Entry("é", size, 0xFFFFFFFF, EPOCH + timedelta(milliseconds=ms), ms, None)
            assert kept(e) == zip_reference._local_header(e, b"\xc3\xa9", size, 0), (ms, size)


def test_no_kept_header_for_what_zip_cannot_hold() -> None:
    assert local_header("x" * 65536, 1, 0, 0) == b""
    assert local_header("k", -1, 0, 0) == b""
    assert local_header("k", 1, 1 << 32, 0) == b""


def central_of(e: Entry, offset: int) -> bytes:
    """A central header made the way the storages make it in SQL (see CENTRAL_LEAD)."""
    h = kept(e)
    return CENTRAL_LEAD + h[4:30] + CENTRAL_MID + struct.pack("<I", offset) + h[30:]


def blocks(entries: list[Entry], rnd: random.Random) -> tuple[list[Any], list[Any]]:
    """Batches of random sizes for both passes, each a block or (at random) the entries themselves."""
    local: list[Any] = []
    central: list[Any] = []
    offset = i = 0
    while i < len(entries):
        part = entries[i : i + rnd.randint(1, 40)]
        i += len(part)
        start = offset
        heads = []
        for e in part:
            heads.append(central_of(e, offset))
            offset += len(kept(e)) + e.decoded_size
        if rnd.random() < 0.8:
            local.append(LocalBlock(len(part), b"".join(kept(e) + (e.data or b"") for e in part)))
        else:
            local.append(list(part))
        central.append(CentralBlock(len(part), b"".join(heads), start, offset) if rnd.random() < 0.8 else list(part))
    return local, central


def archive(local: list[Any], central: list[Any], start: int, end: int) -> bytes:
    async def batches() -> AsyncIterator[Any]:
        for b in local:
            yield b

    async def listing() -> AsyncIterator[Any]:
        for b in central:
            yield b

    async def read(entry: Entry, lo: int, hi: int) -> AsyncIterator[bytes]:
        assert entry.data is not None
        yield entry.data[lo:hi]

    async def collect() -> bytes:
        return b"".join([c async for c in iter_range(batches, start, end, read, listing=listing)])

    return asyncio.run(collect())


@pytest.mark.parametrize("seed", range(10))
def test_blocks_give_the_old_writers_bytes(seed: int) -> None:
    rnd = random.Random(seed)
    entries = random_entries(rnd, rnd.choice([1, 3, 60, 500]))
    want = zip_reference.build_archive([(e, e.data) for e in entries])
    local, central = blocks(entries, rnd)
    assert archive(local, central, 0, len(want)) == want
    for _ in range(40):
        a = rnd.randrange(len(want))
        b = rnd.randrange(a, len(want) + 1)
        assert archive(local, central, a, b) == want[a:b], (a, b)


def test_a_central_block_that_does_not_follow_the_local_pass_stops_the_archive() -> None:
    rnd = random.Random(3)
    entries = random_entries(rnd, 50)
    local, central = blocks(entries, rnd)
    want = zip_reference.build_archive([(e, e.data) for e in entries])
    i = next(i for i, b in enumerate(central) if isinstance(b, CentralBlock))
    b = central[i]
    central[i] = CentralBlock(b.count, b.data, b.local_start + 1, b.local_end + 1)  # a record grew meanwhile
    with pytest.raises(ArchiveDataError):
        archive(local, central, 0, len(want))


def test_blocks_past_4_gib_are_refused() -> None:
    """A block may only stand for entries whose local headers start below 4 GiB (no ZIP64 fields): one that
    would start later, after an entry of 4 GiB read entry by entry, stops the archive."""
    big = Entry("big", 0xFFFFFFFF, 0, EPOCH, 0, None)
    small = Entry("small", 3, zlib.crc32(b"abc"), EPOCH, 0, b"abc")

    async def batches() -> AsyncIterator[Any]:
        yield [big]
        yield LocalBlock(1, kept(small) + b"abc")

    async def read(entry: Entry, lo: int, hi: int) -> AsyncIterator[bytes]:
        yield bytes(hi - lo)

    async def collect() -> bytes:
        start = 0xFFFFFFFF + 59  # past the big entry's bytes
        return b"".join([c async for c in iter_range(batches, start, start + 10, read)])

    with pytest.raises(ArchiveDataError):
        asyncio.run(collect())
