"""The ZIP endpoint's size before the first byte: from SQL aggregates when they decide it, else from one pass."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from openkvs import zipwriter
from openkvs.api.download import _archive_size
from openkvs.storage.base import SnapshotTotals

GIB = 1024**3


@dataclass(frozen=True)
class Entry:
    key: str
    decoded_size: int
    crc32: int = 0
    modified_at: datetime = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeSnapshot:
    """Metadata only: the size pass never reads record bytes, so no gigabytes are needed."""

    generation = 1

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = entries
        self.batches_served = 0
        self.totals = SnapshotTotals(
            count=len(entries),
            key_bytes=sum(len(e.key.encode()) for e in entries),
            decoded_bytes=sum(e.decoded_size for e in entries),
            big_count=sum(e.decoded_size >= 0xFFFFFFFF for e in entries),
        )

    async def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[Entry]]:
        for i in range(0, len(self._entries), 2):
            self.batches_served += 1
            yield self._entries[i : i + 2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "sizes",
    [
        [10, 20, 30],  # small: aggregates decide, no pass
        [3 * GIB, 2 * GIB, 100, 5],  # local headers past 4 GiB: offsets need ZIP64
        [5 * GIB, 1],  # one entry of 4 GiB or more, then one past it
        [0xFFFFFFFE, 0xFFFFFFFF, 7],
    ],
)
async def test_size_matches_a_full_pass(sizes: list[int]) -> None:
    entries = [Entry(f"k{i:03d}", n) for i, n in enumerate(sizes)]
    snap = FakeSnapshot(entries)
    assert await _archive_size(snap) == zipwriter.archive_size(entries)  # type: ignore[arg-type]
    needs_pass = sum(sizes) + 100 >= 0xFFFFFFFF
    assert (snap.batches_served > 0) == needs_pass


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
