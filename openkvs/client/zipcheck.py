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
from pathlib import Path

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
        Raises zipfile.BadZipFile (or OSError) otherwise."""
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if self.gave_up or not self._central:
                return _read_all(archive, infos)
            if len(infos) != len(self.offsets):
                raise zipfile.BadZipFile(f"{len(infos)} entries listed, {len(self.offsets)} in the archive")
            for i, info in enumerate(infos):
                seen = (self.offsets[i], self.names[i], self.sizes[i], self.sizes[i], self.crcs[i])
                name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
                listed = (info.header_offset, crc32(name), info.file_size, info.compress_size, info.CRC)
                if seen != listed or info.compress_type != zipfile.ZIP_STORED:
                    raise zipfile.BadZipFile(f"Bad CRC-32 or header for file {info.orig_filename!r}")
            return len(infos)


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
