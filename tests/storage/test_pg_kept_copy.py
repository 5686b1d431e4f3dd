"""A PostgreSQL snapshot's batches of small records (``kept_local``) come by binary COPY when its records average a
KiB or more (``snapshot.KEPT_COPY_AVG``), else joined by string_agg: both give the old writer's archive byte for byte
(random stores with edge times, whole and in ranges), the next batch read while one is used leaves the snapshot
usable for a reader that stops early, and a record whose chunk is gone fails either way. The COPY's parser takes
PostgreSQL's own binary COPY cut anywhere, and the constants put in a COPY's query read back as the values."""

# ruff: noqa: F811  (the fixtures of test_postgres.py, imported, are the parameters of these tests)

from __future__ import annotations

import random

import pytest

from openkvs.api.download import _archive_bytes, _archive_size
from openkvs.storage.base import KeySelection, NotFound
from openkvs.storage.postgres import PostgresStorage
from openkvs.storage.postgres import snapshot as pg_snapshot
from openkvs.storage.postgres.copyformat import CopyValues, literal, with_constants
from openkvs.zipwriter import LocalBlock
from tests import zip_reference
from tests.storage.test_postgres import (  # noqa: F401  (fixtures)
    admin,
    nodes,
    pg_reachable,
    schema,
    storage,
)

from .conftest import Body
from .test_zip_kept import check_archive, fill, set_times, times

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BOTH_WAYS = [pytest.param(0, id="copy"), pytest.param(1 << 40, id="string_agg")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _copy_of(admin, rows: list[tuple[bytes | None, ...]]) -> bytes:
    """PostgreSQL's own binary COPY of ``rows`` (bytea columns)."""
    def const(v: bytes | None) -> str:
        return "NULL::bytea" if v is None else f"'\\x{v.hex()}'::bytea"

    values = ", ".join("(" + ", ".join(map(const, r)) + ")" for r in rows)
    raw = bytearray()

    async def sink(data: bytes) -> None:
        raw.extend(data)

    await admin.copy_from_query(f"SELECT * FROM (VALUES {values}) v", output=sink, format="binary")
    return bytes(raw)


@pytest.mark.parametrize("width", [1, 2])
async def test_copy_values_takes_any_split(admin, width: int) -> None:
    rnd = random.Random(width)
    rows = [tuple(rnd.choice([None, b"", rnd.randbytes(rnd.randint(1, 3000))]) for _ in range(width))
            for _ in range(60)]
    raw = await _copy_of(admin, rows)
    want = [v for r in rows for v in r]
    for sizes in ([1], [7], [5, 11, 64, 1000], [len(raw)]):
        got = CopyValues(width)
        i = 0
        while i < len(raw):
            n = rnd.choice(sizes)
            got.feed(raw[i : i + n])
            i += n
        assert got.ended, sizes
        assert [None if v is None else bytes(v) for v in got.values] == want, sizes
    with pytest.raises(ValueError, match="fields"):
        CopyValues(width + 1).feed(raw)
    with pytest.raises(ValueError, match="trailer"):
        CopyValues(width).feed(raw + b"\0")
    with pytest.raises(ValueError, match="not a binary COPY"):
        CopyValues(width).feed(b"x" * 40)


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_constants_read_back_as_the_values(admin, conforming: str) -> None:
    await admin.execute(f"SET standard_conforming_strings = {conforming}")
    texts = ["", "k", "it's", "''", "\\", "\\'", "'\\", "a\\nb", "\\x41", "$1", "é😀\u2028", "E'x'", "' OR 1=1 --",
             "\\\\'; SELECT 1; --"]
    for t in texts:
        assert await admin.fetchval(f"SELECT {literal(t)}::text") == t, t
    for i in (0, 7, -3, 4096, 2**40):
        assert await admin.fetchval(f"SELECT {literal(i)}::bigint") == i
    assert await admin.fetchval(with_constants("SELECT $2::text || $1::text || $10::text",
                                               ["a'", "\\b", *"cdefghij"])) == "\\ba'j"
    with pytest.raises(ValueError):
        literal("a\x00b")
    with pytest.raises(TypeError):
        literal(True)


@pytest.mark.parametrize("copy_avg", BOTH_WAYS)
@pytest.mark.parametrize("seed", [3, 4])
async def test_both_ways_give_the_old_writers_bytes(
    storage: PostgresStorage, copy_avg: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_snapshot, "KEPT_COPY_AVG", copy_avg)
    rnd = random.Random(seed)
    store_id, recs = await fill(storage, rnd, 300)
    await set_times(storage, store_id, recs, rnd)
    want = zip_reference.build_archive(await times(storage, store_id, recs))
    kinds = await check_archive(storage, store_id, want, rnd)
    assert kinds.get("LocalBlock", 0) > 0 and "records" in kinds, kinds
    async with storage.snapshot(store_id, KeySelection()) as snap:
        assert snap.kept_copy == (copy_avg == 0)  # type: ignore[attr-defined]
        # a reader that takes one block and leaves, the next one being read: the snapshot goes on
        snap.kept_rows = 7  # type: ignore[attr-defined]
        local = snap.kept_local()
        assert local is not None
        async for batch in local:
            if isinstance(batch, LocalBlock):
                break
        await local.aclose()
        size = await _archive_size(snap)
        assert b"".join([c async for c in _archive_bytes(snap, 0, size)]) == want


@pytest.mark.parametrize("copy_avg", BOTH_WAYS)
async def test_a_small_record_whose_chunk_is_gone_fails(
    storage: PostgresStorage, admin, schema: str, copy_avg: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record plain and of one chunk: only the one whose chunk is gone keeps its batch from a LocalBlock."""
    monkeypatch.setattr(pg_snapshot, "KEPT_COPY_AVG", copy_avg)
    user = await storage.create_user("gone")
    store = await storage.create_store(user.id, "s", None, "k")
    rnd = random.Random(5)
    for i in range(30):
        await storage.put_record(store.id, f"k{i:02d}", Body(rnd.randbytes(rnd.randint(1, 3000))), "x", None)
    blob_id = await admin.fetchval(
        f'SELECT blob_id FROM "{schema}".records WHERE store_id = $1 AND key = $2', store.id, "k17"
    )
    await admin.execute(f'DELETE FROM "{schema}".blob_chunks WHERE blob_id = $1', blob_id)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        size = await _archive_size(snap)
        with pytest.raises(NotFound):
            async for _ in _archive_bytes(snap, 0, size):
                pass
