"""A deterministic, uncompressed ("stored") ZIP/ZIP64 writer that knows its exact size up front and can produce
any byte range of the archive without building the rest.

Why our own: the download endpoint must send ``Content-Length`` before the first byte and answer ``Range``
requests on archives of a million records or many gigabytes. With method 0 (stored) and the CRC-32 and sizes
known in advance (the storage computes them when a record is written), every header is a pure function of the
entry metadata and its position, so the archive is fully determined by the ordered entry list. Nothing here
holds the entry list in memory: everything works in streaming passes over ``batches()``.

The layout and each record's bytes are in ``zipformat``; batches laid out at once (from columns, or from the
headers a storage keeps) in ``zipblocks``; the size before the first byte in ``zipsize``. This module walks the
entries to produce any byte range of the archive, and re-exports the names callers use.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from openkvs.zipblocks import (
    CENTRAL_LEAD,
    CENTRAL_MID,
    CentralBlock,
    Columns,
    LocalBlock,
    central_block,
    central_from_heads,
    columns_ok,
    kept_headers_fit,
    local_block,
    local_span,
)
from openkvs.zipformat import (
    CENTRAL_FIXED,
    LIMIT32,
    LOCAL_FIXED,
    LOCAL_ZIP64_LEN,
    ZipEntry,
    central_len,
    check_entry,
    end_records,
    entry_central_header,
    entry_local_header,
    entry_name,
    local_header,
)
from openkvs.zipsize import SizeCounter, archive_size, archive_size_from_totals

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
    "SizeCounter",
    "archive_size",
    "archive_size_from_totals",
    "iter_range",
    "build_archive",
]


E = TypeVar("E", bound=ZipEntry)  # the caller's entry type: what its batches give, its read and inline take


class ArchiveDataError(RuntimeError):
    """The data or the entry list did not match the metadata the archive was laid out from. Raised instead of
    emitting bytes that would make a corrupt archive (the HTTP layer then aborts the response)."""


# Coalescing: small pieces (headers, small records) are gathered into chunks of at least this size; data chunks
# at least this large are passed through untouched. The buffer therefore stays below 2 * _CHUNK. Big enough that
# the per-chunk cost downstream (one ASGI message and socket write each) is small next to copying the bytes once.
_CHUNK = 256 * 1024


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


def _coalesce(piece: bytes, parts: list[bytes], buffered: int, chunk: int) -> tuple[list[bytes], int]:
    """``piece`` added to the output: one of ``chunk`` bytes or more goes out as it is (after the pending small
    ``parts``), a smaller one joins ``parts`` (``buffered`` bytes long), which go out together once they reach
    ``chunk``. Returns the chunks to yield now (``parts`` is emptied when they include it) and the bytes left
    pending."""
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


def _block_out(
    block: bytes, at: int, start: int, end: int, parts: list[bytes], buffered: int, chunk: int
) -> tuple[list[bytes], int]:
    """``_coalesce`` of the bytes of a LocalBlock or CentralBlock ``block`` (at archive offset ``at``) inside
    [start, end)."""
    piece = block if start <= at and at + len(block) <= end else block[max(start - at, 0) : end - at]
    return _coalesce(piece, parts, buffered, chunk)


async def iter_range(
    batches: Callable[[], AsyncIterator[Sequence[E] | LocalBlock]],
    start: int,
    end: int,
    read: Callable[[E, int, int], AsyncIterator[bytes]],
    inline: Callable[[E], bytes | None] | None = None,
    listing: Callable[[], AsyncIterator[Sequence[E] | CentralBlock]] | None = None,
    total: int | None = None,
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

    ``total``: the archive's length as announced (Content-Length, computed before from the entries or from totals
    a storage keeps). A range that ends there must end with the end records: an archive that turns out longer
    fails (ArchiveDataError) instead of stopping at ``end`` as if complete, like one that turns out shorter.
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
                if offset + span > LIMIT32:
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
            if cols is not None and columns_ok(cols):
                span = local_span(cols)
                if offset + span <= start and max(cols.sizes) < LIMIT32:  # wholly before the range: skipped
                    offset += span
                    count += len(cols.names)
                    continue
                # wholly inside the range, every local header below 4 GiB (so no entry of 4 GiB either)
                if cols.data is not None and start <= offset and offset + span <= end and offset + span < LIMIT32:
                    if list(map(len, cols.data)) != list(cols.sizes):
                        raise ArchiveDataError("records in memory differ from their sizes")
                    local_block(cols, cols.data, parts)
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
                size = check_entry(entry)
                name = entry_name(entry)
                head_len = LOCAL_FIXED + len(name) + (LOCAL_ZIP64_LEN if size >= LIMIT32 else 0)
                data_at = offset + head_len
                entry_end = data_at + size
                if entry_end > start:  # else wholly before the range: nothing to build or read
                    if data_at > start:
                        head = entry_local_header(entry, name, size, offset)
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
                            if len(piece) < chunk:  # as _coalesce does, without its call: 900 instructions a
                                parts.append(piece)  # record of 100 B, 15% of this path (BENCHMARKS.md)
                                buffered += len(piece)
                            else:
                                ready, buffered = _coalesce(piece, parts, buffered, chunk)
                                for out in ready:
                                    yield out
                        else:
                            async for piece in _read_exact(read, entry, lo, hi):
                                ready, buffered = _coalesce(piece, parts, buffered, chunk)
                                for out in ready:
                                    yield out
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
        if end == total:  # the local headers and data alone reach the announced end
            raise ArchiveDataError(f"the archive is longer than the {total} bytes announced")
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
                if listed_batch.local_start != local_offset or listed_batch.local_end > LIMIT32:
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
            if cols is not None and columns_ok(cols) and local_offset + local_span(cols) < LIMIT32:
                # no entry's local header at or past 4 GiB, so no ZIP64 fields: every central header's length
                # is known from the columns
                span = local_span(cols)
                cd_span = len(cols.names) * CENTRAL_FIXED + sum(map(len, cols.names))
                if position + cd_span <= start:  # wholly before the range: skipped
                    position += cd_span
                    local_offset += span
                    seen += len(cols.names)
                    continue
                if start <= position and position + cd_span <= end:  # wholly inside the range
                    local_offset = central_block(cols, local_offset, parts)
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
                size = check_entry(entry)
                name = entry_name(entry)
                head_len = central_len(len(name), size, local_offset)
                if position + head_len > start:
                    head = entry_central_header(entry, name, size, local_offset)
                    if position < start or position + head_len > end:
                        head = head[max(start - position, 0) : end - position]
                    parts.append(head)
                    buffered += len(head)
                    if buffered >= chunk:
                        yield b"".join(parts)
                        parts = []
                        buffered = 0
                position += head_len
                local_offset += LOCAL_FIXED + len(name) + (LOCAL_ZIP64_LEN if size >= LIMIT32 else 0) + size
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
        tail = end_records(count, cd_offset, position - cd_offset)
        if end > position + len(tail):
            raise ValueError(f"range end {end} is past the archive's end {position + len(tail)}")
        if end == total and end != position + len(tail):
            raise ArchiveDataError(f"the archive is longer than the {total} bytes announced")
        parts.append(tail[max(start - position, 0) : end - position])
    elif end == total:  # the central directory alone reaches the announced end
        raise ArchiveDataError(f"the archive is longer than the {total} bytes announced")
    if parts:
        yield b"".join(parts)


def build_archive(entries_with_data: Sequence[tuple[ZipEntry, bytes]]) -> bytes:
    """The whole archive in memory, for tests and small tools. Checks each data's length and CRC-32."""
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for entry, data in entries_with_data:
        size = check_entry(entry)
        if len(data) != size or zlib.crc32(data) != entry.crc32:
            raise ArchiveDataError(f"record {entry.key!r}: data does not match its size or CRC-32")
        name = entry_name(entry)
        head = entry_local_header(entry, name, size, offset)
        local += (head, data)
        central.append(entry_central_header(entry, name, size, offset))
        offset += len(head) + size
    cd_size = sum(map(len, central))
    return b"".join(local + central) + end_records(len(entries_with_data), offset, cd_size)
