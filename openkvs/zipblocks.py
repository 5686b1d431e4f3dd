"""A batch of entries laid out at once, without an object or a call per entry: from columns (``Columns``), or
from the local headers a storage keeps since each record was written (``LocalBlock``, ``CentralBlock``,
``central_from_heads``). The bytes are those ``zipformat`` makes entry by entry (tests/test_zip_columns.py,
tests/test_zip_blocks.py, tests/test_zip_heads.py)."""

from __future__ import annotations

import array
import functools
import itertools
import operator
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from openkvs.zipformat import (
    CENTRAL_FIXED,
    EXTERNAL_ATTR,
    FLAGS,
    LIMIT16,
    LIMIT32,
    LOCAL,
    LOCAL_FIXED,
    METHOD_STORED,
    UT_LEN,
    VERSION_MADE_BY,
    VERSION_NEEDED,
    central_struct,
    local_struct,
    stamps_at,
)


class Columns(NamedTuple):
    """A whole batch of entries as columns, which a batch may carry as its ``columns`` attribute (None: it has
    none). With them an archive of many small records is laid out a batch at a time, without an entry object, a
    call or an await per record; the bytes are the same as the entries' own (tests/test_zip_columns.py).

    ``seconds`` is each entry's ``modified_at`` as whole seconds since 1970 (floored; truncated toward zero is
    as good, since every time before 1980 gives the same stamps). ``data``: every entry's decoded bytes if all of
    them are in memory, else None (then only the central directory is laid out from the columns)."""

    names: Sequence[bytes]  # UTF-8 entry names
    sizes: Sequence[int]
    crcs: Sequence[int]
    seconds: Sequence[int]
    data: Sequence[bytes] | None


@dataclass(frozen=True, slots=True)
class LocalBlock:
    """A batch of ``count`` entries whose local headers and data a storage read as one piece (``data``), from each
    record's ``local_header`` kept since it was written: laid out by the writer with one slice, no work per
    entry. Valid where every header of the batch starts below 4 GiB (the writer checks that)."""

    count: int
    data: bytes

    def __len__(self) -> int:  # the entries it stands for, as a batch's length
        return self.count


@dataclass(frozen=True, slots=True)
class CentralBlock:
    """A batch of ``count`` entries' central headers, made by a storage from the kept local headers (see
    ``CENTRAL_LEAD``), their local headers laid out from ``local_start`` (the offset of the first) to
    ``local_end``, below 4 GiB. The writer checks ``local_start`` against its own count."""

    count: int
    data: bytes
    local_start: int
    local_end: int

    def __len__(self) -> int:
        return self.count


# A central header below 4 GiB, from its entry's local header ``h`` and offset ``o`` (a storage may build it in
# SQL): CENTRAL_LEAD + h[4:30] + CENTRAL_MID + o as 4 bytes little-endian + h[30:].
CENTRAL_LEAD = struct.pack("<IH", 0x02014B50, VERSION_MADE_BY)
CENTRAL_MID = struct.pack("<HHHI", 0, 0, 0, EXTERNAL_ATTR)


_BIG_ENDIAN = sys.byteorder == "big"
assert array.array("I").itemsize == 4


def kept_headers_fit(count: int, key_bytes: int, decoded_bytes: int, big_count: int) -> bool:
    """Whether every entry of an archive with these totals (see ``archive_size_from_totals``) can come in a
    ``LocalBlock`` or ``CentralBlock``: all its local headers and data lie below 4 GiB."""
    return big_count == 0 and count * LOCAL_FIXED + key_bytes + decoded_bytes <= LIMIT32


def central_from_heads(heads: bytes, count: int, base: int) -> CentralBlock | None:
    """The ``CentralBlock`` of ``count`` entries from their kept local headers (``local_header``) concatenated in
    ``heads``, the first entry's local header at ``base``, when every header has the same length (names of one
    byte length, no ZIP64 sizes) and the batch ends below 4 GiB; else None (the caller lays it out another way).

    Without an object or a call per entry: each column of the headers' bytes is copied by one strided
    memoryview assignment (a name of 9 bytes: 48 of them for the whole batch), the sizes for the offsets read
    the same way from the headers' own size fields. The bytes are those of CENTRAL_LEAD + h[4:30] +
    CENTRAL_MID + offset + h[30:] per header (tests/test_zip_heads.py)."""
    if count <= 0 or len(heads) % count:
        return None
    h = len(heads) // count  # each header's length, if they are all of one
    n = h - LOCAL_FIXED  # the name's
    if n < 0 or n > LIMIT16:
        return None
    # Every header has the signature, this name length and the time stamp extra alone (no ZIP64 sizes) where a
    # header of length h would have them: then each of them is h bytes long.
    sig = LOCAL.pack(0x04034B50, 0, 0, 0, 0, 0, 0, 0, 0, n, UT_LEN)
    for i in (0, 1, 2, 3, 26, 27, 28, 29):
        if heads[i::h] != bytes((sig[i],)) * count:
            return None
    sizes = bytearray(4 * count)
    for i in range(4):
        sizes[i::4] = heads[22 + i :: h]
    spans = array.array("I", sizes)  # (4 bytes: checked at import)
    if _BIG_ENDIAN:
        spans.byteswap()
    offsets = list(itertools.accumulate(map(operator.add, spans, itertools.repeat(h)), initial=base))
    end = offsets.pop()
    if end > LIMIT32:
        return None
    packed = array.array("I", offsets)
    if _BIG_ENDIAN:
        packed.byteswap()
    off = packed.tobytes()
    c = h + CENTRAL_FIXED - LOCAL_FIXED  # a central header's length: 16 more than the local one's
    out = bytearray(_central_template(c)) * count
    lead = len(CENTRAL_LEAD)  # h[4:30] goes to [6:32], the offset to [44:48], h[30:] to [48:]
    for i in range(4, 30):
        out[lead - 4 + i :: c] = heads[i::h]
    at = lead + 26 + len(CENTRAL_MID)
    for i in range(4):
        out[at + i :: c] = off[i::4]
    for i in range(30, h):
        out[at + 4 - 30 + i :: c] = heads[i::h]
    return CentralBlock(count, bytes(out), base, end)


@functools.lru_cache(maxsize=64)
def _central_template(c: int) -> bytes:
    """A central header's constant bytes (CENTRAL_LEAD, CENTRAL_MID), zeros elsewhere, ``c`` bytes long."""
    return (CENTRAL_LEAD + bytes(26) + CENTRAL_MID).ljust(c, b"\0")


def columns_ok(cols: Columns) -> bool:
    """Whether the batch can be laid out in bulk: names within ZIP's limit and sizes and CRCs in range (else the
    entry by entry path reports the bad one)."""
    names, sizes, crcs = cols.names, cols.sizes, cols.crcs
    return (
        len(names) == len(sizes) == len(crcs) == len(cols.seconds)
        and bool(names)
        and max(map(len, names)) <= LIMIT16
        and min(sizes) >= 0
        and min(crcs) >= 0
        and max(crcs) <= LIMIT32
    )


def local_span(cols: Columns) -> int:
    """The bytes the batch's local headers and data take, when no entry needs ZIP64 sizes."""
    return len(cols.names) * LOCAL_FIXED + sum(map(len, cols.names)) + sum(cols.sizes)


def local_block(cols: Columns, data: Sequence[bytes], out: list[bytes]) -> None:
    """Append the local headers and data of a whole batch to ``out``: the same bytes as ``entry_local_header`` and
    the data entry by entry, for batches whose every local header starts below 4 GiB and no entry is 4 GiB."""
    append = out.append
    sig, ut_sig = 0x04034B50, 0x5455
    for name, size, crc, (date, time, mtime), blob in zip(
        cols.names, cols.sizes, cols.crcs, map(stamps_at, cols.seconds), data, strict=True
    ):
        n = len(name)
        append(local_struct(n)(
            sig, VERSION_NEEDED, FLAGS, METHOD_STORED, time, date, crc, size, size, n, UT_LEN,
            name, ut_sig, 5, 1, mtime,
        ))
        append(blob)


def central_block(cols: Columns, local_offset: int, out: list[bytes]) -> int:
    """Append the central headers of a whole batch to ``out``, its first entry's local header at
    ``local_offset``; returns the local offset after the batch. Same conditions as ``local_block``."""
    append = out.append
    sig, ut_sig = 0x02014B50, 0x5455
    offset = local_offset
    for name, size, crc, (date, time, mtime) in zip(
        cols.names, cols.sizes, cols.crcs, map(stamps_at, cols.seconds), strict=True
    ):
        n = len(name)
        append(central_struct(n)(
            sig, VERSION_MADE_BY, VERSION_NEEDED, FLAGS, METHOD_STORED, time, date, crc, size, size, n,
            UT_LEN, 0, 0, 0, EXTERNAL_ATTR, offset, name, ut_sig, 5, 1, mtime,
        ))
        offset += LOCAL_FIXED + n + size
    return offset
