"""The exact length of an archive before its first byte: from its entries in one streaming pass, or from a store's
totals alone."""

from __future__ import annotations

from collections.abc import Iterable

from openkvs.zipformat import (
    CENTRAL_FIXED,
    LIMIT32,
    LOCAL_FIXED,
    LOCAL_ZIP64_LEN,
    ZipEntry,
    central_len,
    check_entry,
    entry_name,
    local_len,
    tail_len,
)


class SizeCounter:
    """The exact archive length, fed one entry at a time (for entries that arrive in async batches)."""

    def __init__(self) -> None:
        self.offset = 0  # where the next local header goes
        self.cd_size = 0
        self.count = 0

    def add(self, entry: ZipEntry) -> None:
        size = check_entry(entry)
        n = len(entry_name(entry))
        self.cd_size += central_len(n, size, self.offset)
        self.offset += local_len(n, size) + size
        self.count += 1

    def total(self) -> int:
        return self.offset + self.cd_size + tail_len(self.count, self.offset, self.cd_size)


def archive_size(entries: Iterable[ZipEntry]) -> int:
    """The exact archive length, in one streaming pass with O(1) memory."""
    counter = SizeCounter()
    for entry in entries:
        counter.add(entry)
    return counter.total()


def archive_size_from_totals(count: int, key_bytes: int, decoded_bytes: int, big_count: int) -> int | None:
    """The exact archive length from aggregates, or None when they cannot decide it.

    ``key_bytes`` is the sum of the UTF-8 name lengths, ``big_count`` the number of entries of 0xFFFFFFFF bytes or
    more. The only thing the aggregates cannot tell is which local headers start at or past 0xFFFFFFFF (each of
    those adds 8 or 12 bytes to its central header), so None is returned unless no local header can start there.
    The central directory's own offset and size are known exactly from the totals.
    """
    if min(count, key_bytes, decoded_bytes, big_count) < 0 or big_count > count or decoded_bytes < big_count * LIMIT32:
        raise ValueError("inconsistent totals")
    local_total = count * LOCAL_FIXED + key_bytes + big_count * LOCAL_ZIP64_LEN + decoded_bytes
    # Every entry spans at least LOCAL_FIXED bytes, so the last (largest) local-header offset is at most
    # local_total - LOCAL_FIXED; a single entry always starts at 0.
    if count > 1 and local_total - LOCAL_FIXED >= LIMIT32:
        return None
    cd_size = count * CENTRAL_FIXED + key_bytes + big_count * (4 + 16)
    return local_total + cd_size + tail_len(count, local_total, cd_size)
