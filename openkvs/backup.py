"""``openkvs backup DEST`` and ``openkvs restore SRC --data-dir DIR`` for the SQLite backend, safe while a server
runs and writes. (PostgreSQL keeps record bytes in the database too: ``pg_dump``, see the README.)

Copying ``data/`` with ``cp`` is not safe: the database is three files (``-wal``, ``-shm``) changing under the
copy, and a record file can be deleted between copying the row that names it and copying the file. So:

1. a lease on every store's files (the mechanism ZIP downloads use, storage/sqlite/__init__.py): no file that the
   database can name from now on is deleted by garbage collection until the lease is released or expires;
2. SQLite's online backup API, in one step: a copy of the database as of one moment (a read transaction; in WAL
   mode writers go on meanwhile);
3. the record files the copy names, copied (renewing the lease while that takes long); with --blob-store, the
   records whose bytes are objects (path ``s3:<id>``) are copied as their rows only: the bucket is not the data
   dir's, and its objects are backed up by the bucket's own means;
4. in the copy, the rows that describe the live data dir rather than the backup (leases, garbage) deleted;
5. verified: ``openkvs check``'s checks on the copy (integrity, every record's file present with its size);
6. the lease released, and the backup renamed from ``DEST.partial`` to ``DEST``: a ``DEST`` is always whole.

``DEST.partial`` is a folder this command makes (``mkdir``, which fails on anything found at the name): a leftover
of a failed backup (only a backup's files in it) is removed first, and a link or anything else there is refused,
never written through. A ``DEST`` that is a link is refused too (the folders above it may be links).

Restore checks the backup the same way (a path openkvs doesn't make, a record file that is a link: refused), copies
its database and the regular files it names (nothing else of the folder) into an empty data dir, and checks that.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

from openkvs.plural import counted
from openkvs.storage.ids import new_id
from openkvs.storage.sqlite.blobs import OBJECT_PATH, own_path
from openkvs.storage.sqlite.check import check
from openkvs.storage.sqlite.tables import DB_NAME

LEASE_SECONDS = 600  # a backup's lease, renewed every LEASE_RENEW while files are copied
LEASE_RENEW = 60.0
BUSY_TIMEOUT = 30.0


class BackupError(Exception):
    pass


def _db(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}{'?mode=ro' if readonly else ''}"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    return conn


def _empty_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{path} exists and is not an empty folder")


# What a ``DEST.partial`` that an interrupted or unverified backup left holds: it may be removed and made again
_PARTIAL_NAMES = {DB_NAME, DB_NAME + "-journal", DB_NAME + "-wal", DB_NAME + "-shm", "blobs", "tmp"}


def _remove_leftover(partial: Path) -> None:
    """Remove the ``DEST.partial`` a failed backup left, and refuse anything else found at that name: a link (the
    backup was written through it, into the folder it names) or a file, or a folder holding more than a backup's
    files, stays as it is. (rmtree doesn't follow the links inside the folder it removes.)"""
    try:
        mode = os.lstat(partial).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
        raise BackupError(f"{partial} is {'a link' if stat.S_ISLNK(mode) else 'not a folder'}, not a backup this "
                          "command began: remove it, or back up to another DEST")
    foreign = sorted(name for name in os.listdir(partial) if name not in _PARTIAL_NAMES)
    if foreign:
        raise BackupError(f"{partial} holds {foreign[0]!r}, not a backup this command began: remove it, or back up "
                          "to another DEST")
    shutil.rmtree(partial)


def backup(data_dir: Path, dest: Path, echo: Callable[[str], None] = print) -> str:
    """Back ``data_dir`` up into the new folder ``dest``; returns a summary. Raises BackupError."""
    source = data_dir / DB_NAME
    if not source.is_file():
        raise BackupError(f"{source}: no database (not an openkvs data dir)")
    if dest.is_symlink():  # (its target, an empty folder someone else can read, would get the backup)
        raise BackupError(f"{dest} is a link: give the folder it points to, or a new DEST")
    _empty_target(dest)
    partial = dest.with_name(dest.name + ".partial")
    _remove_leftover(partial)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(partial)  # a new folder, or an error: never one found there (nor a link's target)
    except FileExistsError:
        raise BackupError(f"{partial} appeared while the backup began: remove it and run the backup again") from None
    (partial / "blobs").mkdir()
    (partial / "tmp").mkdir()
    live = _db(source)
    lease_id = "backup-" + new_id()
    try:
        _write(live, "INSERT INTO leases(id, watermark, expires_at, store_id) "
                     "SELECT ?, COALESCE(MAX(id), 0), ?, NULL FROM garbage", (lease_id, _expiry()))
        copy = sqlite3.connect(partial / DB_NAME)
        try:
            live.backup(copy)  # pages=-1: the whole database in one step, as of one moment
            named = [p for (p,) in copy.execute("SELECT path FROM records WHERE path IS NOT NULL")]
            paths = [p for p in named if not p.startswith(OBJECT_PATH)]  # (objects stay in the bucket)
            in_bucket = len(named) - len(paths)
            echo(f"database copied; copying {counted(len(paths), 'record file')}"
                 + (f" ({counted(in_bucket, 'record')} in the bucket: not copied, back the bucket up itself)"
                    if in_bucket else ""))
            renewed = time.monotonic()
            for i, rel in enumerate(paths):
                target = partial / "blobs" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data_dir / "blobs" / rel, target)
                if time.monotonic() - renewed > LEASE_RENEW:
                    _write(live, "UPDATE leases SET expires_at = ? WHERE id = ?", (_expiry(), lease_id))
                    renewed = time.monotonic()
                    echo(f"{i + 1} of {len(paths)} files copied")
            with copy:
                copy.execute("DELETE FROM leases")
                copy.execute("DELETE FROM garbage")  # their files are the live data dir's, not in the backup
            copy.execute("VACUUM")
        finally:
            copy.close()
    finally:
        try:
            _write(live, "DELETE FROM leases WHERE id = ?", (lease_id,))
        finally:
            live.close()
    problems, summary = check(partial)
    if problems:
        raise BackupError("the backup does not verify (kept in {}):\n{}".format(partial, "\n".join(problems)))
    os.replace(partial, dest) if not dest.exists() else _move_into(partial, dest)
    # the summary names the files where they were checked; the same files are now under DEST (a user shown
    # DEST.partial would look for a folder that is no longer there)
    return summary.replace(str(partial), str(dest), 1)


def restore(src: Path, data_dir: Path) -> str:
    """Copy the backup ``src`` into the new or empty ``data_dir``; returns a summary. Raises BackupError."""
    problems, _ = check(src)
    if problems:
        raise BackupError(f"{src} is not a sound backup:\n" + "\n".join(problems))
    _empty_target(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = _db(src / DB_NAME, readonly=True)
    target = sqlite3.connect(data_dir / DB_NAME)
    try:
        source.backup(target)
        with target:  # (as backup leaves them) rows of the data dir the backup was made from, not of this one
            target.execute("DELETE FROM leases")
            target.execute("DELETE FROM garbage")
        target.execute("PRAGMA journal_mode=WAL")  # as the server creates its databases
        paths = [p for (p,) in target.execute("SELECT path FROM records WHERE path IS NOT NULL")]
    finally:
        target.close()
        source.close()
    # The files the copied database names, each a regular file (not through a link) at a path openkvs makes: a
    # backup is a folder anyone could have made, and what else it holds is not copied (blobs/x -> / copied the
    # whole filesystem).
    (data_dir / "blobs").mkdir()
    for rel in paths:
        if not own_path(rel):  # check(src) refused these; the database may have changed since
            raise BackupError(f"a record's path {rel!r} is not one openkvs makes")
        if not rel.startswith(OBJECT_PATH):
            _copy_file(src / "blobs", rel, data_dir / "blobs" / rel)
    (data_dir / "tmp").mkdir(exist_ok=True)
    problems, summary = check(data_dir)
    if problems:
        raise BackupError("the restored data dir does not verify:\n" + "\n".join(problems))
    return summary


def _copy_file(blobs: Path, rel: str, target: Path) -> None:
    """Copy a backup's record file ``blobs/rel``, refusing a link or anything but a regular file, on the way to it
    too: each folder is opened without following a link (``blobs/ab/cd -> /etc`` with a record at ``ab/cd/passwd``
    copied /etc/passwd in as the record's bytes)."""
    source = blobs / rel
    *folders, name = rel.split("/")
    try:
        at = os.open(blobs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for folder in folders:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=at)
                os.close(at)
                at = inner
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=at)
        finally:  # (O_NONBLOCK: a FIFO doesn't block)
            os.close(at)
    except OSError as exc:
        raise BackupError(
            f"{source}: {exc.strerror} (a record file must be a regular file, not reached through a link)"
        ) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError(f"{source}: not a regular file")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            shutil.copyfileobj(f, out, 1024 * 1024)


def _write(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> None:
    conn.execute("BEGIN IMMEDIATE")  # as the server's writes: waits (busy timeout) for the current writer
    try:
        conn.execute(sql, args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _expiry() -> int:
    return int((time.time() + LEASE_SECONDS) * 1000)


def _move_into(partial: Path, dest: Path) -> None:
    """``dest`` is an existing empty folder (a mount point, say): the backup's contents go into it."""
    for item in partial.iterdir():
        os.replace(item, dest / item.name)
    partial.rmdir()
