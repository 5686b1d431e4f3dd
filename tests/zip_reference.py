"""The ZIP writer's per-entry layout as it was on main at b9e76b8, before archives were laid out a batch at a
time from columns (issue 19): frozen here so that tests can compare today's archives with the bytes the old
writer made for the same records. Do not "fix" or update this file: it is the reference, not the code."""

# ruff: noqa
from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

ZipEntry = Any


class ArchiveDataError(RuntimeError):
    pass


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
