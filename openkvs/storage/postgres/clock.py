"""The time PostgreSQL's rows keep: the SQL of "now" in milliseconds, by the database's clock. Its own module so
that a kind's module (datasets.py), whose DDL tables.py imports, can stamp a row without importing tables.py."""

from __future__ import annotations

NOW_MS = "date_trunc('milliseconds', clock_timestamp())"
