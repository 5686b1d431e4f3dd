"""Archives laid out a batch at a time from columns (zipwriter.Columns) are byte for byte the archives the old,
entry-by-entry writer made (tests/zip_reference.py, frozen from main before the change), for random entries:
names of any length and script, empty and small records, times from before 1970 to after 2107, batches with and
without their bytes in memory, any byte range. Near and past 4 GiB (ZIP64), where the columns are not used, the
bytes equal those of the same entries given without columns."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openkvs.zipwriter import Columns, iter_range
from tests import zip_reference

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# milliseconds: before 1970, the 1980 DOS floor, odd seconds, 2038 (mtime's limit), 2107 (DOS's), and later
EDGE_MS = [
    -86_400_000 * 400, -1, 0, 999, 315_532_800_000 - 1, 315_532_800_000, 315_532_801_999, 1_700_000_000_123,
    0x7FFFFFFF * 1000 - 1, 0x7FFFFFFF * 1000, 4_354_819_199_000, 4_354_819_200_000, 4_400_000_000_000,
]


@dataclass
class Entry:
    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime
    ms: int
    data: bytes | None  # None: only readable through ``read`` (zeros), as a big record would be


class ColumnBatch(list[Entry]):
    """A batch as the snapshots give it: the entries, and the same as columns."""

    columns: Columns | None


def random_key(rnd: random.Random) -> str:
    alphabet = "abcXYZ019-_./ éßøΩжあ漢😀"
    return "".join(rnd.choice(alphabet) for _ in range(rnd.choice([1, 2, 5, 12, 40, 200])))


def random_entries(rnd: random.Random, n: int) -> list[Entry]:
    keys = sorted({random_key(rnd) for _ in range(n)})
    out = []
    for key in keys:
        data = rnd.randbytes(rnd.choice([0, 1, 7, 100, 300, 2000]))
        ms = rnd.choice(EDGE_MS) if rnd.random() < 0.3 else rnd.randrange(0, 4_000_000_000_000)
        out.append(Entry(key, len(data), zlib.crc32(data), EPOCH + timedelta(milliseconds=ms), ms, data))
    return out


def batched(entries: list[Entry], rnd: random.Random, with_columns: bool, truncate: bool = False) -> list[Any]:
    """Random batch sizes; a random share of batches carry no bytes in their columns (as a batch with a file
    or an encoded record does)."""
    batches: list[Any] = []
    i = 0
    while i < len(entries):
        k = rnd.randint(1, 60)
        batch = ColumnBatch(entries[i : i + k])
        batch.columns = None
        if with_columns:
            secs = [int(e.ms / 1000) if truncate else e.ms // 1000 for e in batch]
            have = all(e.data is not None for e in batch) and rnd.random() < 0.8
            batch.columns = Columns(
                [e.key.encode() for e in batch], [e.decoded_size for e in batch], [e.crc32 for e in batch], secs,
                [e.data for e in batch] if have else None,  # type: ignore[misc]
            )
        batches.append(batch)
        i += k
    return batches


def archive(batches: list[Any], start: int, end: int) -> bytes:
    async def source() -> AsyncIterator[Sequence[Entry]]:
        for b in batches:
            yield b

    async def read(entry: Entry, lo: int, hi: int) -> AsyncIterator[bytes]:
        if entry.data is not None:
            yield entry.data[lo:hi]
        else:
            yield bytes(hi - lo)

    def inline(entry: Entry) -> bytes | None:
        return entry.data

    async def collect() -> bytes:
        return b"".join([c async for c in iter_range(source, start, end, read, inline=inline)])

    return asyncio.run(collect())


@pytest.mark.parametrize("seed", range(12))
def test_columns_give_the_old_writers_bytes(seed: int) -> None:
    rnd = random.Random(seed)
    entries = random_entries(rnd, rnd.choice([1, 3, 50, 400]))
    want = zip_reference.build_archive([(e, e.data) for e in entries])
    batches = batched(entries, rnd, with_columns=True, truncate=seed % 2 == 1)
    assert archive(batches, 0, len(want)) == want
    for _ in range(30):
        a = rnd.randrange(len(want))
        b = rnd.randrange(a, len(want) + 1)
        assert archive(batches, a, b) == want[a:b], (a, b)


def test_one_second_apart_and_same_second_entries() -> None:
    """Stamps cached per second: entries in the same second share them, the next second does not."""
    rnd = random.Random(99)
    entries = []
    for i, ms in enumerate([1_700_000_000_000, 1_700_000_000_999, 1_700_000_001_000, 1_700_000_002_500] * 3):
        data = rnd.randbytes(10)
        entries.append(Entry(f"k{i:03d}", 10, zlib.crc32(data), EPOCH + timedelta(milliseconds=ms), ms, data))
    want = zip_reference.build_archive([(e, e.data) for e in entries])
    assert archive(batched(entries, rnd, with_columns=True), 0, len(want)) == want


def test_past_4_gib_the_same_bytes_as_without_columns() -> None:
    """Entries of 1.5 GiB push later local headers past 4 GiB (ZIP64 offsets) and one entry is 4 GiB itself:
    the columns must give way to the entry-by-entry layout there. Only the ranges that skip the data are
    compared (a few MiB), each with columns and without."""
    rnd = random.Random(7)
    entries = []
    for i in range(12):
        size = [0x60000000, 0x100000000, 50][i % 3]
        ms = rnd.randrange(0, 2_000_000_000_000)
        entries.append(Entry(f"big{i:02d}", size, rnd.randrange(1 << 32), EPOCH + timedelta(milliseconds=ms), ms, None))
    small = random_entries(rnd, 200)
    entries += [Entry("zz" + e.key, e.decoded_size, e.crc32, e.modified_at, e.ms, e.data) for e in small]
    plain = [list(entries[i : i + 5]) for i in range(0, len(entries), 5)]
    cols = batched(entries, random.Random(1), with_columns=True)
    offset = sum(30 + 9 + len(e.key.encode()) + (20 if e.decoded_size >= 0xFFFFFFFF else 0) + e.decoded_size
                 for e in entries)
    size = len(archive(plain, offset, offset)) + offset  # 0: just to walk nothing
    end_of_central = offset + 100_000  # well past the end: iter_range stops at the archive's end
    tail_plain = archive(plain, offset - 5000, offset - 5000 + 1)
    assert tail_plain == archive(cols, offset - 5000, offset - 5000 + 1)
    for a in [offset - 300, offset, offset + 7, offset + 5000]:
        with_plain = _to_end(plain, a, end_of_central)
        assert with_plain == _to_end(cols, a, end_of_central)
    assert size == offset


def _to_end(batches: list[Any], start: int, guess_end: int) -> bytes:
    """Bytes from ``start`` to the archive's end (found by asking for too much and reading the error)."""
    try:
        return archive(batches, start, guess_end)
    except ValueError as exc:
        real_end = int(str(exc).split("past the archive's end ")[1])
        return archive(batches, start, real_end)
