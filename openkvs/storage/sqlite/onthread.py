"""Work on a SQLite connection in a worker thread that its caller always waits for.

``anyio.to_thread.run_sync`` gives its capacity limiter back when the awaiting task ends, and a native asyncio
cancel (``Task.cancel()``: a read-ahead given up when a client leaves, a background task stopped at shutdown) ends
the await at once while the thread goes on. Closing the connection through the same limiter then runs
``sqlite3.Connection.close`` under a statement still stepping in that thread: a crash of the whole process
(SIGSEGV in libsqlite3). Here the thread's work is a task of its own that keeps the limiter until the thread
returns, and a cancelled caller waits for it before the cancel goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


async def run_to_end(fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None) -> T:
    """``fn(*args)`` in a worker thread under ``limiter``; returns (or raises) only once the thread is done with
    it, cancelled or not (a cancel is raised after that)."""
    work = asyncio.ensure_future(anyio.to_thread.run_sync(fn, *args, limiter=limiter))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():  # anyio's cancel scopes cancel again at each turn of the loop: wait all the same
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                pass
        raise
