"""A deterministic, uncompressed ("stored") ZIP/ZIP64 writer that knows its exact size up front and can produce
any byte range of the archive without building the rest.

Why our own: the download endpoint must send ``Content-Length`` before the first byte and answer ``Range``
requests on archives of a million records or many gigabytes. With method 0 (stored) and the CRC-32 and sizes
known in advance (the storage computes them when a record is written), every header is a pure function of the
entry metadata and its position, so the archive is fully determined by the ordered entry list. Nothing here
holds the entry list in memory: everything works in streaming passes over ``batches()``.

Layout (``n`` = UTF-8 name length)::

    offset 0
    ┌───────────────────────────────────────────────┐
    │ local header 1   30 + n + [20 ZIP64] + 9 (UT)  │  ZIP64 extra only when size >= 0xFFFFFFFF
    │ data 1           size bytes, as is             │
    │ ... one header + data per entry, in order ...  │
    ├───────────────────────────────────────────────┤  cd_offset
    │ central header 1 46 + n + [4 + 8*k ZIP64] + 9  │  k = fields that overflowed: size, size, offset
    │ ...                                            │
    ├───────────────────────────────────────────────┤  cd_offset + cd_size
    │ [ZIP64 end of central directory record  56]    │  only if count >= 0xFFFF or the central
    │ [ZIP64 end of central directory locator 20]    │  directory's size or offset >= 0xFFFFFFFF
    │ end of central directory record         22     │  no archive comment
    └───────────────────────────────────────────────┘

No data descriptors (flag bit 3 is never set): sizes and CRC are in the local headers, which is what lets any
byte be computed from the metadata alone. Entry times come from ``modified_at`` only, so the same entries in
the same order always give byte-identical archives.
"""

from __future__ import annotations

import array
import functools
import itertools
import operator
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar

__all__ = [
    "ZipEntry",
    "Columns",
    "LocalBlock",
    "CentralBlock",
    "local_header",
    "kept_headers_fit",
    "central_from_heads",
    "CENTRAL_LEAD",
    "CENTRAL_MID",
    "ArchiveDataError",
    "archive_size",
    "archive_size_from_totals",
    "iter_range",
    "build_archive",
]


class ZipEntry(Protocol):
    """What the writer needs to know about one file. ``storage.base.RecordMeta`` satisfies it."""

    key: str  # the file name; encoded as UTF-8
    decoded_size: int  # data length in bytes
    crc32: int  # CRC-32 of the data
    modified_at: datetime  # timezone-aware UTC


E = TypeVar("E", bound=ZipEntry)  # the caller's entry type: what its batches give, its read and inline take


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


class ArchiveDataError(RuntimeError):
    """The data or the entry list did not match the metadata the archive was laid out from. Raised instead of
    emitting bytes that would make a corrupt archive (the HTTP layer then aborts the response)."""


# -- format constants -------------------------------------------------------------------------------------------

_LIMIT32 = 0xFFFFFFFF  # a 32-bit field holding this value means "see the ZIP64 extra / record"
_LIMIT16 = 0xFFFF
_FLAGS = 0x0800  # bit 11: names are UTF-8. Bit 3 (data descriptor) is never set.
_METHOD_STORED = 0
_VERSION_NEEDED = 20  # 2.0: plain stored files
_VERSION_NEEDED_ZIP64 = 45  # 4.5: ZIP64
_VERSION_MADE_BY = 0x031E  # high byte 3 = Unix (so external attributes are Unix modes), low byte 30 = spec 3.0
_EXTERNAL_ATTR = 0o100644 << 16  # regular file, rw-r--r--

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes
_UT_EXTRA = struct.Struct("<HHBI")  # 0x5455 extended timestamp, flags=1 (mtime only): 9 bytes, same in both forms

_UT_LEN = _UT_EXTRA.size
_LOCAL_ZIP64_LEN = 4 + 16  # header + original size + compressed size
_LOCAL_FIXED = _LOCAL.size + _UT_LEN  # 39: a local header without its name and without ZIP64
_CENTRAL_FIXED = _CENTRAL.size + _UT_LEN  # 55: the same for a central header
_TAIL_CLASSIC = _EOCD.size
_TAIL_ZIP64 = _EOCD64.size + _LOCATOR64.size + _EOCD.size

# Coalescing: small pieces (headers, small records) are gathered into chunks of at least this size; data chunks
# at least this large are passed through untouched. The buffer therefore stays below 2 * _CHUNK. Big enough that
# the per-chunk cost downstream (one ASGI message and socket write each) is small next to copying the bytes once.
_CHUNK = 256 * 1024

_DOS_MIN = (0x0021, 0x0000)  # (date, time) of 1980-01-01 00:00:00
_DOS_MAX = ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29)  # 2107-12-31 23:59:58


# A central header below 4 GiB, from its entry's local header ``h`` and offset ``o`` (a storage may build it in
# SQL): CENTRAL_LEAD + h[4:30] + CENTRAL_MID + o as 4 bytes little-endian + h[30:].
CENTRAL_LEAD = struct.pack("<IH", 0x02014B50, _VERSION_MADE_BY)
CENTRAL_MID = struct.pack("<HHHI", 0, 0, 0, _EXTERNAL_ATTR)


_BIG_ENDIAN = sys.byteorder == "big"
assert array.array("I").itemsize == 4


# -- per-entry pieces -------------------------------------------------------------------------------------------


def _name(entry: ZipEntry) -> bytes:
    name = entry.key.encode("utf-8")
    if len(name) > _LIMIT16:
        raise ValueError(f"entry name is {len(name)} bytes; ZIP allows at most 65535")
    return name


def _check(entry: ZipEntry) -> int:
    size = entry.decoded_size
    if size < 0 or not 0 <= entry.crc32 <= _LIMIT32:
        raise ValueError(f"entry {entry.key!r}: bad size {size} or crc32 {entry.crc32}")
    return size


def _local_len(name_len: int, size: int) -> int:
    return _LOCAL_FIXED + name_len + (_LOCAL_ZIP64_LEN if size >= _LIMIT32 else 0)


def _central_len(name_len: int, size: int, offset: int) -> int:
    fields = (2 if size >= _LIMIT32 else 0) + (1 if offset >= _LIMIT32 else 0)
    return _CENTRAL_FIXED + name_len + (4 + 8 * fields if fields else 0)




def _stamps(dt: datetime) -> tuple[int, int, int]:
    """(DOS date, DOS time, Unix mtime) of ``dt``, all in UTC.

    DOS: 2-second resolution (seconds floored), clamped to 1980-01-01 00:00:00 .. 2107-12-31 23:59:58.
    Unix mtime for the 0x5455 extra: readers disagree on whether its 32 bits are signed (Info-ZIP) or unsigned
    (libarchive), so it is clamped to the range where both agree, 1970-01-01 .. 2038-01-19; the DOS fields still
    carry later dates up to 2107.
    """
    # The contract says tz-aware UTC; a naive value is taken as UTC rather than as the server's local time.
    tz = dt.tzinfo
    if tz is not UTC:
        dt = dt.astimezone(UTC) if tz is not None else dt.replace(tzinfo=UTC)
    # timestamp() of an aware datetime is a correctly rounded division, so it never rounds up to the next whole
    # second: int() floors it exactly (negative values are clamped to 0 first).
    ts = dt.timestamp()
    mtime = 0 if ts < 0 else 0x7FFFFFFF if ts >= 0x7FFFFFFF else int(ts)
    year = dt.year
    if year < 1980:
        return (*_DOS_MIN, mtime)
    if year > 2107:
        return (*_DOS_MAX, mtime)
    return (
        ((year - 1980) << 9) | (dt.month << 5) | dt.day,
        (dt.hour << 11) | (dt.minute << 5) | (dt.second >> 1),
        mtime,
    )


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4096)  # records written in the same second share their stamps
def _stamps_at(seconds: int) -> tuple[int, int, int]:
    """``_stamps`` of a time given as whole seconds since 1970: the same values, since they depend only on the
    floored second."""
    return _stamps(_UNIX_EPOCH + timedelta(seconds=seconds))


# One struct per name length: a header and its name and time stamp extra packed in one call.
@functools.lru_cache(maxsize=512)
def _local_struct(name_len: int) -> Callable[..., bytes]:
    return struct.Struct(f"{_LOCAL.format}{name_len}s{_UT_EXTRA.format[1:]}").pack


@functools.lru_cache(maxsize=512)
def _central_struct(name_len: int) -> Callable[..., bytes]:
    return struct.Struct(f"{_CENTRAL.format}{name_len}s{_UT_EXTRA.format[1:]}").pack


def local_header(key: str, size: int, crc: int, seconds: int) -> bytes:
    """The local header of an entry that starts below 4 GiB, from what is known when its record is written (its
    name, decoded size, CRC-32 and ``modified_at`` as whole seconds since 1970, floored), for a storage to keep
    with the record: ``LocalBlock`` and ``CentralBlock`` are made from these. Empty if the entry cannot be in an
    archive (its name is longer than ZIP allows, a bad size or CRC)."""
    name = key.encode("utf-8")
    n = len(name)
    if n > _LIMIT16 or size < 0 or not 0 <= crc <= _LIMIT32:
        return b""
    date, time, mtime = _stamps_at(seconds)
    if size < _LIMIT32:
        return _local_struct(n)(
            0x04034B50, _VERSION_NEEDED, _FLAGS, _METHOD_STORED, time, date, crc, size, size, n, _UT_LEN,
            name, 0x5455, 5, 1, mtime,
        )
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size) + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    head = _LOCAL.pack(
        0x04034B50, _VERSION_NEEDED_ZIP64, _FLAGS, _METHOD_STORED, time, date, crc, _LIMIT32, _LIMIT32, n, len(extra)
    )
    return head + name + extra


def kept_headers_fit(count: int, key_bytes: int, decoded_bytes: int, big_count: int) -> bool:
    """Whether every entry of an archive with these totals (see ``archive_size_from_totals``) can come in a
    ``LocalBlock`` or ``CentralBlock``: all its local headers and data lie below 4 GiB."""
    return big_count == 0 and count * _LOCAL_FIXED + key_bytes + decoded_bytes <= _LIMIT32


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
    n = h - _LOCAL_FIXED  # the name's
    if n < 0 or n > _LIMIT16:
        return None
    # Every header has the signature, this name length and the time stamp extra alone (no ZIP64 sizes) where a
    # header of length h would have them: then each of them is h bytes long.
    sig = _LOCAL.pack(0x04034B50, 0, 0, 0, 0, 0, 0, 0, 0, n, _UT_LEN)
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
    if end > _LIMIT32:
        return None
    packed = array.array("I", offsets)
    if _BIG_ENDIAN:
        packed.byteswap()
    off = packed.tobytes()
    c = h + _CENTRAL_FIXED - _LOCAL_FIXED  # a central header's length: 16 more than the local one's
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


def _columns_ok(cols: Columns) -> bool:
    """Whether the batch can be laid out in bulk: names within ZIP's limit and sizes and CRCs in range (else the
    entry by entry path reports the bad one)."""
    names, sizes, crcs = cols.names, cols.sizes, cols.crcs
    return (
        len(names) == len(sizes) == len(crcs) == len(cols.seconds)
        and bool(names)
        and max(map(len, names)) <= _LIMIT16
        and min(sizes) >= 0
        and min(crcs) >= 0
        and max(crcs) <= _LIMIT32
    )


def _local_span(cols: Columns) -> int:
    """The bytes the batch's local headers and data take, when no entry needs ZIP64 sizes."""
    return len(cols.names) * _LOCAL_FIXED + sum(map(len, cols.names)) + sum(cols.sizes)


def _local_block(cols: Columns, data: Sequence[bytes], out: list[bytes]) -> None:
    """Append the local headers and data of a whole batch to ``out``: the same bytes as ``_local_header`` and
    the data entry by entry, for batches whose every local header starts below 4 GiB and no entry is 4 GiB."""
    append = out.append
    sig, ut_sig = 0x04034B50, 0x5455
    for name, size, crc, (date, time, mtime), blob in zip(
        cols.names, cols.sizes, cols.crcs, map(_stamps_at, cols.seconds), data, strict=True
    ):
        n = len(name)
        append(_local_struct(n)(
            sig, _VERSION_NEEDED, _FLAGS, _METHOD_STORED, time, date, crc, size, size, n, _UT_LEN,
            name, ut_sig, 5, 1, mtime,
        ))
        append(blob)


def _central_block(cols: Columns, local_offset: int, out: list[bytes]) -> int:
    """Append the central headers of a whole batch to ``out``, its first entry's local header at
    ``local_offset``; returns the local offset after the batch. Same conditions as ``_local_block``."""
    append = out.append
    sig, ut_sig = 0x02014B50, 0x5455
    offset = local_offset
    for name, size, crc, (date, time, mtime) in zip(
        cols.names, cols.sizes, cols.crcs, map(_stamps_at, cols.seconds), strict=True
    ):
        n = len(name)
        append(_central_struct(n)(
            sig, _VERSION_MADE_BY, _VERSION_NEEDED, _FLAGS, _METHOD_STORED, time, date, crc, size, size, n,
            _UT_LEN, 0, 0, 0, _EXTERNAL_ATTR, offset, name, ut_sig, 5, 1, mtime,
        ))
        offset += _LOCAL_FIXED + n + size
    return offset


def _local_header(entry: ZipEntry, name: bytes, size: int, offset: int) -> bytes:
    if size < _LIMIT32 and offset < _LIMIT32:  # the common case, without ZIP64: two packs and a concatenation
        date, time, mtime = _stamps(entry.modified_at)
        return (
            _LOCAL.pack(
                0x04034B50, _VERSION_NEEDED, _FLAGS, _METHOD_STORED, time, date, entry.crc32, size, size, len(name),
                _UT_LEN,
            )
            + name
            + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
        )
    big = size >= _LIMIT32
    zip64 = big or offset >= _LIMIT32  # same "version needed" in both headers of an entry
    date, time, mtime = _stamps(entry.modified_at)
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size) if big else b""
    extra += _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    size32 = _LIMIT32 if big else size
    head = _LOCAL.pack(
        0x04034B50,
        _VERSION_NEEDED_ZIP64 if zip64 else _VERSION_NEEDED,
        _FLAGS,
        _METHOD_STORED,
        time,
        date,
        entry.crc32,
        size32,  # compressed size == size (stored)
        size32,
        len(name),
        len(extra),
    )
    return head + name + extra


def _central_header(entry: ZipEntry, name: bytes, size: int, offset: int) -> bytes:
    if size < _LIMIT32 and offset < _LIMIT32:  # the common case, without ZIP64
        date, time, mtime = _stamps(entry.modified_at)
        return (
            _CENTRAL.pack(
                0x02014B50, _VERSION_MADE_BY, _VERSION_NEEDED, _FLAGS, _METHOD_STORED, time, date, entry.crc32, size,
                size, len(name), _UT_LEN, 0, 0, 0, _EXTERNAL_ATTR, offset,
            )
            + name
            + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
        )
    big = size >= _LIMIT32
    far = offset >= _LIMIT32
    date, time, mtime = _stamps(entry.modified_at)
    # The ZIP64 extra holds only the replaced fields, in the order APPNOTE 4.5.3 fixes.
    fields = ([size, size] if big else []) + ([offset] if far else [])
    extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
    extra += _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    size32 = _LIMIT32 if big else size
    head = _CENTRAL.pack(
        0x02014B50,
        _VERSION_MADE_BY,
        _VERSION_NEEDED_ZIP64 if (big or far) else _VERSION_NEEDED,
        _FLAGS,
        _METHOD_STORED,
        time,
        date,
        entry.crc32,
        size32,
        size32,
        len(name),
        len(extra),
        0,  # comment length
        0,  # disk number start
        0,  # internal attributes
        _EXTERNAL_ATTR,
        _LIMIT32 if far else offset,
    )
    return head + name + extra


def _needs_zip64_end(count: int, cd_offset: int, cd_size: int) -> bool:
    return count >= _LIMIT16 or cd_size >= _LIMIT32 or cd_offset >= _LIMIT32


def _tail(count: int, cd_offset: int, cd_size: int) -> bytes:
    """Everything after the central directory."""
    out = b""
    if _needs_zip64_end(count, cd_offset, cd_size):
        eocd64_offset = cd_offset + cd_size
        out += _EOCD64.pack(
            0x06064B50, _EOCD64.size - 12, _VERSION_MADE_BY, _VERSION_NEEDED_ZIP64, 0, 0, count, count, cd_size,
            cd_offset,
        )
        out += _LOCATOR64.pack(0x07064B50, 0, eocd64_offset, 1)
    # Only the fields that overflow get the "see ZIP64" marker; the others keep their real values.
    count16 = _LIMIT16 if count >= _LIMIT16 else count
    out += _EOCD.pack(
        0x06054B50, 0, 0, count16, count16,
        _LIMIT32 if cd_size >= _LIMIT32 else cd_size,
        _LIMIT32 if cd_offset >= _LIMIT32 else cd_offset,
        0,
    )
    return out


def _tail_len(count: int, cd_offset: int, cd_size: int) -> int:
    return _TAIL_ZIP64 if _needs_zip64_end(count, cd_offset, cd_size) else _TAIL_CLASSIC


# -- sizes ------------------------------------------------------------------------------------------------------


class SizeCounter:
    """The exact archive length, fed one entry at a time (for entries that arrive in async batches)."""

    def __init__(self) -> None:
        self.offset = 0  # where the next local header goes
        self.cd_size = 0
        self.count = 0

    def add(self, entry: ZipEntry) -> None:
        size = _check(entry)
        n = len(_name(entry))
        self.cd_size += _central_len(n, size, self.offset)
        self.offset += _local_len(n, size) + size
        self.count += 1

    def total(self) -> int:
        return self.offset + self.cd_size + _tail_len(self.count, self.offset, self.cd_size)


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
    if min(count, key_bytes, decoded_bytes, big_count) < 0 or big_count > count or decoded_bytes < big_count * _LIMIT32:
        raise ValueError("inconsistent totals")
    local_total = count * _LOCAL_FIXED + key_bytes + big_count * _LOCAL_ZIP64_LEN + decoded_bytes
    # Every entry spans at least _LOCAL_FIXED bytes, so the last (largest) local-header offset is at most
    # local_total - _LOCAL_FIXED; a single entry always starts at 0.
    if count > 1 and local_total - _LOCAL_FIXED >= _LIMIT32:
        return None
    cd_size = count * _CENTRAL_FIXED + key_bytes + big_count * (4 + 16)
    return local_total + cd_size + _tail_len(count, local_total, cd_size)


# -- byte ranges ------------------------------------------------------------------------------------------------


async def _aclose(iterator: object) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def _read_exact(
    read: Callable[[E, int, int], AsyncIterator[bytes]], entry: E, lo: int, hi: int
) -> AsyncIterator[bytes]:
    want = hi - lo
    got = 0
    source = read(entry, lo, hi)
    try:
        async for chunk in source:
            got += len(chunk)
            if got > want:
                raise ArchiveDataError(f"record {entry.key!r}: read [{lo}, {hi}) returned more than {want} bytes")
            if chunk:
                yield chunk
    finally:
        await _aclose(source)
    if got != want:
        raise ArchiveDataError(f"record {entry.key!r}: read [{lo}, {hi}) returned {got} bytes, expected {want}")


def _block_out(
    block: bytes, at: int, start: int, end: int, parts: list[bytes], buffered: int, chunk: int
) -> tuple[list[bytes], int]:
    """The bytes of a LocalBlock or CentralBlock ``block`` (at archive offset ``at``) inside [start, end), added
    to the output: a piece of ``chunk`` bytes or more goes out as it is (after the pending small ``parts``), a
    smaller one joins ``parts`` (``buffered`` bytes long), which go out together once they reach ``chunk``.
    Returns the chunks to yield now (``parts`` is emptied when they include it) and the bytes left pending."""
    piece = block if start <= at and at + len(block) <= end else block[max(start - at, 0) : end - at]
    if len(piece) >= chunk:
        ready = [b"".join(parts), piece] if parts else [piece]
        parts.clear()
        return ready, 0
    parts.append(piece)
    buffered += len(piece)
    if buffered >= chunk:
        ready = [b"".join(parts)]
        parts.clear()
        return ready, 0
    return [], buffered


async def iter_range(
    batches: Callable[[], AsyncIterator[Sequence[E] | LocalBlock]],
    start: int,
    end: int,
    read: Callable[[E, int, int], AsyncIterator[bytes]],
    inline: Callable[[E], bytes | None] | None = None,
    listing: Callable[[], AsyncIterator[Sequence[E] | CentralBlock]] | None = None,
) -> AsyncIterator[bytes]:
    """Yield exactly the archive bytes [start, end) of the archive of the entries ``batches()`` gives.

    Pass 1 walks the local headers and data; entries wholly before ``start`` cost only arithmetic, ``read`` is
    called only for the data bytes inside the range, and the pass stops at ``end``. Only if the range reaches
    past the last data byte does pass 2 call ``batches()`` again to lay out the central directory (whose
    headers hold each entry's local offset, recomputed on the way) and then the end records.

    ``inline``, if given, returns an entry's whole data when it is already in memory (None otherwise): such
    entries are sliced and copied into the output synchronously, without calling ``read``; the bytes are the
    same either way. This is what makes archives of many small records cheap: a batch of them costs a header
    pack and a list append per entry, and one join per output chunk. ``listing``, if given, is used instead of
    ``batches`` for pass 2, which needs no data: the same entries in the same order, possibly without the bytes
    ``batches`` carries along.

    A batch may also be a ``LocalBlock`` (in ``batches``) or a ``CentralBlock`` (in ``listing``): the bytes of
    all its entries' headers (and data), which a storage made from headers it keeps; the writer then only slices
    them to the range. Batches given that way need a ``listing`` for pass 2.

    Output chunks: pieces smaller than the coalescing size are gathered into chunks of at least that size (only
    the last chunk, or one just before a big piece, can be smaller); bigger pieces are yielded as they are.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad range [{start}, {end})")
    if start == end:
        return
    chunk = _CHUNK
    parts: list[bytes] = []  # small pieces not yet yielded, in order
    buffered = 0  # their total length

    # Pass 1: local headers and data.
    offset = 0  # archive offset of the current local header
    count = 0
    source = batches()
    try:
        async for batch in source:
            if isinstance(batch, LocalBlock):  # headers and data read whole: a slice of them, if any, is the output
                block = batch.data
                span = len(block)
                if offset + span > _LIMIT32:
                    raise ArchiveDataError("kept local headers given for entries past 4 GiB")
                if offset + span > start:
                    ready, buffered = _block_out(block, offset, start, end, parts, buffered, chunk)
                    for out in ready:
                        yield out
                offset += span
                count += batch.count
                if offset >= end:
                    break
                continue
            cols: Columns | None = getattr(batch, "columns", None)
            if cols is not None and _columns_ok(cols):
                span = _local_span(cols)
                if offset + span <= start and max(cols.sizes) < _LIMIT32:  # wholly before the range: skipped
                    offset += span
                    count += len(cols.names)
                    continue
                # wholly inside the range, every local header below 4 GiB (so no entry of 4 GiB either)
                if cols.data is not None and start <= offset and offset + span <= end and offset + span < _LIMIT32:
                    if list(map(len, cols.data)) != list(cols.sizes):
                        raise ArchiveDataError("records in memory differ from their sizes")
                    _local_block(cols, cols.data, parts)
                    buffered += span
                    offset += span
                    count += len(cols.names)
                    if buffered >= chunk:
                        yield b"".join(parts)
                        parts = []
                        buffered = 0
                    if offset >= end:
                        break
                    continue
            for entry in batch:
                size = _check(entry)
                name = _name(entry)
                head_len = _LOCAL_FIXED + len(name) + (_LOCAL_ZIP64_LEN if size >= _LIMIT32 else 0)
                data_at = offset + head_len
                entry_end = data_at + size
                if entry_end > start:  # else wholly before the range: nothing to build or read
                    if data_at > start:
                        head = _local_header(entry, name, size, offset)
                        if offset < start or data_at > end:
                            head = head[max(start - offset, 0) : end - offset]
                        parts.append(head)
                        buffered += len(head)
                    lo = start - data_at if start > data_at else 0
                    hi = end - data_at if end < entry_end else size
                    if hi > lo:
                        blob = inline(entry) if inline is not None else None
                        if blob is not None:
                            if len(blob) != size:
                                raise ArchiveDataError(
                                    f"record {entry.key!r}: {len(blob)} bytes in memory, expected {size}"
                                )
                            piece = blob if hi - lo == size else blob[lo:hi]
                            if len(piece) >= chunk:
                                if parts:
                                    yield b"".join(parts)
                                    parts = []
                                    buffered = 0
                                yield piece
                            else:
                                parts.append(piece)
                                buffered += len(piece)
                        else:
                            async for piece in _read_exact(read, entry, lo, hi):
                                if len(piece) >= chunk:
                                    if parts:
                                        yield b"".join(parts)
                                        parts = []
                                        buffered = 0
                                    yield piece
                                else:
                                    parts.append(piece)
                                    buffered += len(piece)
                                    if buffered >= chunk:
                                        yield b"".join(parts)
                                        parts = []
                                        buffered = 0
                    if buffered >= chunk:
                        yield b"".join(parts)
                        parts = []
                        buffered = 0
                offset = entry_end
                count += 1
                if offset >= end:
                    break
            if offset >= end:
                break
    finally:
        await _aclose(source)
    if offset >= end:
        if parts:
            yield b"".join(parts)
        return

    # Pass 2: central directory, then the end records.
    cd_offset = offset
    local_offset = 0  # recomputed: each central header holds its entry's local-header offset
    position = cd_offset  # archive offset of the current central header
    seen = 0
    listed: AsyncIterator[Sequence[E] | LocalBlock | CentralBlock] = (listing or batches)()
    try:
        async for listed_batch in listed:
            if isinstance(listed_batch, LocalBlock):
                raise ValueError("batches that give LocalBlocks need a listing for the central directory")
            if isinstance(listed_batch, CentralBlock):  # central headers made whole by the storage
                if listed_batch.local_start != local_offset or listed_batch.local_end > _LIMIT32:
                    raise ArchiveDataError("the entries changed between the two passes over the store")
                block = listed_batch.data
                cd_span = len(block)
                if position + cd_span > start:
                    ready, buffered = _block_out(block, position, start, end, parts, buffered, chunk)
                    for out in ready:
                        yield out
                position += cd_span
                local_offset = listed_batch.local_end
                seen += listed_batch.count
                if position >= end:
                    break
                continue
            cols = getattr(listed_batch, "columns", None)
            if cols is not None and _columns_ok(cols) and local_offset + _local_span(cols) < _LIMIT32:
                # no entry's local header at or past 4 GiB, so no ZIP64 fields: every central header's length
                # is known from the columns
                span = _local_span(cols)
                cd_span = len(cols.names) * _CENTRAL_FIXED + sum(map(len, cols.names))
                if position + cd_span <= start:  # wholly before the range: skipped
                    position += cd_span
                    local_offset += span
                    seen += len(cols.names)
                    continue
                if start <= position and position + cd_span <= end:  # wholly inside the range
                    local_offset = _central_block(cols, local_offset, parts)
                    buffered += cd_span
                    position += cd_span
                    seen += len(cols.names)
                    if buffered >= chunk:
                        yield b"".join(parts)
                        parts = []
                        buffered = 0
                    if position >= end:
                        break
                    continue
            for entry in listed_batch:
                size = _check(entry)
                name = _name(entry)
                head_len = _central_len(len(name), size, local_offset)
                if position + head_len > start:
                    head = _central_header(entry, name, size, local_offset)
                    if position < start or position + head_len > end:
                        head = head[max(start - position, 0) : end - position]
                    parts.append(head)
                    buffered += len(head)
                    if buffered >= chunk:
                        yield b"".join(parts)
                        parts = []
                        buffered = 0
                position += head_len
                local_offset += _LOCAL_FIXED + len(name) + (_LOCAL_ZIP64_LEN if size >= _LIMIT32 else 0) + size
                seen += 1
                if position >= end:
                    break
            if position >= end:
                break
    finally:
        await _aclose(listed)
    if position < end:  # the whole central directory was walked: check it describes what pass 1 laid out
        if seen != count or local_offset != cd_offset:
            raise ArchiveDataError("the entries changed between the two passes over the store")
        tail = _tail(count, cd_offset, position - cd_offset)
        if end > position + len(tail):
            raise ValueError(f"range end {end} is past the archive's end {position + len(tail)}")
        parts.append(tail[max(start - position, 0) : end - position])
    if parts:
        yield b"".join(parts)


def build_archive(entries_with_data: Sequence[tuple[ZipEntry, bytes]]) -> bytes:
    """The whole archive in memory, for tests and small tools. Checks each data's length and CRC-32."""
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for entry, data in entries_with_data:
        size = _check(entry)
        if len(data) != size or zlib.crc32(data) != entry.crc32:
            raise ArchiveDataError(f"record {entry.key!r}: data does not match its size or CRC-32")
        name = _name(entry)
        head = _local_header(entry, name, size, offset)
        local += (head, data)
        central.append(_central_header(entry, name, size, offset))
        offset += len(head) + size
    cd_size = sum(map(len, central))
    return b"".join(local + central) + _tail(len(entries_with_data), offset, cd_size)
