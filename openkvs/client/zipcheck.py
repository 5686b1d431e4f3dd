"""The check of a downloaded archive, computed while its bytes arrive instead of by reading the file again.

openkvs's archives (openkvs/zipwriter.py) are stored ZIPs whose local headers carry each entry's CRC-32 and size,
so an entry's end is known from its header: ``ZipStream`` is fed the bytes in order as they are written and keeps,
for each entry, where its header was, a CRC-32 of its name, its size and the CRC-32 of the bytes that followed.
``check`` then reads only the central directory and holds every entry it lists to what went by at its offset.
Anything else (compression, data descriptors, bytes that are not a local header) is not an error here: the stream
gives up and ``check`` reads every entry from the file, as zipfile does.
"""

from __future__ import annotations

import struct
import zipfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from openkvs.crc import crc32

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes: signature ... name length, extra length
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_LIMIT32 = 0xFFFFFFFF  # "the size is in the ZIP64 extra field"
_READ = 1 << 20


class ZipStream:
    """Fed an archive's bytes in order from its first (``feed``); ``pos`` is how many it has seen."""

    def __init__(self) -> None:
        self.pos = 0
        self.gave_up = False  # not an archive this can follow: check() reads the file instead
        self._head = bytearray()  # a local header being collected
        self._need = _LOCAL.size
        self._left = 0  # bytes of the current entry's data still to come
        self._crc = 0
        self._central = False  # past the last entry: the central directory, which check() reads from the file
        self.offsets: array[int] = array("Q")  # per entry: local header offset, name CRC-32, size, data CRC-32
        self.names: array[int] = array("L")
        self.sizes: array[int] = array("Q")
        self.crcs: array[int] = array("L")

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not (self.gave_up or self._central):
            if self._left:
                n = min(self._left, len(view))
                self._crc = crc32(view[:n], self._crc)
                self._left -= n
                self.pos += n
                view = view[n:]
                if not self._left:
                    self.crcs.append(self._crc)
            else:
                n = min(self._need - len(self._head), len(view))
                self._head += view[:n]
                self.pos += n
                view = view[n:]
                if len(self._head) == self._need:
                    self._header()
        self.pos += len(view)

    def _header(self) -> None:
        head = self._head
        sig, _, flags, method, _, _, _, csize, usize, name_len, extra_len = _LOCAL.unpack_from(head)
        if sig == _CENTRAL_SIG and len(head) == _LOCAL.size:
            self._central = True
            return
        if sig != _LOCAL_SIG or flags & 0x08 or method != 0 or csize != usize:
            self.gave_up = True  # a data descriptor, compression, or no archive of ours: read it all at the end
            return
        whole = _LOCAL.size + name_len + extra_len
        if len(head) < whole:
            self._need = whole  # the name and extra fields are still to come
            return
        size = usize if usize != _LIMIT32 else _zip64_size(bytes(head[_LOCAL.size + name_len:whole]))
        if size is None:
            self.gave_up = True
            return
        self.offsets.append(self.pos - whole)
        self.names.append(crc32(head[_LOCAL.size:_LOCAL.size + name_len]))
        self.sizes.append(size)
        self._crc, self._left = 0, size
        if not size:
            self.crcs.append(0)
        self._head = bytearray()
        self._need = _LOCAL.size

    def check(self, path: Path) -> int:
        """The number of entries, once every entry of the central directory of ``path`` (the file the fed bytes
        were written to) was seen at its offset, with its name and size, and its data has the CRC-32 it lists.
        Raises zipfile.BadZipFile (or OSError) otherwise.

        The central directory is read entry by entry (``_central``), not as zipfile's list of a ZipInfo per entry:
        that list took 559 MB for an archive of a million empty entries (an attack run), about 0.5 GB for a real
        store of a million records."""
        if self.gave_up or not self._central:
            with zipfile.ZipFile(path) as archive:
                return _read_all(archive, archive.infolist())
        with open(path, "rb") as f:
            count = 0
            for i, (offset, name, usize, csize, crc, method) in enumerate(_central(f, len(self.offsets))):
                seen = (self.offsets[i], self.names[i], self.sizes[i], self.sizes[i], self.crcs[i])
                if seen != (offset, crc32(name), usize, csize, crc) or method != zipfile.ZIP_STORED:
                    raise zipfile.BadZipFile(f"Bad CRC-32 or header for file {name!r}")
                count += 1
            return count


_END = struct.Struct("<IHHHHIIH")  # 22 bytes: the end of central directory record, before its comment
_END_SIG = 0x06054B50
_END64_LOCATOR = struct.Struct("<IIQI")  # 20 bytes, just before the end record
_END64_LOCATOR_SIG = 0x07064B50
_END64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_END64_SIG = 0x06064B50
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes, then the name, extra field and comment


def _central(f: BinaryIO, expected: int) -> Iterator[tuple[int, bytes, int, int, int, int]]:
    """Each entry of the central directory of the archive in ``f``, in order: (its local header's offset, its name's
    bytes, size, compressed size, CRC-32, method), read a piece at a time. Raises BadZipFile unless it lists
    ``expected`` entries and ends where the end records begin (an archive starting at the file's first byte)."""
    size = f.seek(0, 2)
    tail_at = max(0, size - (_END.size + 0xFFFF))
    f.seek(tail_at)
    tail = f.read()
    at = tail.rfind(struct.pack("<I", _END_SIG))
    if at < 0 or len(tail) - at < _END.size:
        raise zipfile.BadZipFile("no end of central directory")
    _, _, _, _, total, cd_size, cd_offset, _ = _END.unpack_from(tail, at)
    end_at = tail_at + at
    if _LIMIT32 in (cd_size, cd_offset) or total == 0xFFFF:
        loc = at - _END64_LOCATOR.size
        if loc < 0 or _END64_LOCATOR.unpack_from(tail, loc)[0] != _END64_LOCATOR_SIG:
            raise zipfile.BadZipFile("no ZIP64 end of central directory locator")
        end_at = _END64_LOCATOR.unpack_from(tail, loc)[2]
        f.seek(end_at)
        record = f.read(_END64.size)
        if len(record) < _END64.size or _END64.unpack_from(record)[0] != _END64_SIG:
            raise zipfile.BadZipFile("no ZIP64 end of central directory")
        total, cd_size, cd_offset = _END64.unpack_from(record)[7:10]
    if total != expected:
        raise zipfile.BadZipFile(f"{total} entries listed, {expected} in the archive")
    if cd_offset + cd_size != end_at:
        raise zipfile.BadZipFile("the central directory is not where the end record says")
    f.seek(cd_offset)
    buf, pos, left = b"", 0, cd_size  # unread bytes of the directory: buf[pos:], then ``left`` more in the file

    def take(n: int) -> memoryview:
        nonlocal buf, pos, left
        if len(buf) - pos < n:
            more = f.read(min(left, max(n, _READ)))
            left -= len(more)
            buf, pos = buf[pos:] + more, 0
            if len(buf) < n:
                raise zipfile.BadZipFile("the central directory ends inside an entry")
        pos += n
        return memoryview(buf)[pos - n:pos]

    for _ in range(total):
        head = _CENTRAL.unpack(take(_CENTRAL.size))
        sig, method, crc, csize, usize = head[0], head[4], head[7], head[8], head[9]
        name_len, extra_len, comment_len, offset = head[10], head[11], head[12], head[16]
        if sig != _CENTRAL_SIG:
            raise zipfile.BadZipFile("not a central directory entry")
        if head[2] > zipfile.MAX_EXTRACT_VERSION:  # (as zipfile refuses it: the version needed to extract)
            raise zipfile.BadZipFile(f"zip file version {head[2] / 10:.1f}")
        name = bytes(take(name_len))
        extra = bytes(take(extra_len))
        take(comment_len)
        wide = _zip64_fields(extra)
        if _LIMIT32 in (usize, csize, offset):  # the ZIP64 extra field holds those, in this order
            usize = wide.pop(0) if usize == _LIMIT32 and wide else usize
            csize = wide.pop(0) if csize == _LIMIT32 and wide else csize
            offset = wide.pop(0) if offset == _LIMIT32 and wide else offset
        yield offset, name, usize, csize, crc, method
    if pos != len(buf) or left:
        raise zipfile.BadZipFile("the central directory holds more than its entries")


def _zip64_fields(extra: bytes) -> list[int]:
    """The 8-byte values of a central header's ZIP64 extra field (0x0001), in order; BadZipFile for an extra field
    whose parts overrun it (as zipfile refuses it)."""
    at = 0
    found: list[int] = []
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if at + 4 + length > len(extra):
            raise zipfile.BadZipFile(f"Corrupt extra field {kind:04x} (size={length})")
        if kind == 0x0001 and not found:
            found = [int(v) for v in struct.unpack_from(f"<{length // 8}Q", extra, at + 4)]
        at += 4 + length
    return found


def _zip64_size(extra: bytes) -> int | None:
    """The uncompressed size from a local header's ZIP64 extra field (its first 8 bytes), if there is one."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 0x0001 and length >= 8:
            return int(struct.unpack_from("<Q", extra, at + 4)[0])
        at += 4 + length
    return None


def _read_all(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> int:
    """zipfile's own check: every entry read, each CRC-32 compared at its end."""
    for info in infos:
        with archive.open(info) as entry:
            while entry.read(_READ):
                pass
    return len(infos)


def feed_file(stream: ZipStream, path: Path, upto: int) -> None:
    """Feeds ``stream`` the bytes of ``path`` it has not seen, up to ``upto``: the part a resumed download keeps."""
    with open(path, "rb") as f:
        f.seek(stream.pos)
        while stream.pos < upto:
            data = f.read(min(_READ, upto - stream.pos))
            if not data:
                raise EOFError(f"{path} ends at byte {stream.pos}")
            stream.feed(data)
