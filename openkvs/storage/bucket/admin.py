"""``openkvs blobs fsck`` and ``openkvs blobs migrate``, the half that does not depend on the metadata backend
(``storage/postgres/blobs.py`` and ``storage/sqlite/objects.py`` give the queries).

- ``fsck`` compares the bucket's objects with the metadata: objects that no record, garbage row or intent names
  (orphans: only a bug or a lost intent leaves them; ``fix`` deletes them), records whose object is missing or of
  the wrong size (damage: listed, never "fixed" by guessing). The bucket is listed first, then the metadata read:
  an object written meanwhile is named by an intent or a record by then.
- ``migrate`` moves records' bytes between the database and the bucket while servers run: each record is copied
  to its new place, then its row is switched by a commit that checks the row still points at the copied bytes (a
  record written meanwhile keeps its new bytes and the copy is dropped: ``RecordChanged``). The old bytes go to
  the garbage like a replaced record's, so downloads that read them finish. Records already in place are not
  selected, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..base import NotFound, RecordMeta
from . import BlobStore
from .uploads import RecordChanged, Uploads

T = TypeVar("T")


@dataclass
class FsckReport:
    objects: int = 0
    records_in_bucket: int = 0
    orphans: list[tuple[int, int]] = field(default_factory=list)  # (blob id, size) of objects nobody names
    missing: list[str] = field(default_factory=list)  # records whose object is missing or of the wrong size
    deleted: int = 0


# What the metadata names: (every blob id a record, garbage row or intent names; the records in the bucket as
# (store id, key, blob id, size)), read in one transaction.
Names = tuple[set[int], Sequence[tuple[str, str, int, int]]]


async def fsck(bucket: BlobStore, names: Callable[[], Awaitable[Names]], fix: bool = False) -> FsckReport:
    report = FsckReport()
    listed: dict[int, int] = {}
    async for blob_id, obj in bucket.list():  # the listing first: what commits after it is in the metadata below
        listed[blob_id] = obj.size
    report.objects = len(listed)
    named, records = await names()
    report.records_in_bucket = len(records)
    for store_id, key, blob_id, want in records:
        size = listed.get(blob_id)
        if size != want:
            what = "missing" if size is None else f"{size} bytes instead of {want}"
            report.missing.append(f"record {store_id}/{key}: object {bucket.url} blob {blob_id} {what}")
    report.orphans = sorted((b, size) for b, size in listed.items() if b not in named)
    if fix and report.orphans:
        await bucket.delete([b for b, _ in report.orphans])
        report.deleted = len(report.orphans)
    return report


@dataclass
class MigrateProgress:
    moved: int = 0
    moved_bytes: int = 0
    skipped: int = 0  # written meanwhile: the copy was dropped (a new run finds nothing to do for them)


async def migrate(
    records: AsyncIterator[tuple[str, RecordMeta, T]],
    move: Callable[[str, RecordMeta, T], Awaitable[bool]],
    progress: Callable[[MigrateProgress], None] | None = None,
) -> MigrateProgress:
    """``move(store_id, record, what the backend needs to know it again)`` each of ``records``; it returns False
    for a record written meanwhile."""
    done = MigrateProgress()
    async for store_id, meta, identity in records:
        if await move(store_id, meta, identity):
            done.moved += 1
            done.moved_bytes += meta.size
        else:
            done.skipped += 1
        if progress is not None:
            progress(done)
    return done


async def copy_to_bucket(
    uploads: Uploads, store_id: str, pieces: AsyncIterator[bytes], switch: Callable[[int, int], Awaitable[None]]
) -> bool:
    """Write ``pieces`` (a record's bytes) as a new object and ``switch(blob_id, size)`` the record to it; False
    if the record was written or deleted meanwhile (the object is removed again)."""
    try:
        await uploads.put(store_id, pieces, bytearray(), switch)
        return True
    except (RecordChanged, NotFound):
        return False


def check_target(to: str) -> None:
    if to not in ("bucket", "database"):
        raise ValueError(f"--to must be bucket or database, not {to!r}")
