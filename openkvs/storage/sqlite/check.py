"""``openkvs check`` for the SQLite backend: verify a data dir without changing it (the database opened read-only,
nothing migrated or collected). SQLite's ``integrity_check`` over every page, then every record's bytes: a file
record's file present with the record's size, an inline record's row present with its size. Records whose bytes
are objects in a bucket (path ``s3:<id>``) are counted; ``openkvs blobs fsck`` checks them against the bucket."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .blobs import OBJECT_PATH
from .tables import DB_NAME, TABLES_VERSION

MAX_LISTED = 100  # problems of one kind listed one by one; beyond that, counted


def check(data_dir: Path) -> tuple[list[str], str]:
    """(problems, one line of what was checked). No problems: the storage is sound."""
    db = data_dir / DB_NAME
    if not db.is_file():
        return [f"{db}: no database (not an openkvs data dir, or the database file was removed)"], ""
    problems: list[str] = []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != TABLES_VERSION:
            return [f"{db}: schema version {version}, expected {TABLES_VERSION} ({db.stat().st_size} bytes)"], ""
        result = [r[0] for r in conn.execute(f"PRAGMA integrity_check({MAX_LISTED})")]
        if result != ["ok"]:
            problems += [f"{db}: {line}" for line in result]
        files = inline = objects = 0
        for store_id, key, size, path in conn.execute(
            "SELECT store_id, key, size, path FROM records WHERE path IS NOT NULL ORDER BY store_id, key"
        ):
            if path.startswith(OBJECT_PATH):
                objects += 1
                continue
            files += 1
            try:
                actual = os.stat(data_dir / "blobs" / path).st_size
            except FileNotFoundError:
                problems.append(f"record {store_id}/{key}: its file blobs/{path} is missing")
                continue
            if actual != size:
                problems.append(f"record {store_id}/{key}: its file blobs/{path} has {actual} bytes, not {size}")
        for store_id, key, size, actual in conn.execute(
            "SELECT r.store_id, r.key, r.size, length(d.data) FROM records r "
            "LEFT JOIN record_data d ON d.id = r.data_id WHERE r.path IS NULL ORDER BY r.store_id, r.key"
        ):
            inline += 1
            if actual is None and size:
                problems.append(f"record {store_id}/{key}: its data row is missing")
            elif (actual or 0) != size:
                problems.append(f"record {store_id}/{key}: its data has {actual} bytes, not {size}")
    except sqlite3.DatabaseError as exc:
        problems.append(f"{db}: {exc}")
        return problems, ""
    finally:
        conn.close()
    in_bucket = f"; {objects} records in a bucket (openkvs blobs fsck checks them)" if objects else ""
    return problems, f"{db}: integrity_check ok; {files} record files and {inline} inline records checked{in_bucket}"
