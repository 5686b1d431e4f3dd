"""SQLite's background upkeep: writing the buffered access counters (``write_stats``) and the one task that does
it every ``interval`` seconds, renews the snapshot leases and collects garbage (``maintain``). A failure is logged
once when it starts and once when it ends, not at every turn."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..base import StorageError
from ..stats import StatDelta, StatsBuffer
from .files import RecordFiles

log = logging.getLogger(__package__)  # "openkvs.storage.sqlite", the name log records had before the split

LEASE_RENEW_SECONDS = 60.0


async def write_stats(stats: StatsBuffer, write: Callable[..., Awaitable[Any]]) -> None:
    """Add what ``stats`` holds to the stores' counters in one write transaction (``write``: ``Database.write``);
    if that fails the counts go back into ``stats`` for the next attempt (``StatsBuffer.flush``)."""

    async def write_deltas(pending: dict[str, StatDelta]) -> None:
        rows = [(d.reads, d.writes, d.deletes, d.lists, d.accessed_at_ms, store_id) for store_id, d in pending.items()]

        def txn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE stores SET read_count = read_count + ?, write_count = write_count + ?, "
                "delete_count = delete_count + ?, list_count = list_count + ?, "
                "accessed_at = MAX(accessed_at, ?) WHERE id = ?",
                rows,
            )

        await write(txn)

    await stats.flush(write_deltas)


async def maintain(
    flush_stats: Callable[[], Awaitable[None]],
    collect_garbage: Callable[[], Awaitable[int]],
    files: RecordFiles,
    *,
    interval: float,
    gc_interval: float,
    renew_uploads: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Every ``interval`` seconds until cancelled: ``flush_stats()``; the leases of open snapshots (and with a
    bucket, ``renew_uploads()``: the intents of running uploads) renewed every LEASE_RENEW_SECONDS;
    ``collect_garbage()`` every ``gc_interval`` seconds."""
    last_gc = last_renew = time.monotonic()
    failing: str | None = None  # the last failure logged (logged once)
    while True:
        await asyncio.sleep(interval)
        try:
            await flush_stats()
            now = time.monotonic()
            if (files.leases or renew_uploads is not None) and now - last_renew >= LEASE_RENEW_SECONDS:
                last_renew = now
                await files.renew_leases()
                if renew_uploads is not None:
                    await renew_uploads()
            if now - last_gc >= gc_interval:
                last_gc = now
                await collect_garbage()
            if failing is not None:
                log.info("background maintenance works again")
                failing = None
        except asyncio.CancelledError:
            raise
        except StorageError as exc:  # full, read-only, damaged, locked: one line when it starts, not a stream
            if str(exc) != failing:
                log.warning("background maintenance failed (retrying every %.0f s): %s", interval, exc)
                failing = str(exc)
        except Exception:
            log.exception("background maintenance failed (will retry)")
