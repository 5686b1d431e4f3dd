"""An in-memory buffer of store access counters, shared by the backends.

``count_access`` must never block and reads must never write synchronously, so each process adds its counts
here and a background task drains them into the database every few seconds (and at close) as deltas.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(slots=True)
class StatDelta:
    reads: int = 0
    writes: int = 0
    deletes: int = 0
    lists: int = 0
    accessed_at_ms: int = 0  # the latest access in this batch, milliseconds since the epoch


class StatsBuffer:
    """Pending per-store counter deltas. Thread-safe; ``add`` is O(1) and never blocks on I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, StatDelta] = {}
        self._flushing = asyncio.Lock()

    def add(self, store_id: str, now_ms: int, *, reads: int = 0, writes: int = 0, deletes: int = 0,
            lists: int = 0) -> None:
        with self._lock:
            d = self._pending.get(store_id)
            if d is None:
                d = self._pending[store_id] = StatDelta()
            d.reads += reads
            d.writes += writes
            d.deletes += deletes
            d.lists += lists
            if now_ms > d.accessed_at_ms:
                d.accessed_at_ms = now_ms

    def add_read(self, store_id: str, now_ms: int) -> None:
        """``add(store_id, now_ms, reads=1)`` without its keyword arguments and zero sums (every record GET)."""
        with self._lock:
            d = self._pending.get(store_id)
            if d is None:
                d = self._pending[store_id] = StatDelta()
            d.reads += 1
            if now_ms > d.accessed_at_ms:
                d.accessed_at_ms = now_ms

    def drain(self) -> dict[str, StatDelta]:
        """Take everything pending (the buffer is empty afterwards)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    async def flush(self, write: Callable[[dict[str, StatDelta]], Awaitable[None]]) -> None:
        """Drain the buffer and ``write`` what it held, one flush at a time, so that a flush that returns has written
        every count added before it was called: a flush during the background task's found the buffer empty and
        returned before that task's write was done (a read right after it missed counts). If ``write`` fails, the
        counts go back for the next flush."""
        async with self._flushing:
            pending = self.drain()
            if not pending:
                return
            try:
                await write(pending)
            except BaseException:
                self.restore(pending)
                raise

    def restore(self, drained: dict[str, StatDelta]) -> None:
        """Put back a drained batch whose write failed, merging with counts added since."""
        with self._lock:
            for store_id, old in drained.items():
                d = self._pending.get(store_id)
                if d is None:
                    self._pending[store_id] = old
                    continue
                d.reads += old.reads
                d.writes += old.writes
                d.deletes += old.deletes
                d.lists += old.lists
                d.accessed_at_ms = max(d.accessed_at_ms, old.accessed_at_ms)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
