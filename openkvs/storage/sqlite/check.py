"""``openkvs check`` for the SQLite backend: verify a data dir without changing it (the database opened read-only,
nothing migrated or collected). SQLite's ``integrity_check`` over every page, then every record's bytes: a file
record's file present with the record's size, an inline record's row present with its size (records whose bytes
are objects in a bucket, path ``s3:<id>``, are counted: ``openkvs blobs fsck`` checks them against the bucket); then
every store's record count and the other totals it keeps (tables.STORE_TOTALS). ``fix_counts`` (``openkvs check
--fix``) sets those that are wrong, while servers run. And every kept ZIP header (records.zip_head) must be the one
its record's columns give."""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
from pathlib import Path

from ...plural import counted
from .. import datasets, totals
from ..base import StorageDamaged
from ..totals import Totals
from .blobs import OBJECT_PATH, own_path
from .tables import CREATE_TABLES, DB_NAME, RECORD_TOTALS, STORE_TOTALS, TABLES_VERSION, statements, zip_head

MAX_LISTED = 100  # problems of one kind listed one by one; beyond that, counted
BUSY_TIMEOUT = 30.0  # fix_counts waits this long for the servers' writers

def _file_name(key: object) -> bool:
    """Whether a record's key can name a file (an entry of the store's ZIP) and no path. The API's key rule allows
    far less (rules.RECORD_KEY); storage itself keeps any text, so only what makes an archive unsafe is a problem:
    a database openkvs didn't write (a restored backup) can hold "../../.bashrc"."""
    return isinstance(key, str) and key not in ("", ".", "..") and not any(c in key for c in "/\\\0")


# The schema's objects that run code of their own: a trigger runs with every write it names, a view stands where a
# table was. A database openkvs didn't write (a restored backup) could hold one that, say, grants every new store to
# its author.
_CODE_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY name"


@functools.cache
def own_code() -> frozenset[tuple[str, str, str, str]]:
    """The triggers and views of a database openkvs makes (the upgrades make the same ones)."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in statements(CREATE_TABLES):
            conn.execute(statement)
        return frozenset(conn.execute(_CODE_SQL).fetchall())
    finally:
        conn.close()


def _real_dirs(root: Path, parts: tuple[str, ...]) -> str | None:
    """None if each of ``root/parts[0]``, ``root/parts[0]/parts[1]``, ... is a folder, not a link to one; else the
    first that isn't (a missing one is not a problem here: the record's file is then missing)."""
    at = root
    for part in parts:
        at = at / part
        try:
            mode = os.lstat(at).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return f"{at} is a link" if stat.S_ISLNK(mode) else f"{at} is no folder"
    return None


def wrong_totals(conn: sqlite3.Connection) -> list[tuple[str, totals.Kept, Totals]]:
    """Stores whose kept totals are not their records': (id, kept, counted), by id. One pass over the records'
    primary key."""
    # (a totals_generation behind the generation, a write by an older openkvs, makes them wrong whatever they say)
    kept = conn.execute(
        f"SELECT id, totals_generation = generation, {STORE_TOTALS} FROM stores ORDER BY id"
    ).fetchall()
    counted = {r[0]: r[1:] for r in conn.execute(f"SELECT store_id, {RECORD_TOTALS} FROM records GROUP BY store_id")}
    none = (0,) * len(STORE_TOTALS.split(", "))
    return [
        (r[0], totals.Kept(r[2:], bool(r[1])), counted.get(r[0], none))
        for r in kept
        if not r[1] or r[2:] != counted.get(r[0], none)
    ]


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
        own = own_code()
        problems += [
            f"{db}: the {kind} {name!r} (on {table!r}) is not one openkvs makes: {sql}"
            for kind, name, table, sql in conn.execute(_CODE_SQL)
            if (kind, name, table, sql) not in own
        ][:MAX_LISTED]
        files = inline = objects = 0
        real_dirs: dict[str, str | None] = {}  # a record file's folder -> why it isn't one (None: it is)
        for store_id, key, size, path in conn.execute(
            "SELECT store_id, key, size, path FROM records WHERE path IS NOT NULL ORDER BY store_id, key"
        ):
            # a path openkvs doesn't make may name a file outside blobs/ (a database it didn't write): not looked at
            if not isinstance(path, str) or not own_path(path):
                problems.append(f"record {store_id}/{key}: its path {path!r} is not one openkvs makes")
                continue
            if path.startswith(OBJECT_PATH):
                objects += 1
                continue
            files += 1
            folder = path.rsplit("/", 1)[0]
            if folder not in real_dirs:
                # the two folders in blobs/ each a folder, no link: lstat of the file alone follows a link on the
                # way (blobs/ab/cd -> /etc made blobs/ab/cd/passwd /etc/passwd, which restore then copied in).
                # blobs/ itself may be one in a live data dir (on another disk); restore refuses that in a backup
                real_dirs[folder] = _real_dirs(data_dir / "blobs", tuple(folder.split("/")))
            if real_dirs[folder] is not None:
                problems.append(f"record {store_id}/{key}: its file blobs/{path} is reached through a link or "
                                f"something else than a folder ({real_dirs[folder]})")
                continue
            try:
                found = os.lstat(data_dir / "blobs" / path)
            except FileNotFoundError:
                problems.append(f"record {store_id}/{key}: its file blobs/{path} is missing")
                continue
            if not stat.S_ISREG(found.st_mode):  # a link would serve (and restore copy) what it points to
                problems.append(f"record {store_id}/{key}: its file blobs/{path} is not a regular file")
                continue
            actual = found.st_size
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
        bad_keys = [
            f"record {store_id}/{key!r}: its key is no file name (a ZIP download's entry would be a path)"
            for store_id, key in conn.execute("SELECT store_id, key FROM records ORDER BY store_id, key")
            if not _file_name(key)
        ]
        problems += bad_keys[:MAX_LISTED]
        if len(bad_keys) > MAX_LISTED:
            problems.append(f"and {len(bad_keys) - MAX_LISTED} more records whose key is no file name")
        problems += [
            f"garbage row {i}: its path {path!r} is not one openkvs makes (garbage collection would delete it)"
            for i, path in conn.execute("SELECT id, path FROM garbage ORDER BY id")
            if not isinstance(path, str) or not own_path(path)
        ][:MAX_LISTED]
        wrong = wrong_totals(conn)
        problems += [f"store {i}: {totals.wrong(k, c)}" for i, k, c in wrong[:MAX_LISTED]]
        if len(wrong) > MAX_LISTED:
            problems.append(f"and {len(wrong) - MAX_LISTED} more stores with a wrong record count or ZIP totals")
        counts = {r[0]: (r[1], r[2]) for r in conn.execute(datasets.CHECK_COUNTS_SQL)}
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(datasets.CHECK_ROWS_SQL.format(length="length"))}
        problems += datasets.dataset_problems(counts, rows, MAX_LISTED)
        heads = stale = 0
        for store_id, key, decoded, crc, ms, head in conn.execute(
            "SELECT store_id, key, decoded_size, crc32, modified_at, zip_head FROM records "
            "WHERE zip_head IS NOT NULL ORDER BY store_id, key"
        ):
            heads += 1
            if head != zip_head((key, 0, decoded, crc, ms)):
                stale += 1
                if stale <= MAX_LISTED:
                    problems.append(
                        f"record {store_id}/{key}: its kept ZIP header does not match it (ZIP downloads would "
                        "be wrong; with the server stopped, UPDATE records SET zip_head = NULL, then openkvs "
                        "migrate makes them again)"
                    )
        if stale > MAX_LISTED:
            problems.append(f"... and {stale - MAX_LISTED} more records whose kept ZIP header does not match")
    except sqlite3.DatabaseError as exc:
        problems.append(f"{db}: {exc}")
        return problems, ""
    finally:
        conn.close()
    in_bucket = f", {counted(objects, 'record')} in a bucket (openkvs blobs fsck checks them)" if objects else ""
    return problems, (
        f"{db}: integrity_check ok; {counted(files, 'record file')} and {counted(inline, 'inline record')} checked"
        f"{in_bucket}; "
        f"record counts agree, and the stores' ZIP totals; {counted(heads, 'kept ZIP header')} checked; "
        f"the items of {counted(len(counts.keys() | rows.keys()), 'dataset')} agree with their counts"
    )


def fix_counts(data_dir: Path) -> list[str]:
    """Set every store's record count and kept totals to its records', in one write transaction (servers may run:
    their writers wait, so the totals are exact when it commits); returns one line per store changed."""
    db = data_dir / DB_NAME
    if not db.is_file():
        raise StorageDamaged(f"{db}: no database")
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != TABLES_VERSION:
            raise StorageDamaged(f"{db}: schema version {version}, expected {TABLES_VERSION} (run openkvs migrate)")
        conn.execute("BEGIN IMMEDIATE")
        try:
            wrong = wrong_totals(conn)
            conn.executemany(
                f"UPDATE stores SET ({STORE_TOTALS}) = ({', '.join('?' * len(STORE_TOTALS.split(', ')))}),"
                " totals_generation = generation WHERE id = ?",
                [(*counted, i) for i, _, counted in wrong],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return [f"store {i}: {totals.fixed(kept, counted)}" for i, kept, counted in wrong]
