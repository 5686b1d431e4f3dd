"""zipwriter.central_from_heads: the central headers of a batch laid out from its kept local headers joined into
one value (strided copies, no object per entry) are byte for byte the central directory of the old, entry-by-entry
writer (tests/zip_reference.py), for names of one length (any script, 0 to 300 bytes), sizes, CRCs and times at
their edges, batches anywhere below 4 GiB; and a batch it can't lay out that way (names of different lengths,
a ZIP64 header, an end past 4 GiB, a header not kept) is refused (None) rather than laid out wrong."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from openkvs.zipwriter import central_from_heads, local_header
from tests import zip_reference

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECONDS = [-5, 0, 315_532_799, 315_532_800, 1_700_000_001, 0x7FFFFFFF, 0x7FFFFFFF + 1, 4_354_819_200, 4_400_000_000]


@dataclass
class Entry:
    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime
    seconds: int


def entries(rnd: random.Random, count: int, name_len: int) -> list[Entry]:
    """``count`` entries whose names are all ``name_len`` bytes of UTF-8 (1 to 4 bytes a character)."""
    out = []
    for _ in range(count):
        chars: list[str] = []
        left = name_len
        while left:
            c = rnd.choice(["a", "Z", "0", "é", "€", "😀"][: 1 + min(left, 4) + (left >= 4)])
            if len(c.encode()) <= left:
                chars.append(c)
                left -= len(c.encode())
        size = rnd.choice([0, 1, 100, rnd.randrange(1 << 20), 0xFFFFFFFE])
        sec = rnd.choice([rnd.choice(SECONDS), rnd.randrange(0, 5_000_000_000)])
        crc = rnd.choice([0, 0xFFFFFFFF, rnd.randrange(1 << 32)])
        out.append(Entry("".join(chars), size, crc, EPOCH + timedelta(seconds=sec), sec))
    return out


def reference_central(batch: list[Entry], base: int) -> bytes:
    """The old writer's central headers of ``batch``, the first entry's local header at ``base``."""
    out = []
    offset = base
    for e in batch:
        name = e.key.encode()
        out.append(zip_reference._central_header(e, name, e.decoded_size, offset))
        offset += zip_reference._local_len(len(name), e.decoded_size) + e.decoded_size
    return b"".join(out)


def heads(batch: list[Entry]) -> bytes:
    return b"".join(local_header(e.key, e.decoded_size, e.crc32, e.seconds) for e in batch)


@pytest.mark.parametrize("seed", range(40))
def test_central_headers_from_joined_heads_are_the_old_writers(seed: int) -> None:
    rnd = random.Random(seed)
    name_len = rnd.choice([0, 1, 9, 10, rnd.randrange(300)])
    batch = entries(rnd, rnd.choice([1, 2, 7, 300]), name_len)
    if sum(e.decoded_size for e in batch) > 0xFFFFFFFF // 2:  # room below 4 GiB for the base
        batch = [Entry(e.key, e.decoded_size % 1000, e.crc32, e.modified_at, e.seconds) for e in batch]
    base = rnd.choice([0, 1, rnd.randrange(1 << 31)])
    block = central_from_heads(heads(batch), len(batch), base)
    assert block is not None
    assert block.data == reference_central(batch, base)
    span = sum(39 + name_len + e.decoded_size for e in batch)
    assert (block.count, block.local_start, block.local_end) == (len(batch), base, base + span)


def test_a_whole_archives_central_directory_in_batches() -> None:
    """Batches one after another give the central directory of the whole archive, as the reference writer made it."""
    rnd = random.Random(7)
    batch = entries(rnd, 500, 9)
    data = [rnd.randbytes(e.decoded_size % 5000) for e in batch]
    batch = [Entry(e.key, len(d), zlib.crc32(d), e.modified_at, e.seconds) for e, d in zip(batch, data, strict=True)]
    archive = zip_reference.build_archive(list(zip(batch, data, strict=True)))
    blocks = []
    base = 0
    for i in range(0, 500, 37):
        block = central_from_heads(heads(batch[i : i + 37]), len(batch[i : i + 37]), base)
        assert block is not None
        blocks.append(block.data)
        base = block.local_end
    central = b"".join(blocks)
    assert archive[base : base + len(central)] == central
    assert archive[base + len(central) :][:4] == b"PK\x05\x06"  # the end record follows


def test_batches_it_cannot_lay_out_are_refused() -> None:
    rnd = random.Random(3)
    mixed = entries(rnd, 3, 5) + entries(rnd, 1, 6) + entries(rnd, 2, 5)
    assert central_from_heads(heads(mixed), len(mixed), 0) is None  # names of two lengths
    # lengths that differ but add up to a multiple of the count: 5 + 7 = 2 x 6
    pair = entries(rnd, 1, 5) + entries(rnd, 1, 7)
    assert central_from_heads(heads(pair), 2, 0) is None
    big = [Entry("abc", 0x1_0000_0000, zlib.crc32(b""), EPOCH, 0)] * 2  # ZIP64 local headers
    assert central_from_heads(heads(big), 2, 0) is None
    near = entries(rnd, 2, 4)
    near = [Entry(e.key, 1000, e.crc32, e.modified_at, e.seconds) for e in near]
    assert central_from_heads(heads(near), 2, 0xFFFFFFFF - 1000) is None  # its end past 4 GiB
    assert central_from_heads(heads(near), 2, 0xFFFFFFFF - 2 * (1000 + 43)) is not None  # its end at 4 GiB
    assert central_from_heads(heads(near)[:-1], 2, 0) is None  # a byte missing
    assert central_from_heads(b"", 1, 0) is None
