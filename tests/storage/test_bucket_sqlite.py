"""SQLite metadata with record bytes in a real S3 bucket (Swift's s3api, deploy/s3-swift.sh): what lands in the
bucket, when objects are deleted, intents, leases, an unreachable bucket, fsck and migrate. The contract suite runs
on this configuration too (tests/storage/conftest.py, "sqlite+s3")."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from openkvs.storage.base import KeySelection, StorageUnavailable
from openkvs.storage.bucket import PART_SIZE, S3BlobStore
from openkvs.storage.bucket.s3 import S3Bucket
from openkvs.storage.bucket.sigv4 import Credentials
from openkvs.storage.sqlite import DB_NAME, SQLiteStorage
from openkvs.storage.sqlite.objects_admin import _move, fsck, migrate
from tests.conftest import S3_BUCKET, S3_ENDPOINT, S3_ENV, free_port, s3_clear, s3_env

from .conftest import Body, BodyAborted, chunked

pytestmark = pytest.mark.anyio

INLINE_MAX = 16 * 1024


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
def prefix() -> str:
    p = "l_" + secrets.token_hex(6)
    s3_env(p)  # creates the bucket, or skips (fails in CI) without an S3 server
    return p


@pytest.fixture
async def bucket() -> AsyncIterator[S3Bucket]:
    """The test bucket, seen directly (not through openkvs)."""
    creds = Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"])
    b = S3Bucket(S3_BUCKET, endpoint=S3_ENDPOINT, region="us-east-1", credentials=creds, path_style=True)
    yield b
    await b.aclose()


@pytest.fixture
async def nodes(tmp_path: Path, prefix: str) -> AsyncIterator[Callable[..., Awaitable[SQLiteStorage]]]:
    """Opens SQLiteStorage processes-to-be on the test's data dir and bucket prefix; closes them after."""
    opened: list[SQLiteStorage] = []

    async def make(
        endpoint: str = S3_ENDPOINT, bucket: bool = True, inline_max: int = INLINE_MAX, **kw: object
    ) -> SQLiteStorage:
        store = None
        if bucket:
            store = S3BlobStore(f"s3://{S3_BUCKET}/{prefix}", endpoint=endpoint, path_style=True, inline_max=inline_max)
        s = SQLiteStorage(tmp_path / "data", blob_store=store, background=False, **kw)  # type: ignore[arg-type]
        await s.open()
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.aclose()
    await anyio.to_thread.run_sync(s3_clear, prefix)


def table(s: SQLiteStorage, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(s.data_dir / DB_NAME)
    try:
        with conn:
            return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def objects(bucket: S3Bucket, prefix: str) -> dict[str, int]:
    return {o.key.rsplit("/", 1)[-1]: o.size async for o in bucket.list(f"{prefix}/blobs/")}


async def read(storage_or_snap: object, record: object, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([p async for p in storage_or_snap.read_blob(record, start, end)])  # type: ignore[attr-defined]


async def new_store(s: SQLiteStorage) -> str:
    user = await s.get_user_by_name("alice") or await s.create_user("alice")
    return (await s.create_store(user.id, None, None, "k")).id


async def test_big_records_are_objects_small_ones_stay_in_the_database(nodes, bucket, prefix) -> None:
    s = await nodes()
    store = await new_store(s)
    small = os.urandom(INLINE_MAX)  # at the threshold: stays in SQLite
    big = os.urandom(INLINE_MAX + 1)
    huge = os.urandom(2 * PART_SIZE + 12345)  # a multipart upload of three parts
    await s.put_record(store, "small", Body(chunked(small)), "application/octet-stream", None)
    meta_big = await s.put_record(store, "big", Body(chunked(big)), "application/octet-stream", None)
    meta_huge = await s.put_record(store, "huge", Body(chunked(huge, 1 << 20)), "application/octet-stream", None)

    found = await objects(bucket, prefix)
    assert found == {str(meta_big.blob.blob_id): len(big), str(meta_huge.blob.blob_id): len(huge)}
    assert table(s, "SELECT * FROM uploads") == []  # intents deleted with the commit
    assert [p for p in (s.data_dir / "blobs").rglob("*") if p.is_file()] == []  # no record file
    assert not any((s.data_dir / "tmp").iterdir())

    for key, data in (("small", small), ("big", big), ("huge", huge)):
        meta = await s.get_record(store, key)
        assert await read(s, meta) == data
    meta = await s.get_record(store, "huge")
    lo, hi = PART_SIZE - 10, PART_SIZE + 10  # a range across the parts' boundary
    assert await read(s, meta, lo, hi) == huge[lo:hi]
    assert await read(s, meta, len(huge) - 1) == huge[-1:]
    assert (await s.get_store(store)).stats.storage_bytes == len(small) + len(big) + len(huge)


async def test_an_inline_max_above_the_backends_keeps_records_in_files(nodes, bucket, prefix) -> None:
    s = await nodes(inline_max=1024 * 1024)
    store = await new_store(s)
    data = os.urandom(200_000)  # above SQLite's own inline_max (64 KiB), below the bucket's: a file
    await s.put_record(store, "k", Body(chunked(data)), "x/y", None)
    assert await read(s, await s.get_record(store, "k")) == data
    assert await objects(bucket, prefix) == {}
    assert len([p for p in (s.data_dir / "blobs").rglob("*") if p.is_file()]) == 1


async def test_replaced_and_deleted_objects_are_freed_after_the_grace(nodes, bucket, prefix) -> None:
    s = await nodes()
    store = await new_store(s)
    first = await s.put_record(store, "k", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    second = await s.put_record(store, "k", Body(os.urandom(INLINE_MAX * 3)), "x/y", None)
    other = await s.put_record(store, "other", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    await s.put_record(store, "third", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    await s.put_record(store, "third", Body(b"small now"), "x/y", None)  # an object replaced by an inline record
    assert len(await objects(bucket, prefix)) == 4

    assert await s.collect_garbage(now=later(30)) == 0  # within the grace (60 s) the old versions stay
    assert len(await objects(bucket, prefix)) == 4
    assert await s.collect_garbage(now=later(61)) == 2
    assert set(await objects(bucket, prefix)) == {str(second.blob.blob_id), str(other.blob.blob_id)}
    assert str(first.blob.blob_id) not in await objects(bucket, prefix)

    await s.delete_record(store, "other")
    await s.delete_store(store)
    assert len(await objects(bucket, prefix)) == 2  # nothing deleted before the grace...
    assert await s.collect_garbage(now=later(61)) == 2
    assert await objects(bucket, prefix) == {}  # ...and everything after it
    assert table(s, "SELECT * FROM garbage") == []


async def test_aborted_upload_leaves_no_object_and_no_intent(nodes, bucket, prefix) -> None:
    s = await nodes()
    store = await new_store(s)
    await s.put_record(store, "k", Body(b"old"), "text/plain", None)
    parts = chunked(os.urandom(3 * PART_SIZE), 1 << 20)
    for fail_after in (1, len(parts) - 1):  # in the first part (a single PUT would follow), and mid-multipart
        with pytest.raises(BodyAborted):
            await s.put_record(store, "k", Body(parts, fail_after=fail_after), "text/plain", None)
    assert await read(s, await s.get_record(store, "k")) == b"old"
    assert await objects(bucket, prefix) == {}
    assert table(s, "SELECT * FROM uploads") == []


async def test_a_write_to_a_missing_store_leaves_nothing(nodes, bucket, prefix) -> None:
    s = await nodes()
    with pytest.raises(Exception, match="not found|store"):
        await s.put_record("nosuchstore", "k", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    store = await new_store(s)
    await s.put_record(store, "k", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    assert table(s, "SELECT count(*) FROM uploads") == [(0,)]
    assert len(await objects(bucket, prefix)) == 1


async def test_stale_intents_are_swept(nodes, bucket, prefix) -> None:
    """What a process killed mid-upload leaves (an intent, an object or an unfinished multipart upload) is
    removed by a garbage collection once the intent was not renewed for an hour, and no record points at it."""
    s = await nodes()
    store = await new_store(s)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    # a crash after the object was written, before the metadata committed
    table(s, f"INSERT INTO uploads (blob_id, store_id, created_at, renewed_at) VALUES (1000001, '{store}', "
             f"{now_ms}, {now_ms})")
    await bucket.put(f"{prefix}/blobs/1000001", b"orphan")
    # a crash mid-multipart
    upload_id = await bucket.start_multipart(f"{prefix}/blobs/1000002")
    await bucket.put_part(f"{prefix}/blobs/1000002", upload_id, 1, os.urandom(PART_SIZE))
    table(s, f"INSERT INTO uploads (blob_id, store_id, upload_id, created_at, renewed_at) VALUES (1000002, "
             f"'{store}', '{upload_id}', {now_ms}, {now_ms})")
    assert await s.collect_garbage(now=later(600)) == 0  # an upload may still be running: kept
    assert set(await objects(bucket, prefix)) == {"1000001"}
    assert await s.collect_garbage(now=later(3700)) == 2
    assert await objects(bucket, prefix) == {}
    assert table(s, "SELECT * FROM uploads") == []
    with pytest.raises(Exception, match="NoSuchUpload|404"):  # the multipart upload was aborted
        await bucket.complete_multipart(f"{prefix}/blobs/1000002", upload_id, ["x"])
    # and the blob ids go on above the swept ones: an object name is never written twice
    meta = await s.put_record(store, "k", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    assert meta.blob.blob_id > 1000002


async def test_snapshot_reads_objects_that_another_process_collects_with_zero_grace(nodes, bucket, prefix) -> None:
    a, b = await nodes(), await nodes()
    store = await new_store(a)
    original = {f"k{i}": os.urandom(INLINE_MAX + 1 + 1000 * i) for i in range(4)}  # all objects
    for k, v in original.items():
        await a.put_record(store, k, Body(v), "x/y", None)
    async with a.snapshot(store, KeySelection()) as snap:
        for k in original:  # process B replaces every record and collects with no grace at all
            await b.put_record(store, k, Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
        await b.delete_record(store, "k0")
        assert await b.collect_garbage(grace=0) == 0  # the snapshot's lease keeps every object it can see
        seen = {}
        async for batch in snap.records():
            for r in batch:
                seen[r.key] = await read(snap, r)
        assert seen == original
    assert await b.collect_garbage(grace=0) == 5  # lease released: the old versions and B's deleted k0 go
    assert len(await objects(bucket, prefix)) == 3


async def test_snapshot_reads_many_small_objects_ahead_and_in_any_order(nodes, bucket, prefix) -> None:
    """The ZIP's read-ahead (bucket/prefetch.py) gives every record its own bytes, whether the records are read
    in order, skipped (a ranged download starts mid-archive) or read in part; inline records among them too."""
    s = await nodes()
    store = await new_store(s)
    original = {f"k{i:03d}": os.urandom(INLINE_MAX + 1 + i) for i in range(40)}
    original["k0155"] = b"inline among objects"
    for k, v in original.items():
        await s.put_record(store, k, Body(v), "x/y", None)
    async with s.snapshot(store, KeySelection()) as snap:
        seen = {}
        async for batch in snap.records(batch=7):
            for r in batch:
                seen[r.key] = await read(snap, r)
        assert seen == original
    async with s.snapshot(store, KeySelection()) as snap:
        async for batch in snap.records(after="k010", batch=50):
            records = list(batch)
        assert await read(snap, records[0], 5, 9) == original["k011"][5:9]
        for r in records[5::3]:  # skips some; the planned ones before are dropped
            assert await read(snap, r) == original[r.key]
        assert await read(snap, records[1]) == original["k012"]  # one passed over: read directly


async def test_unreachable_bucket_is_unavailable_and_loses_nothing(nodes) -> None:
    good = await nodes()
    store = await new_store(good)
    data = os.urandom(INLINE_MAX * 2)
    await good.put_record(store, "k", Body(data), "x/y", None)
    down = await nodes(endpoint=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StorageUnavailable):
        await down.put_record(store, "k", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    meta = await down.get_record(store, "k")  # metadata still answers
    with pytest.raises(StorageUnavailable):
        await read(down, meta)
    small = await down.put_record(store, "small", Body(b"inline"), "x/y", None)  # small records need no bucket
    assert await read(down, small) == b"inline"
    assert await read(good, await good.get_record(store, "k")) == data  # the old record stands
    # the failed write's intent stays for the sweeper (the bucket could not be told to forget the upload)
    assert len(table(good, "SELECT * FROM uploads")) == 1


async def test_a_process_without_the_bucket_keeps_object_garbage_and_says_why_it_cannot_read(nodes, bucket,
                                                                                             prefix) -> None:
    s = await nodes()
    plain = await nodes(bucket=False)
    store = await new_store(s)
    for _ in range(2):
        await s.put_record(store, "object", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
        await plain.put_record(store, "file", Body(os.urandom(100_000)), "x/y", None)  # no bucket: a file
    assert len(await objects(bucket, prefix)) == 2
    assert await plain.collect_garbage(grace=0) == 1  # the file; the object waits for a process that can
    assert len(await objects(bucket, prefix)) == 2
    with pytest.raises(StorageUnavailable, match="no --blob-store"):
        await read(plain, await plain.get_record(store, "object"))
    async with plain.snapshot(store, KeySelection(exact="object")) as snap:
        async for batch in snap.records():
            with pytest.raises(StorageUnavailable, match="no --blob-store"):
                await read(snap, batch[0])
    assert await s.collect_garbage(grace=0) == 1
    assert len(await objects(bucket, prefix)) == 1


async def test_fsck_lists_orphans_and_missing_objects_and_deletes_orphans(nodes, bucket, prefix) -> None:
    s = await nodes()
    store = await new_store(s)
    kept = await s.put_record(store, "kept", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    lost = await s.put_record(store, "lost", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    await s.put_record(store, "small", Body(b"inline"), "x/y", None)
    report = await fsck(s)
    assert (report.objects, report.records_in_bucket, report.orphans, report.missing) == (2, 2, [], [])

    await bucket.put(f"{prefix}/blobs/999999", b"nobody's")  # an object no metadata names
    await bucket.delete([f"{prefix}/blobs/{lost.blob.blob_id}"])  # a record's object lost
    report = await fsck(s)
    assert report.orphans == [(999999, 8)]
    assert len(report.missing) == 1 and f"{store}/lost" in report.missing[0]
    report = await fsck(s, fix=True)
    assert report.deleted == 1
    assert set(await objects(bucket, prefix)) == {str(kept.blob.blob_id)}
    assert (await fsck(s)).orphans == []


async def test_migrate_moves_bytes_both_ways_online_and_resumably(nodes, bucket, prefix) -> None:
    plain = await nodes(bucket=False)  # a data dir from before --blob-store: inline records and files
    store = await new_store(plain)
    data = {"big1": os.urandom(INLINE_MAX + 1), "big2": os.urandom(3 * 1024 * 1024), "small": b"s" * 100}
    for k, v in data.items():
        await plain.put_record(store, k, Body(chunked(v)), "x/y", None)
    s = await nodes()
    stale = await s.get_record(store, "big2")
    async with s.snapshot(store, KeySelection()) as snap:  # a download open during the move
        done = await migrate(s, "bucket")
        assert (done.moved, done.skipped) == (2, 0)
        seen = {}
        async for batch in snap.records():
            for r in batch:
                seen[r.key] = await read(snap, r)
        assert seen == data
    assert sorted((await objects(bucket, prefix)).values()) == sorted([INLINE_MAX + 1, 3 * 1024 * 1024])
    for k, v in data.items():
        assert await read(s, await s.get_record(store, k)) == v
    assert (await migrate(s, "bucket")).moved == 0  # nothing left to do: a second run resumes an interrupted one
    assert await read(s, stale) == data["big2"]  # the old file stays for the grace period
    assert (await s.get_store(store)).stats.storage_bytes == sum(map(len, data.values()))

    await s.put_record(store, "big1", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)  # written meanwhile
    new_big1 = await read(s, await s.get_record(store, "big1"))
    done = await migrate(s, "database")
    assert (done.moved, done.skipped) == (2, 0)
    assert await s.collect_garbage(grace=0) >= 3
    assert await objects(bucket, prefix) == {}
    assert await read(s, await s.get_record(store, "big2")) == data["big2"]
    assert await read(plain, await plain.get_record(store, "big1")) == new_big1  # no bucket needed any more
    assert (await fsck(s)).records_in_bucket == 0
    assert (await s.get_store(store)).stats.storage_bytes == len(new_big1) + len(data["big2"]) + 100


async def test_migrate_leaves_a_record_written_during_its_copy_alone(nodes, bucket, prefix) -> None:
    from openkvs.storage.sqlite.objects_admin import _records

    s = await nodes()
    store = await new_store(s)
    await (await nodes(bucket=False)).put_record(store, "a", Body(os.urandom(INLINE_MAX * 5)), "x/y", None)
    await s.put_record(store, "b", Body(os.urandom(INLINE_MAX * 2)), "x/y", None)
    found = {meta.key: (meta, identity) async for _, meta, identity in _records(s, "1", ())}
    new = {k: os.urandom(INLINE_MAX * 3) for k in "ab"}
    for k, v in new.items():  # both written after the copy read them
        await s.put_record(store, k, Body(v), "x/y", None)
    assert await _move(s, "bucket", store, *found["a"]) is False
    assert await _move(s, "database", store, *found["b"]) is False
    for k, v in new.items():
        assert await read(s, await s.get_record(store, k)) == v
    report = await fsck(s)
    assert report.orphans == [] and report.missing == []  # the dropped copy left no object behind
    assert table(s, "SELECT count(*) FROM uploads") == [(0,)]


async def test_backup_and_restore_keep_the_rows_of_records_in_the_bucket(nodes, bucket, prefix, tmp_path) -> None:
    """`openkvs backup` of a data dir with --blob-store: the bucket's objects are not the data dir's to copy, so the
    backup holds their rows (and the files and inline records as always), and a data dir restored from it on the same
    bucket reads them all. It used to fail copying a file named blobs/s3:<id>."""
    from openkvs.backup import backup, restore

    s = await nodes()
    store = await new_store(s)
    data = {"small": b"x" * 100, "big": os.urandom(INLINE_MAX * 2)}
    for k, v in data.items():
        await s.put_record(store, k, Body(v), "x/y", None)
    said: list[str] = []
    summary = await anyio.to_thread.run_sync(lambda: backup(s.data_dir, tmp_path / "backup", said.append))
    assert "1 record in a bucket" in summary
    assert "1 record in the bucket: not copied" in said[0]
    await anyio.to_thread.run_sync(restore, tmp_path / "backup", tmp_path / "restored")
    blobs = S3BlobStore(f"s3://{S3_BUCKET}/{prefix}", endpoint=S3_ENDPOINT, path_style=True, inline_max=INLINE_MAX)
    again = SQLiteStorage(tmp_path / "restored", blob_store=blobs, background=False)
    await again.open()
    try:
        for k, v in data.items():
            assert await read(again, await again.get_record(store, k)) == v
    finally:
        await again.aclose()
