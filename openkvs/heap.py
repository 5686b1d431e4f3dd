"""glibc malloc's two thresholds, fixed for a server that takes and frees bodies of hundreds of KB every request.

By default glibc adjusts them itself: a block of more than 128 KiB comes from its own ``mmap`` (and is unmapped when
freed), the first such block freed raises that bound to its size, and the free memory at the top of the heap goes
back to the system once it passes twice the bound. A server that reads a 450 KB push body, makes its items and rows
and frees them all crossed one of these lines at most requests: the next request's memory was new pages again,
each a page fault and a page zeroed by the kernel (185-249 faults a request on the event loop's thread, by
``bench/push_threads.py``; ``exc_page_fault`` and ``clear_page`` in its profile). Fixed values keep up to TRIM_BYTES
of freed memory for the next request and serve blocks under MMAP_BYTES from the heap: a 1,000-item push's event
loop went from 1.78-1.86 to 1.20-1.27 us of CPU an item, a record PUT's from 2.01 to 1.50 (BENCHMARKS.md).

Where the environment sets one already (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``), glibc has read it at
the start: that choice stands, and the other is set here (one fixed value turns glibc's adjusting off for both, and
would leave the other at its first value, 128 KiB). Other C libraries: nothing is done."""

from __future__ import annotations

import ctypes
import os
import sys

TRIM_BYTES = 16 * 1024 * 1024  # free memory kept at the top of a heap (each thread's arena has its own)
MMAP_BYTES = 4 * 1024 * 1024  # blocks this large or larger still get their own mapping (a 9 MiB body, say)
# the environment's name of each, mallopt's parameter (malloc.h) and the value
_THRESHOLDS = (("MALLOC_TRIM_THRESHOLD_", -1, TRIM_BYTES), ("MALLOC_MMAP_THRESHOLD_", -3, MMAP_BYTES))


def tune() -> list[str]:
    """Fixes the thresholds the environment leaves open, for this process and, through the environment, for the
    worker processes it starts (glibc reads it when they start). Returns the names of those set here."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return []
    tuned = []
    for name, param, value in _THRESHOLDS:
        if name not in os.environ and libc.mallopt(param, value):
            os.environ[name] = str(value)
            tuned.append(name)
    return tuned
