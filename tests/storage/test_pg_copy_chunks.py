"""A PostgreSQL snapshot reads an identity-encoded record's chunks by binary COPY (``chunks.copy_chunks``): the
bytes and ranges exact, pieces of at most 1 MiB, memory flat for a slow reader, a reader that stops early leaving
the snapshot usable, and a missing or damaged chunk failing where it is, never passing on other bytes for it."""

# ruff: noqa: F811  (the fixtures of test_postgres.py, imported, are the parameters of these tests)

from __future__ import annotations

import asyncio
import hashlib
import random
import tracemalloc

import pytest

from openkvs.storage.base import KeySelection, NotFound
from openkvs.storage.postgres import CHUNK_SIZE, PostgresStorage
from openkvs.storage.postgres.chunks import _CopyRows, copy_chunks
from tests.storage.test_postgres import (  # noqa: F401  (fixtures)
    Body,
    admin,
    new_store,
    nodes,
    pg_reachable,
    read_all,
    schema,
    storage,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MiB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _big(storage: PostgresStorage, total: int, seed: bytes, key: str = "big"):
    _, store = await new_store(storage)
    await storage.put_record(store.id, key, Body(total, piece=100_000, seed=seed), "x", None)
    rec = await storage.get_record(store.id, key)
    return store, rec, await read_all(storage.read_blob(rec))


async def _copy_rows(admin, schema: str, blob_id: int, cut: int | None = None) -> bytes:
    """PostgreSQL's own binary COPY of a blob's chunk rows, each row's bytes cut to its first ``cut`` bytes."""
    raw = bytearray()

    async def sink(data: bytes) -> None:
        raw.extend(data)

    data = "data" if cut is None else f"substring(data from 1 for {cut})"
    await admin.copy_from_query(
        f'SELECT seq, {data} FROM "{schema}".blob_chunks WHERE blob_id = {blob_id} ORDER BY seq',
        output=sink, format="binary",
    )
    return bytes(raw)


def _feed_in_slices(raw: bytes, lengths: list[int], whole: bytes, splits: list[list[int] | None]) -> None:
    """The parser fed ``raw`` in slices of each size list's sizes (None: random sizes up to 300,000 bytes) gives
    back exactly ``whole``."""
    rnd = random.Random(19)
    for sizes in splits:
        rows = _CopyRows(0, lengths)
        out: list[memoryview] = []
        i = 0
        while i < len(raw):
            n = rnd.choice(sizes) if sizes else rnd.randint(1, 300_000)
            rows.feed(raw[i : i + n], out)
            i += n
        assert rows.ended and rows.rows == len(lengths), sizes
        assert b"".join(out) == whole, sizes


SMALL_SPLITS: list[list[int] | None] = [[1], [7], [6, 13, 19, 21]]


async def test_copy_parser_takes_any_split(storage: PostgresStorage, admin, schema: str) -> None:
    """PostgreSQL's own binary COPY of a blob's rows, fed in slices of every size, gives back exactly its bytes:
    whole 1 MiB rows in big slices, and the same rows cut to 1,000 bytes (the parser is told each row's length) in
    slices down to one byte, so that every row's header and the trailer are split at every place."""
    total = 3 * CHUNK_SIZE + 12345
    _, rec, whole = await _big(storage, total, b"split")
    lengths = [CHUNK_SIZE] * 3 + [12345]
    raw = await _copy_rows(admin, schema, rec.blob.blob_id)
    _feed_in_slices(raw, lengths, whole, [[CHUNK_SIZE], [len(raw)], None])
    cut = await _copy_rows(admin, schema, rec.blob.blob_id, cut=1000)
    _feed_in_slices(cut, [1000] * 4, b"".join(whole[seq * CHUNK_SIZE :][:1000] for seq in range(4)), SMALL_SPLITS)
    with pytest.raises(LookupError):  # a chunk's row where another was expected
        _CopyRows(1, lengths[1:]).feed(raw, [])


@pytest.mark.slow
async def test_copy_parser_takes_any_split_of_whole_rows(storage: PostgresStorage, admin, schema: str) -> None:
    """The same with the whole 1 MiB rows in slices down to one byte (3 million calls: 15 s; the quick tier has
    the rows cut to 1,000 bytes above)."""
    total = 3 * CHUNK_SIZE + 12345
    _, rec, whole = await _big(storage, total, b"split")
    raw = await _copy_rows(admin, schema, rec.blob.blob_id)
    _feed_in_slices(raw, [CHUNK_SIZE] * 3 + [12345], whole, SMALL_SPLITS)


async def test_snapshot_ranges_windows_and_backpressure(storage: PostgresStorage) -> None:
    total = 4 * CHUNK_SIZE + 777
    store, rec, whole = await _big(storage, total, b"ranges")
    async with storage.snapshot(store.id, KeySelection()) as snap:
        (srec,) = [r async for b in snap.records() for r in b]
        assert srec.blob.data is None
        assert await read_all(snap.read_blob(srec)) == whole
        ranges = [(0, 1), (5, CHUNK_SIZE + 7), (CHUNK_SIZE - 3, 3 * CHUNK_SIZE + 10), (CHUNK_SIZE, 2 * CHUNK_SIZE),
                  (total - 10, total), (0, total), (2 * CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 2)]
        for window, held in ((1, 1), (CHUNK_SIZE, 300_000), (2 * CHUNK_SIZE + 5, 1), (64 * MiB, 8 * MiB)):
            for start, end in ranges:
                pieces = [p async for p in copy_chunks(snap._copy, srec.blob, start, end, window, held)]
                assert all(0 < len(p) <= MiB for p in pieces)
                assert b"".join(pieces) == whole[start:end], (window, held, start, end)
        for start, end in ranges:
            assert await read_all(snap.read_blob(srec, start, end)) == whole[start:end]


async def test_snapshot_slow_reader_flat_memory(storage: PostgresStorage) -> None:
    """A reader slower than PostgreSQL: the COPY stops being read while about COPY_HELD_BYTES wait (4 MiB)."""
    total = 40 * MiB + 3
    body = Body(total, piece=100_000, seed=b"slow")
    _, store = await new_store(storage)
    await storage.put_record(store.id, "big", body, "x", None)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        (rec,) = [r async for b in snap.records() for r in b]
        tracemalloc.start()
        try:
            sha = hashlib.sha256()
            async for piece in snap.read_blob(rec):
                sha.update(piece)
                await asyncio.sleep(0.05)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert sha.hexdigest() == body.sha.hexdigest()
    assert peak < 12 * MiB, peak


async def test_snapshot_reader_stopping_early(storage: PostgresStorage, monkeypatch) -> None:
    """A reader that stops after its first piece: no further COPY starts, the one under way ends on its own (no
    cancel: the snapshot's transaction stays usable), and the snapshot reads on and closes cleanly."""
    from openkvs.storage.postgres import snapshot as pg_snapshot

    monkeypatch.setattr(pg_snapshot, "SNAPSHOT_COPY_BYTES", 2 * CHUNK_SIZE)
    total = 7 * CHUNK_SIZE + 1
    store, rec, whole = await _big(storage, total, b"early")
    await storage.put_record(store.id, "small", Body(5000, seed=b"s"), "x", None)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        copies = []
        real_copy = snap._copy

        async def counting_copy(sql, sink):
            copies.append(sql)
            return await real_copy(sql, sink)

        monkeypatch.setattr(snap, "_copy", counting_copy)
        recs = {r.key: r async for b in snap.records() for r in b}
        it = snap.read_blob(recs["big"])
        first = await it.__anext__()
        assert bytes(first) == whole[: len(first)]
        await it.aclose()
        await asyncio.sleep(0.2)
        assert len(copies) == 1  # of 4 windows
        # the transaction is whole: every query still answers, the same bytes again
        assert await read_all(snap.read_blob(recs["big"], CHUNK_SIZE - 1, total)) == whole[CHUNK_SIZE - 1 :]
        assert len(await read_all(snap.read_blob(recs["small"]))) == 5000
        assert [r.key async for b in snap.records() for r in b] == ["big", "small"]
        # a reader cancelled in the middle of a wait
        task = asyncio.ensure_future(read_all(snap.read_blob(recs["big"])))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await read_all(snap.read_blob(recs["big"])) == whole


async def test_snapshot_missing_or_short_chunk(storage: PostgresStorage, admin, schema: str) -> None:
    """A chunk gone: the bytes before it come, then NotFound, nothing of the chunks after it in its place, and the
    snapshot reads on (its connection not left waiting for the cancel of a COPY that had ended). A chunk shorter
    than the record says: NotFound before any byte of it."""
    total = 4 * CHUNK_SIZE + 99
    store, rec, whole = await _big(storage, total, b"gone")
    q = f'"{schema}".blob_chunks'
    await admin.execute(f"DELETE FROM {q} WHERE blob_id = $1 AND seq = 2", rec.blob.blob_id)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        (srec,) = [r async for b in snap.records() for r in b]
        got = bytearray()
        with pytest.raises(NotFound):
            async for piece in snap.read_blob(srec):
                got += piece
        assert got == whole[: 2 * CHUNK_SIZE]
        # generous: a connection left waiting answers never (asyncpg waits for the cancel without a timeout)
        assert await asyncio.wait_for(read_all(snap.read_blob(srec, 0, CHUNK_SIZE)), 60) == whole[:CHUNK_SIZE]
    await admin.execute(f"DELETE FROM {q} WHERE blob_id = $1", rec.blob.blob_id)
    for seq in range(5):
        data = whole[seq * CHUNK_SIZE : (seq + 1) * CHUNK_SIZE]
        await admin.execute(f"INSERT INTO {q} VALUES ($1, $2, $3)", rec.blob.blob_id, seq, data[:-1] if seq == 1 else data)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        (srec,) = [r async for b in snap.records() for r in b]
        got = bytearray()
        with pytest.raises(NotFound):
            async for piece in snap.read_blob(srec):
                got += piece
        assert got == whole[:CHUNK_SIZE]
