"""The ZIP download with safe entry names (``?safeNames=1``, see zipnames.py): the same records under names that
extract on every file system, plus a manifest entry last, listing the renamed keys.

The archive stays fully determined by the snapshot, so its exact size is known before the first byte and any
byte range can be produced alone: a plan (three passes over the snapshot's listing: two for case clashes, one
for the size and the manifest's length and CRC-32) is made per request, and the records are handed to the
zipwriter wrapped in ``Named`` entries that carry the entry name.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openkvs import codec, zipnames, zipwriter
from openkvs.storage.base import Snapshot

_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)  # the manifest's time in an empty archive (ZIP's first date)


@dataclass(slots=True)
class Named:
    """A zipwriter entry: ``key`` is the entry name; ``record`` the snapshot's record (None: the manifest)."""

    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime
    record: Any


@dataclass(slots=True)
class Plan:
    snap: Snapshot
    clashes: zipnames.CaseClashes
    manifest: Named
    size: int  # of the whole archive

    def name(self, key: str) -> str:
        return zipnames.safe_name(key, self.clashes.clashes(key)) or key

    def wrap(self, source: Callable[[], AsyncIterator[Sequence[Any]]]) -> Callable[[], AsyncIterator[Sequence[Any]]]:
        """The same batches as ``source()`` gives, each record wrapped under its entry name; then the manifest."""

        async def batches() -> AsyncIterator[Sequence[Any]]:
            inner = source()
            try:
                async for batch in inner:
                    yield [Named(self.name(r.key), r.decoded_size, r.crc32, r.modified_at, r) for r in batch]
            finally:
                aclose = getattr(inner, "aclose", None)
                if aclose is not None:
                    await aclose()
            yield [self.manifest]

        return batches

    def read(
        self, read: Callable[[Any, int, int], AsyncIterator[bytes]]
    ) -> Callable[[Named, int, int], AsyncIterator[bytes]]:
        def named_read(entry: Named, lo: int, hi: int) -> AsyncIterator[bytes]:
            if entry.record is None:
                return codec.slice_stream(self.manifest_bytes(), lo, hi)
            return read(entry.record, lo, hi)

        return named_read

    def inline(self, inline: Callable[[Any], bytes | None]) -> Callable[[Named], bytes | None]:
        return lambda entry: None if entry.record is None else inline(entry.record)

    async def manifest_bytes(self) -> AsyncIterator[bytes]:
        yield zipnames.MANIFEST_HEAD
        first = True
        async for batch in self.snap.zip_entries():
            items = []
            for key, name in self.renamed(batch):
                items.append(zipnames.manifest_item(key, name, first))
                first = False
            if items:
                yield b"".join(items)
        yield zipnames.MANIFEST_TAIL

    def renamed(self, batch: Sequence[Any]) -> Iterator[tuple[str, str]]:
        for r in batch:
            name = zipnames.safe_name(r.key, self.clashes.clashes(r.key))
            if name is not None:
                yield r.key, name


async def plan(snap: Snapshot) -> Plan:
    """Find the case clashes, then lay the archive out: its exact size and the manifest's length and CRC-32."""
    clashes = zipnames.CaseClashes(snap.totals.count)
    async for batch in snap.zip_entries():
        for r in batch:
            clashes.first_pass(r.key)
    if clashes.need_second_pass:
        async for batch in snap.zip_entries():
            for r in batch:
                clashes.second_pass(r.key)
    clashes.finish()
    placeholder = Named(zipnames.MANIFEST_NAME, 0, 0, _EPOCH, None)
    result = Plan(snap, clashes, placeholder, 0)
    counter = zipwriter.SizeCounter()
    length, crc, newest = len(zipnames.MANIFEST_HEAD), zlib.crc32(zipnames.MANIFEST_HEAD), _EPOCH
    first = True
    async for batch in result.wrap(snap.zip_entries)():
        for entry in batch:
            if entry.record is None:
                continue  # the placeholder manifest: added below, once its size is known
            counter.add(entry)
            newest = max(newest, entry.modified_at)
            if entry.key != entry.record.key:
                item = zipnames.manifest_item(entry.record.key, entry.key, first)
                first = False
                length += len(item)
                crc = zlib.crc32(item, crc)
    length += len(zipnames.MANIFEST_TAIL)
    crc = zlib.crc32(zipnames.MANIFEST_TAIL, crc)
    result.manifest = Named(zipnames.MANIFEST_NAME, length, crc, newest, None)
    counter.add(result.manifest)
    result.size = counter.total()
    return result
