"""Record bytes outside the rows' metadata: the blob handles in ``RecordMeta.blob``, reading inline bytes and
blob files by range, and the sweep of the tmp/ files that crashed uploads left behind.

A record's ``path`` (and a garbage row's) names a file under blobs/, or with ``--blob-store`` an object in the
bucket: ``s3:<blob id>`` (``OBJECT_PATH``; sqlite/objects.py). Either way it is where the bytes are, and the
same rules hold for both: a replaced or deleted record's path goes to ``garbage``, leases keep it for snapshots."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from ..base import RecordMeta, StorageDamaged, no_blob_store

READ_CHUNK = 1024 * 1024  # read_blob chunk size
TMP_MAX_AGE = 3600.0  # tmp/ files untouched this long belong to a crashed upload
OBJECT_PATH = "s3:"  # a path naming an object in the bucket, s3:<blob id> (a file's path has no colon)
# The paths openkvs gives record files under blobs/ (files.py RecordFiles.commit: two folders named by the start of
# a random ID, then the ID), and objects. A database openkvs didn't write (a restored backup) may say anything:
# "/home/me/.ssh/id_ed25519" or "../openkvs.sqlite3" would be a file outside blobs/ served or deleted as a record's.
_FILE_PATH = re.compile(r"[A-Za-z0-9]{2}/[A-Za-z0-9]{2}/[A-Za-z0-9]{4,64}")
_OBJECT = re.compile(r"s3:[0-9]{1,18}")


def own_path(path: str) -> bool:
    """Whether a record's or a garbage row's ``path`` is one openkvs makes: a file in blobs/'s layout, or an
    object (``s3:<blob id>``)."""
    return _FILE_PATH.fullmatch(path) is not None or _OBJECT.fullmatch(path) is not None


# Blob handles (RecordMeta.blob). The HTTP layer passes them back to read_blob and never looks inside.


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class Inline:
    data: bytes


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class BlobFile:
    path: Path


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class InBucket:
    """An object in the bucket (``--blob-store``), read through the storage's or its snapshot's read_blob."""

    blob_id: int
    size: int


def stored_at(blob_dir: Path, path: str, size: int) -> BlobFile | InBucket:
    """The handle of a record's bytes at ``path`` (a record of ``size`` bytes): its file, or its object."""
    if path.startswith(OBJECT_PATH):
        return InBucket(int(path[len(OBJECT_PATH) :]), size)
    return BlobFile(blob_dir / path)


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class DataRow:
    """Inline bytes not fetched yet: read through the snapshot's own transaction."""

    data_id: int


def clamp_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    if end is None or end > size:
        end = size
    start = max(0, min(start, end))
    return start, end


async def read_file(path: Path, start: int, end: int | None, key: str = "?") -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of a record's file. A file that is gone or shorter than its record is damage, not
    an internal error: ``StorageDamaged`` naming the record and the file."""
    try:
        f = await anyio.to_thread.run_sync(open, path, "rb")
    except FileNotFoundError:
        raise StorageDamaged(f"the file of record {key!r} is missing: {path}") from None
    try:
        if end is None:
            end = (await anyio.to_thread.run_sync(os.fstat, f.fileno())).st_size
        pos = start
        if pos:
            await anyio.to_thread.run_sync(f.seek, pos)
        while pos < end:
            chunk = await anyio.to_thread.run_sync(f.read, min(READ_CHUNK, end - pos))
            if not chunk:
                raise StorageDamaged(f"the file of record {key!r} is shorter than the record ({pos} < {end}): {path}")
            pos += len(chunk)
            yield chunk
    finally:
        f.close()


def _writer_alive(tmp_name: str) -> bool:
    pid, sep, _ = tmp_name.partition("-")
    if not sep or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def sweep_tmp(tmp_dir: Path, max_age: float = TMP_MAX_AGE) -> int:
    """Delete the uploads of crashed processes from tmp/: files whose writing process is gone, and any file
    nobody has written to for ``max_age`` seconds (in case a pid was reused)."""
    cutoff = time.time() - max_age
    removed = 0
    for entry in os.scandir(tmp_dir):
        try:
            if entry.is_file() and (not _writer_alive(entry.name) or entry.stat().st_mtime < cutoff):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def inline_chunks(data: bytes, start: int, end: int | None) -> list[bytes]:
    start, end = clamp_range(start, end, len(data))
    return [data[i : min(i + READ_CHUNK, end)] for i in range(start, end, READ_CHUNK)]


async def read_held(
    record: RecordMeta, start: int, end: int | None, whose: str, hint: str = ""
) -> AsyncIterator[bytes]:
    """``read_blob`` of a record whose handle holds its bytes (``Inline``) or names its file (``BlobFile``); a
    TypeError for any other handle (``whose``: what reads, ``hint``: what to do instead, for its message)."""
    blob = record.blob
    if isinstance(blob, Inline):
        for chunk in inline_chunks(blob.data, start, end):
            yield chunk
    elif isinstance(blob, BlobFile):
        start, end = clamp_range(start, end, record.size)
        async for chunk in read_file(blob.path, start, end, record.key):
            yield chunk
    elif isinstance(blob, InBucket):
        raise no_blob_store(f"the bytes of record {record.key!r} are")
    else:
        raise TypeError(f"read_blob: not a record of this {whose} ({blob!r}){hint}")
