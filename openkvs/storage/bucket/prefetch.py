"""Read-ahead of small objects for a ZIP download: with record bytes in a bucket, an archive of small records is
one GET per record, and each GET waits a round trip (latency-bound: 2,000 records at 5-20 ms each is 10-40 s one
by one). ``Prefetch`` keeps the next ``depth`` objects' GETs running while the archive writer copies the current
one.

It learns the order from the batches the snapshot hands out (``plan``: the last few thousand are kept, because the
download reads the next batch ahead of the one it writes) and starts fetching only when a record of them is read
(``take``): the central directory's pass over the same batches reads no bytes, so it fetches nothing. Only objects
of at most ``whole_max`` bytes are fetched ahead, whole: memory stays under ``depth * whole_max``. Bigger ones are
streamed when read."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

DEPTH = 16
WHOLE_MAX = 1024 * 1024
PLANNED_MAX = 3000  # blobs kept in the plan: three batches (the download reads a batch ahead)


class Prefetch:
    def __init__(
        self,
        read: Callable[[Any, int, int], AsyncIterator[bytes]],
        *,
        depth: int = DEPTH,
        whole_max: int = WHOLE_MAX,
    ) -> None:
        self._read = read  # (blob, start, end) -> pieces
        self.depth = depth
        self.whole_max = whole_max
        self._planned: OrderedDict[int, Any] = OrderedDict()  # blob id -> blob, in the order of reading
        self._running: dict[int, asyncio.Task[bytes]] = {}

    def plan(self, blobs: Sequence[tuple[int, Any, int]]) -> None:
        """The bucket blobs of a batch, in the order they will be read: (blob id, blob, size)."""
        for blob_id, blob, size in blobs:
            if 0 < size <= self.whole_max:
                self._planned[blob_id] = blob
        while len(self._planned) > PLANNED_MAX:
            self._drop(self._planned.popitem(last=False)[0])

    def _drop(self, blob_id: int) -> None:
        task = self._running.pop(blob_id, None)
        if task is not None:
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failed read-ahead nobody wants is no error

    async def take(self, blob_id: int) -> bytes | None:
        """The whole bytes of ``blob_id`` if it is one of the planned objects (fetched ahead, or now), else None;
        starts fetching the ones after it."""
        if blob_id not in self._planned:
            return None
        while True:  # the ones before it were skipped (a ranged download): not wanted any more
            first = next(iter(self._planned))
            if first == blob_id:
                break
            del self._planned[first]
            self._drop(first)
        for b, blob in itertools.islice(self._planned.items(), self.depth):
            if b not in self._running:
                self._running[b] = asyncio.ensure_future(self._whole(blob))
        del self._planned[blob_id]
        return await self._running.pop(blob_id)

    async def _whole(self, blob: Any) -> bytes:
        return b"".join([piece async for piece in self._read(blob, 0, blob.size)])

    async def close(self) -> None:
        tasks = list(self._running.values())
        self._running.clear()
        self._planned.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for t in tasks:
            if not t.cancelled():
                t.exception()
