"""Work on a SQLite connection in a worker thread that its caller always waits for.

``anyio.to_thread.run_sync`` gives its capacity limiter back when the awaiting task ends, and a native asyncio
cancel (``Task.cancel()``: a read-ahead given up when a client leaves, a background task stopped at shutdown,
``asyncio.wait_for``) ends the await at once while the thread goes on: anyio's shield stops only its own cancel
scopes. Closing the connection through the same limiter then ran ``sqlite3.Connection.close`` under a statement
still stepping in that thread, and the writer's next transaction began beside a running one on the writer
connection: a crash of the whole process (SIGSEGV in libsqlite3), or 'cannot start a transaction within a
transaction'. Here the limiter is held by the caller until the thread is done, and a cancelled caller waits for
the thread before the cancel goes on (or gives the work up if no thread began it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

# The worker threads of SQLite's statements, as many as anyio's default limiter allows its own.
_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=40, thread_name_prefix="openkvs-sqlite")


async def run_to_end(fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None) -> T:
    """``fn(*args)`` in a worker thread, holding a token of ``limiter`` (if given); returns (or raises) only once
    the thread is done with it, cancelled or not (the cancel is raised after that). Lighter than anyio's hop,
    which it replaces here: no task of its own, no extra turns of the event loop."""
    if limiter is not None:
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            await limiter.acquire()
    try:
        work = _THREADS.submit(fn, *args)
        done = asyncio.wrap_future(work)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if not work.cancel():  # running or finished: the thread's work ends first
                with anyio.CancelScope(shield=True):  # an anyio scope's cancel would come again at every turn
                    while not done.done():
                        try:
                            await asyncio.wait((done,))
                        except asyncio.CancelledError:  # asyncio's cancel once more: the thread runs on all the same
                            pass
                if not done.cancelled():
                    done.exception()  # retrieved: the caller was cancelled, and is told that
            raise
    finally:
        if limiter is not None:
            limiter.release()
