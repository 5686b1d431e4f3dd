"""SQLite's errors by kind: a full or read-only disk is StorageFull (507), a damaged database StorageDamaged
(503 storage-damaged, no "try again"), a lock StorageUnavailable (503 with Retry-After)."""

from __future__ import annotations

import sqlite3

import pytest

from openkvs import errors
from openkvs.storage.sqlite.connections import translate


@pytest.mark.parametrize(
    ("message", "kind", "status", "type_"),
    [
        ("database or disk is full", "StorageFull", 507, "insufficient-storage"),
        ("attempt to write a readonly database", "StorageFull", 507, "insufficient-storage"),
        ("database disk image is malformed", "StorageDamaged", 503, "storage-damaged"),
        ("file is not a database", "StorageDamaged", 503, "storage-damaged"),
        ("database is locked", "StorageUnavailable", 503, "service-unavailable"),
    ],
)
def test_sqlite_errors_by_kind(message: str, kind: str, status: int, type_: str) -> None:
    exc = translate(sqlite3.OperationalError(message))
    assert type(exc).__name__ == kind
    api = errors.from_storage_error(exc)
    assert (api.status, api.type) == (status, type_)
    assert ("Retry-After" in api.headers) == (kind != "StorageDamaged")
