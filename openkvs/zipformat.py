"""The ZIP records of a deterministic, uncompressed ("stored") ZIP/ZIP64 archive, one entry at a time: the
format's constants, the time stamps, each entry's local and central header, and the end records. Every header is a
pure function of the entry's metadata and position; ``zipwriter`` lays them out, ``zipblocks`` a batch at a time,
``zipsize`` counts them.

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

import functools
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class ZipEntry(Protocol):
    """What the writer needs to know about one file. ``storage.base.RecordMeta`` satisfies it."""

    key: str  # the file name; encoded as UTF-8
    decoded_size: int  # data length in bytes
    crc32: int  # CRC-32 of the data
    modified_at: datetime  # timezone-aware UTC


# -- format constants -------------------------------------------------------------------------------------------

LIMIT32 = 0xFFFFFFFF  # a 32-bit field holding this value means "see the ZIP64 extra / record"
LIMIT16 = 0xFFFF
FLAGS = 0x0800  # bit 11: names are UTF-8. Bit 3 (data descriptor) is never set.
METHOD_STORED = 0
VERSION_NEEDED = 20  # 2.0: plain stored files
VERSION_NEEDED_ZIP64 = 45  # 4.5: ZIP64
VERSION_MADE_BY = 0x031E  # high byte 3 = Unix (so external attributes are Unix modes), low byte 30 = spec 3.0
EXTERNAL_ATTR = 0o100644 << 16  # regular file, rw-r--r--

LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes
_UT_EXTRA = struct.Struct("<HHBI")  # 0x5455 extended timestamp, flags=1 (mtime only): 9 bytes, same in both forms

UT_LEN = _UT_EXTRA.size
LOCAL_ZIP64_LEN = 4 + 16  # header + original size + compressed size
LOCAL_FIXED = LOCAL.size + UT_LEN  # 39: a local header without its name and without ZIP64
CENTRAL_FIXED = CENTRAL.size + UT_LEN  # 55: the same for a central header
_TAIL_CLASSIC = _EOCD.size
_TAIL_ZIP64 = _EOCD64.size + _LOCATOR64.size + _EOCD.size

_DOS_MIN = (0x0021, 0x0000)  # (date, time) of 1980-01-01 00:00:00
_DOS_MAX = ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29)  # 2107-12-31 23:59:58


# -- per-entry pieces -------------------------------------------------------------------------------------------


def entry_name(entry: ZipEntry) -> bytes:
    name = entry.key.encode("utf-8")
    if len(name) > LIMIT16:
        raise ValueError(f"entry name is {len(name)} bytes; ZIP allows at most 65535")
    return name


def check_entry(entry: ZipEntry) -> int:
    size = entry.decoded_size
    if size < 0 or not 0 <= entry.crc32 <= LIMIT32:
        raise ValueError(f"entry {entry.key!r}: bad size {size} or crc32 {entry.crc32}")
    return size


def local_len(name_len: int, size: int) -> int:
    return LOCAL_FIXED + name_len + (LOCAL_ZIP64_LEN if size >= LIMIT32 else 0)


def central_len(name_len: int, size: int, offset: int) -> int:
    fields = (2 if size >= LIMIT32 else 0) + (1 if offset >= LIMIT32 else 0)
    return CENTRAL_FIXED + name_len + (4 + 8 * fields if fields else 0)


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
def stamps_at(seconds: int) -> tuple[int, int, int]:
    """``_stamps`` of a time given as whole seconds since 1970: the same values, since they depend only on the
    floored second."""
    return _stamps(_UNIX_EPOCH + timedelta(seconds=seconds))


# One struct per name length: a header and its name and time stamp extra packed in one call.
@functools.lru_cache(maxsize=512)
def local_struct(name_len: int) -> Callable[..., bytes]:
    return struct.Struct(f"{LOCAL.format}{name_len}s{_UT_EXTRA.format[1:]}").pack


@functools.lru_cache(maxsize=512)
def central_struct(name_len: int) -> Callable[..., bytes]:
    return struct.Struct(f"{CENTRAL.format}{name_len}s{_UT_EXTRA.format[1:]}").pack


def local_header(key: str, size: int, crc: int, seconds: int) -> bytes:
    """The local header of an entry that starts below 4 GiB, from what is known when its record is written (its
    name, decoded size, CRC-32 and ``modified_at`` as whole seconds since 1970, floored), for a storage to keep
    with the record: ``LocalBlock`` and ``CentralBlock`` are made from these. Empty if the entry cannot be in an
    archive (its name is longer than ZIP allows, a bad size or CRC)."""
    name = key.encode("utf-8")
    n = len(name)
    if n > LIMIT16 or size < 0 or not 0 <= crc <= LIMIT32:
        return b""
    date, time, mtime = stamps_at(seconds)
    if size < LIMIT32:
        return local_struct(n)(
            0x04034B50, VERSION_NEEDED, FLAGS, METHOD_STORED, time, date, crc, size, size, n, UT_LEN,
            name, 0x5455, 5, 1, mtime,
        )
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size) + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    head = LOCAL.pack(
        0x04034B50, VERSION_NEEDED_ZIP64, FLAGS, METHOD_STORED, time, date, crc, LIMIT32, LIMIT32, n, len(extra)
    )
    return head + name + extra


def entry_local_header(entry: ZipEntry, name: bytes, size: int, offset: int) -> bytes:
    if size < LIMIT32 and offset < LIMIT32:  # the common case, without ZIP64: two packs and a concatenation
        date, time, mtime = _stamps(entry.modified_at)
        return (
            LOCAL.pack(
                0x04034B50, VERSION_NEEDED, FLAGS, METHOD_STORED, time, date, entry.crc32, size, size, len(name),
                UT_LEN,
            )
            + name
            + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
        )
    big = size >= LIMIT32
    zip64 = big or offset >= LIMIT32  # same "version needed" in both headers of an entry
    date, time, mtime = _stamps(entry.modified_at)
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size) if big else b""
    extra += _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    size32 = LIMIT32 if big else size
    head = LOCAL.pack(
        0x04034B50,
        VERSION_NEEDED_ZIP64 if zip64 else VERSION_NEEDED,
        FLAGS,
        METHOD_STORED,
        time,
        date,
        entry.crc32,
        size32,  # compressed size == size (stored)
        size32,
        len(name),
        len(extra),
    )
    return head + name + extra


def entry_central_header(entry: ZipEntry, name: bytes, size: int, offset: int) -> bytes:
    if size < LIMIT32 and offset < LIMIT32:  # the common case, without ZIP64
        date, time, mtime = _stamps(entry.modified_at)
        return (
            CENTRAL.pack(
                0x02014B50, VERSION_MADE_BY, VERSION_NEEDED, FLAGS, METHOD_STORED, time, date, entry.crc32, size,
                size, len(name), UT_LEN, 0, 0, 0, EXTERNAL_ATTR, offset,
            )
            + name
            + _UT_EXTRA.pack(0x5455, 5, 1, mtime)
        )
    big = size >= LIMIT32
    far = offset >= LIMIT32
    date, time, mtime = _stamps(entry.modified_at)
    # The ZIP64 extra holds only the replaced fields, in the order APPNOTE 4.5.3 fixes.
    fields = ([size, size] if big else []) + ([offset] if far else [])
    extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
    extra += _UT_EXTRA.pack(0x5455, 5, 1, mtime)
    size32 = LIMIT32 if big else size
    head = CENTRAL.pack(
        0x02014B50,
        VERSION_MADE_BY,
        VERSION_NEEDED_ZIP64 if (big or far) else VERSION_NEEDED,
        FLAGS,
        METHOD_STORED,
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
        EXTERNAL_ATTR,
        LIMIT32 if far else offset,
    )
    return head + name + extra


def _needs_zip64_end(count: int, cd_offset: int, cd_size: int) -> bool:
    return count >= LIMIT16 or cd_size >= LIMIT32 or cd_offset >= LIMIT32


def end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    """Everything after the central directory."""
    out = b""
    if _needs_zip64_end(count, cd_offset, cd_size):
        eocd64_offset = cd_offset + cd_size
        out += _EOCD64.pack(
            0x06064B50, _EOCD64.size - 12, VERSION_MADE_BY, VERSION_NEEDED_ZIP64, 0, 0, count, count, cd_size,
            cd_offset,
        )
        out += _LOCATOR64.pack(0x07064B50, 0, eocd64_offset, 1)
    # Only the fields that overflow get the "see ZIP64" marker; the others keep their real values.
    count16 = LIMIT16 if count >= LIMIT16 else count
    out += _EOCD.pack(
        0x06054B50, 0, 0, count16, count16,
        LIMIT32 if cd_size >= LIMIT32 else cd_size,
        LIMIT32 if cd_offset >= LIMIT32 else cd_offset,
        0,
    )
    return out


def tail_len(count: int, cd_offset: int, cd_size: int) -> int:
    return _TAIL_ZIP64 if _needs_zip64_end(count, cd_offset, cd_size) else _TAIL_CLASSIC

