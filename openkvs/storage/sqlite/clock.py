"""The time SQLite's rows keep: integer milliseconds since the epoch, by this process's clock. Its own module so
that a kind's module (datasets.py), whose DDL tables.py imports, can stamp a row without importing tables.py."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
