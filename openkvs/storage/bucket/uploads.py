"""Writing a record's bytes as an object, whatever keeps the metadata (``storage/postgres/objects.py``,
``storage/sqlite/objects.py``): the backend gives its table of intents (``IntentTable``) and the commit, this module
does the order of things.

- An intent (the blob id the object will have, later the multipart upload id) is committed before the first byte
  goes to the bucket; then the object is written under that id; then the backend's commit deletes the intent and
  points the record at the object, in one transaction. So 201 means the object is complete and the metadata
  committed, and a crash at any point leaves a committed record or an intent naming what to remove.
- A write that fails (the body, the bucket, the commit found the store gone) removes its object and its intent
  (``forget``, best effort: what fails there the sweeper does later).
- While the upload runs, this process renews its intents (``Uploads.renew``, called by the backend's background
  task every ``RENEW_SECONDS``). The backend's sweeper removes intents not renewed for ``UPLOAD_EXPIRY_SECONDS``,
  with their objects: those of a process that died. An upload may take as long as it takes (a slow client, a
  huge record) and keeps its intent; if it lost it anyway (its process could not reach the database for the whole
  expiry), the commit finds it gone and the write fails (``IntentSwept``, a 503) rather than commit a record whose
  object the sweeper may have deleted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import anyio

from ..base import NotFound, StorageUnavailable
from . import BlobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

UPLOAD_EXPIRY_SECONDS = 3600.0  # an intent not renewed for this long is an upload whose process died
RENEW_SECONDS = 60.0  # a running upload's intent is renewed about this often


class IntentSwept(Exception):
    """Raised by a backend's commit that found its intent gone (swept as stale): nothing was committed."""


class RecordChanged(Exception):
    """Raised by a commit that switches a record to a copy of its bytes (``openkvs blobs migrate``) when the
    record was written or deleted meanwhile: nothing was committed, the copy is dropped."""


class IntentTable(Protocol):
    """A backend's table of intents (``uploads``). Every method is its own committed transaction."""

    async def add(self, store_id: str) -> int | None:
        """A new intent for an object of store ``store_id``; its blob id (never used before), or None if there
        is no such store."""

    async def started(self, blob_id: int, upload_id: str) -> None:
        """Note the multipart upload id of the intent's object (a crash leaves it to abort)."""

    async def upload_id(self, blob_id: int) -> str | None:
        """The multipart upload id noted for the intent, if any."""

    async def remove(self, blob_id: int) -> None:
        """Delete the intent (its object is gone or was never written)."""

    async def renew(self, blob_ids: Sequence[int], at: datetime | None) -> None:
        """Mark the intents as alive at ``at`` (None: the database's clock)."""


async def fill(it: AsyncIterator[bytes], buf: bytearray, n: int) -> bool:
    """Read from ``it`` into ``buf`` until it holds at least ``n`` bytes; True if the iterator ended."""
    while len(buf) < n:
        try:
            piece = await it.__anext__()
        except StopAsyncIteration:
            return True
        buf += piece
    return False


class Uploads:
    """Writes of objects with their intents (see the module docstring); ``held``: the blob ids of this process's
    running uploads, which ``renew`` keeps alive. ``clock``: the time ``renew`` notes (None: the database's)."""

    def __init__(self, table: IntentTable, bucket: BlobStore) -> None:
        self.table = table
        self.bucket = bucket
        self.held: set[int] = set()
        self.clock: Callable[[], datetime | None] = lambda: None

    async def put(
        self, store_id: str, it: AsyncIterator[bytes], head: bytearray, commit: Callable[[int, int], Awaitable[T]]
    ) -> T:
        """Note an intent, write ``head`` then the rest of ``it`` as a new object, then ``commit(blob_id, size)``
        (the backend's transaction that deletes the intent and points a record at the object). Raises NotFound
        for a missing store, StorageUnavailable if the intent was swept, RecordChanged from the commit."""
        blob_id = await self.table.add(store_id)
        if blob_id is None:
            raise NotFound(f"store {store_id} not found")
        self.held.add(blob_id)
        noted: list[str] = []  # the multipart upload id, also known here should the sweeper take the intent

        async def started(upload_id: str) -> None:
            noted.append(upload_id)
            await self.table.started(blob_id, upload_id)

        try:
            try:
                size = await self.bucket.upload(blob_id, head, it, started)
            except BaseException:
                await self.forget(blob_id, noted)  # a body error or the bucket's: nothing of this write stays
                raise
            try:
                return await commit(blob_id, size)
            except (NotFound, IntentSwept, RecordChanged) as exc:  # rolled back for sure: the object is ours
                await self.forget(blob_id, noted)
                if isinstance(exc, IntentSwept):
                    msg = f"the intent of blob {blob_id} was swept before the record committed"
                    raise StorageUnavailable(msg) from None
                raise
            # Any other failure (a lost connection during COMMIT): the record may have committed, so the object
            # stays; if it did not, the intent is still there (no longer renewed) and the sweeper removes both.
        finally:
            self.held.discard(blob_id)

    async def forget(self, blob_id: int, noted: Sequence[str] = ()) -> None:
        """Remove the object and the intent of a write that will not commit (shielded, best effort: what fails
        here the sweeper does later). ``noted``: its multipart upload id, if the caller knows it."""
        with anyio.move_on_after(15, shield=True):
            try:
                upload_id = noted[0] if noted else await self.table.upload_id(blob_id)
                await self.bucket.delete([blob_id], [upload_id or ""])
                await self.table.remove(blob_id)
            except Exception as exc:
                log.info("blob %d of a failed write is left to the sweeper: %s", blob_id, exc)

    async def renew(self) -> None:
        """Renew the intents of the uploads running in this process (the background task calls this)."""
        held = sorted(self.held)
        if held:
            await self.table.renew(held, self.clock())
