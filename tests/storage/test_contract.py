"""The storage contract (openkvs/storage/base.py), written once and run against every backend."""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from openkvs.storage.base import (
    KeySelection,
    NameNotUnique,
    NotFound,
    RecordMeta,
    Storage,
    UsernameTaken,
)

from .conftest import Body, BodyAborted, chunked

pytestmark = pytest.mark.anyio

ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.'()"


def inline_max(storage: Storage) -> int:
    return getattr(storage, "inline_max", 64 * 1024)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def grace(storage: Storage) -> float:
    return getattr(storage, "gc_grace_seconds", 60.0)


async def read_all(storage_or_snap, record: RecordMeta, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in storage_or_snap.read_blob(record, start, end)])


async def put(storage: Storage, store_id: str, key: str, data: bytes, content_type: str = "application/octet-stream",
              encoding: str | None = None) -> RecordMeta:
    return await storage.put_record(store_id, key, Body(chunked(data)), content_type, encoding)


async def new_store(storage: Storage, name: str | None = None, username: str = "alice"):
    user = await storage.get_user_by_name(username) or await storage.create_user(username)
    return user, await storage.create_store(user.id, name, None, "signing-" + username)


# -- users and tokens ------------------------------------------------------------------------------------------


async def test_users_and_tokens(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    assert len(alice.id) == 17 and alice.id.isalnum()
    assert alice.username == "alice"
    assert alice.created_at.tzinfo is not None and alice.created_at.utcoffset() == timedelta(0)
    assert alice.created_at.microsecond % 1000 == 0

    with pytest.raises(UsernameTaken):
        await storage.create_user("alice")
    assert await storage.get_user_by_name("alice") == alice
    assert await storage.get_user_by_name("nobody") is None

    bob = await storage.create_user("bob")
    assert bob.id != alice.id
    await storage.add_token(alice.id, "hash-a1")
    await storage.add_token(alice.id, "hash-a2")
    await storage.add_token(bob.id, "hash-b")
    assert await storage.user_by_token("hash-a1") == alice
    assert await storage.user_by_token("hash-a2") == alice
    assert await storage.user_by_token("hash-b") == bob
    assert await storage.user_by_token("hash-unknown") is None

    # a token's ID (tokens list) is its hash's first 12 characters: what an admin revokes by
    await storage.add_token(bob.id, "0123456789ab-first")
    await storage.add_token(bob.id, "0123456789ab-second")
    assert await storage.token_hashes("0123456789ab") == ["0123456789ab-first", "0123456789ab-second"]
    assert await storage.token_hashes("0123456789a") == []  # (the first 12 characters, not any start of a hash)
    assert await storage.token_hashes("hash-b") == ["hash-b"]  # (a hash shorter than 12 characters: all of it)

    assert await storage.revoke_token("hash-a1") is True
    assert await storage.revoke_token("hash-a1") is False
    assert await storage.user_by_token("hash-a1") is None
    assert await storage.user_by_token("hash-a2") == alice

    with pytest.raises(NotFound):
        await storage.add_token("NoSuchUser0000000", "hash-x")


# -- stores ----------------------------------------------------------------------------------------------------


async def test_create_and_get_store(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    schema = {"actorKeyValueStoreSchemaVersion": 1, "collections": {"img": {"keyPrefix": "image-"}}}
    named = await storage.create_store(alice.id, "My-Store", schema, "secret1")
    assert len(named.id) == 17 and named.id.isalnum()
    assert (named.name, named.user_id, named.username) == ("My-Store", alice.id, "alice")
    assert named.schema == schema
    assert named.url_signing_secret_key == "secret1"
    assert named.general_access == "FOLLOW_USER_SETTING"
    assert named.stats.storage_bytes == 0 and named.stats.read_count == 0
    assert named.created_at.tzinfo is not None
    assert named.created_at <= named.modified_at and named.created_at <= named.accessed_at

    unnamed = await storage.create_store(alice.id, None, None, "secret2")
    assert unnamed.name is None and unnamed.schema is None
    assert unnamed.id != named.id

    assert await storage.get_store(named.id) == named
    assert await storage.get_store("NoSuchStore000000") is None
    # names compare without regard to case, the stored casing is kept
    assert (await storage.get_store_by_name(alice.id, "my-store")).id == named.id
    assert (await storage.get_store_by_name(alice.id, "MY-STORE")).name == "My-Store"
    assert await storage.get_store_by_name(alice.id, "other") is None
    with pytest.raises(NameNotUnique):
        await storage.create_store(alice.id, "my-STORE", None, "s")
    # another user may use the same name
    bob = await storage.create_user("bob")
    bobs = await storage.create_store(bob.id, "my-store", None, "s")
    assert bobs.id != named.id
    assert (await storage.get_store_by_name(bob.id, "My-Store")).id == bobs.id
    # several unnamed stores are fine
    await storage.create_store(alice.id, None, None, "s")


async def test_get_or_create_is_atomic(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    results: list = []

    async def one() -> None:
        results.append(await storage.get_or_create_store(alice.id, "shared", None, "k"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(results) == 20
    assert len({store.id for store, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    store, created = await storage.get_or_create_store(alice.id, "SHARED", None, "k")
    assert not created and store.id == results[0][0].id and store.name == "shared"
    total, page = await storage.list_stores(alice.id, offset=0, limit=100, desc=False, unnamed=True, ownership=None)
    assert total == 1


async def test_list_stores(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    bob = await storage.create_user("bob")
    made = []
    for name in ["s1", None, "s2", "s3"]:
        made.append(await storage.create_store(alice.id, name, None, "k"))
        await anyio.sleep(0.003)  # creation times have millisecond precision
    bobs = await storage.create_store(bob.id, "bobs", None, "k")
    await storage.create_store(bob.id, "private", None, "k")
    await storage.set_grant(bobs.id, alice.id, False)
    ids = [s.id for s in made]

    async def ls(**kw):
        args = dict(offset=0, limit=100, desc=False, unnamed=False, ownership=None) | kw
        total, page = await storage.list_stores(alice.id, **args)
        return total, [s.id for s in page]

    assert await ls(unnamed=True) == (5, ids + [bobs.id])
    assert await ls() == (4, [ids[0], ids[2], ids[3], bobs.id])
    assert await ls(unnamed=True, desc=True) == (5, list(reversed(ids + [bobs.id])))
    assert await ls(unnamed=True, offset=1, limit=2) == (5, ids[1:3])
    assert await ls(unnamed=True, offset=10) == (5, [])
    assert await ls(unnamed=True, ownership="ownedByMe") == (4, ids)
    assert await ls(unnamed=True, ownership="sharedWithMe") == (1, [bobs.id])
    assert await ls(ownership="ownedByMe", desc=True, limit=1) == (3, [ids[3]])
    total, page = await storage.list_stores(bob.id, offset=0, limit=10, desc=False, unnamed=True, ownership=None)
    assert total == 2 and {s.username for s in page} == {"bob"}


async def test_update_store(storage: Storage) -> None:
    alice, store = await new_store(storage, "first")
    await storage.create_store(alice.id, "taken", None, "k")
    await anyio.sleep(0.003)
    updated = await storage.update_store(
        store.id,
        {"name": "Renamed", "general_access": "ANYONE_WITH_ID_CAN_READ", "schema": {"title": "t"},
         "url_signing_secret_key": "new-key"},
    )
    assert updated.name == "Renamed"
    assert updated.general_access == "ANYONE_WITH_ID_CAN_READ"
    assert updated.schema == {"title": "t"}
    assert updated.url_signing_secret_key == "new-key"
    assert updated.created_at == store.created_at
    assert await storage.get_store(store.id) == updated
    assert (await storage.get_store_by_name(alice.id, "renamed")).id == store.id
    assert await storage.get_store_by_name(alice.id, "first") is None

    with pytest.raises(NameNotUnique):
        await storage.update_store(store.id, {"name": "TAKEN"})
    assert (await storage.get_store(store.id)).name == "Renamed"
    # a change of casing of its own name is not a conflict
    assert (await storage.update_store(store.id, {"name": "RENAMED"})).name == "RENAMED"
    assert (await storage.update_store(store.id, {"schema": None})).schema is None
    assert (await storage.update_store(store.id, {"name": None})).name is None
    with pytest.raises(NotFound):
        await storage.update_store("NoSuchStore000000", {"name": "x"})


async def test_delete_store_removes_records_and_grants(storage: Storage) -> None:
    alice, store = await new_store(storage, "doomed")
    bob = await storage.create_user("bob")
    await storage.set_grant(store.id, bob.id, True)
    await put(storage, store.id, "small", b"x")
    await put(storage, store.id, "big", os.urandom(inline_max(storage) + 1))
    _, other = await new_store(storage, "kept")
    await put(storage, other.id, "small", b"other")

    assert await storage.delete_store(store.id) is True
    assert await storage.delete_store(store.id) is False
    assert await storage.get_store(store.id) is None
    assert await storage.get_record(store.id, "small") is None
    assert await storage.get_record(store.id, "big") is None
    assert (await storage.list_keys(store.id, KeySelection(), None, 10)).items == []
    assert await storage.list_grants(store.id) == []
    total, _ = await storage.list_stores(bob.id, offset=0, limit=10, desc=False, unnamed=True, ownership=None)
    assert total == 0
    # the name is free again, the other store untouched
    again = await storage.create_store(alice.id, "doomed", None, "k")
    assert (await storage.list_keys(again.id, KeySelection(), None, 10)).items == []
    assert await read_all(storage, await storage.get_record(other.id, "small")) == b"other"
    with pytest.raises(NotFound):
        await put(storage, store.id, "k", b"v")


async def test_grants(storage: Storage) -> None:
    alice, store = await new_store(storage, "s")
    bob = await storage.create_user("bob")
    carol = await storage.create_user("carol")
    assert await storage.get_grant(store.id, bob.id) is None
    await storage.set_grant(store.id, bob.id, False)
    await storage.set_grant(store.id, carol.id, True)
    g = await storage.get_grant(store.id, bob.id)
    assert (g.store_id, g.user_id, g.username, g.can_write) == (store.id, bob.id, "bob", False)
    await storage.set_grant(store.id, bob.id, True)
    assert (await storage.get_grant(store.id, bob.id)).can_write is True
    assert sorted((g.username, g.can_write) for g in await storage.list_grants(store.id)) == [
        ("bob", True), ("carol", True)]
    assert await storage.remove_grant(store.id, bob.id) is True
    assert await storage.remove_grant(store.id, bob.id) is False
    assert [g.username for g in await storage.list_grants(store.id)] == ["carol"]


# -- records ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "small", "inline_max", "inline_max+1", "several MiB"])
async def test_put_get_sizes(storage: Storage, kind: str) -> None:
    limit = inline_max(storage)
    size = {"empty": 0, "small": 10, "inline_max": limit, "inline_max+1": limit + 1,
            "several MiB": 5 * 1024 * 1024 + 7}[kind]
    data = os.urandom(size)
    _, store = await new_store(storage, "s")
    before = time.time()
    meta = await put(storage, store.id, "rec", data, "image/png")
    assert (meta.key, meta.size, meta.decoded_size, meta.crc32) == ("rec", size, size, zlib.crc32(data))
    assert meta.content_type == "image/png" and meta.content_encoding is None
    assert before - 1 <= meta.modified_at.timestamp() <= time.time() + 1

    got = await storage.get_record(store.id, "rec")
    assert (got.key, got.size, got.decoded_size, got.crc32, got.content_type) == (
        "rec", size, size, zlib.crc32(data), "image/png")
    assert got.modified_at == meta.modified_at
    assert await read_all(storage, got) == data
    assert await read_all(storage, meta) == data
    # ranges
    assert await read_all(storage, got, 0, 0) == b""
    if size:
        assert await read_all(storage, got, size - 1) == data[-1:]
        assert await read_all(storage, got, size // 3, size // 2) == data[size // 3 : size // 2]
    chunks = [c async for c in storage.read_blob(got)]
    assert all(len(c) <= 1024 * 1024 for c in chunks)
    assert (await storage.get_store(store.id)).stats.storage_bytes == size


async def test_stores_encoding_and_bytes_as_given(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    gz = zlib.compress(b"hello" * 100)
    body = Body([gz])
    await storage.put_record(store.id, "z", body, "text/plain", "deflate")
    got = await storage.get_record(store.id, "z")
    assert got.content_encoding == "deflate" and got.size == len(gz)
    assert await read_all(storage, got) == gz


async def test_odd_keys_and_byte_order(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    long_key = (ALLOWED * 4)[:256]
    keys = [long_key, ALLOWED, "a", "A", "Z", "_", "-", "(", ")", "!", "'", "0", "9", ".a", "a.", "aa", "a-b"]
    keys += list(ALLOWED)
    keys = list(dict.fromkeys(keys))
    for k in keys:
        await put(storage, store.id, k, k.encode())
    for k in [long_key, ALLOWED, "'", "(", "!"]:
        assert await read_all(storage, await storage.get_record(store.id, k)) == k.encode()
    page = await storage.list_keys(store.id, KeySelection(), None, 1000)
    expected = sorted(keys, key=lambda k: k.encode())
    assert [i.key for i in page.items] == expected
    assert [i.size for i in page.items] == [len(k) for k in expected]
    assert not page.is_truncated
    # case matters: 'A' and 'a' are different records
    assert await read_all(storage, await storage.get_record(store.id, "A")) == b"A"
    assert await storage.get_record(store.id, "b-a") is None


async def test_overwrite_delete_generation_and_bytes(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    limit = inline_max(storage)
    g0 = store.generation
    m1 = await put(storage, store.id, "k", b"one")
    s1 = await storage.get_store(store.id)
    assert s1.generation > g0 and s1.stats.storage_bytes == 3
    assert s1.modified_at >= store.modified_at

    await anyio.sleep(0.003)
    big = os.urandom(limit + 100)
    await put(storage, store.id, "k", big, "application/x-big")
    s2 = await storage.get_store(store.id)
    assert s2.generation > s1.generation and s2.stats.storage_bytes == len(big)
    assert s2.modified_at > s1.modified_at
    got = await storage.get_record(store.id, "k")
    assert got.content_type == "application/x-big" and await read_all(storage, got) == big
    assert got.modified_at > m1.modified_at

    await put(storage, store.id, "k", b"")  # back to inline (empty)
    await put(storage, store.id, "other", b"12345")
    s3 = await storage.get_store(store.id)
    assert s3.stats.storage_bytes == 5
    assert await read_all(storage, await storage.get_record(store.id, "k")) == b""

    # nothing changes: no bump
    assert await storage.delete_record(store.id, "missing") is False
    assert (await storage.get_store(store.id)).generation == s3.generation
    await storage.get_record(store.id, "k")
    await storage.list_keys(store.id, KeySelection(), None, 10)
    assert (await storage.get_store(store.id)).generation == s3.generation

    await anyio.sleep(0.003)
    assert await storage.delete_record(store.id, "other") is True
    s4 = await storage.get_store(store.id)
    assert s4.generation > s3.generation and s4.stats.storage_bytes == 0 and s4.modified_at > s3.modified_at
    assert await storage.get_record(store.id, "other") is None
    assert await storage.delete_record(store.id, "other") is False
    with pytest.raises(NotFound):
        await put(storage, "NoSuchStore000000", "k", b"v")


@pytest.mark.parametrize("old_size,new_chunks,fail_after", [
    (10, 3, 1), (10, 40, 30), (200_000, 40, 39), (0, 2, 2), (200_000, 1, 0)])
async def test_aborted_body_keeps_old_record(storage: Storage, tmp_path, old_size, new_chunks, fail_after) -> None:
    _, store = await new_store(storage, "s")
    old = os.urandom(old_size)
    await put(storage, store.id, "k", old, "text/old")
    before = await storage.get_store(store.id)
    body = Body([os.urandom(16 * 1024) for _ in range(new_chunks)], fail_after=fail_after)
    with pytest.raises(BodyAborted):
        await storage.put_record(store.id, "k", body, "text/new", None)
    got = await storage.get_record(store.id, "k")
    assert got.content_type == "text/old" and await read_all(storage, got) == old
    after = await storage.get_store(store.id)
    assert after.generation == before.generation and after.stats.storage_bytes == old_size
    # and a new key is not created by an aborted upload
    with pytest.raises(BodyAborted):
        await storage.put_record(store.id, "new", Body([b"x" * 100_000] * 3, fail_after=2), "t", None)
    assert await storage.get_record(store.id, "new") is None
    tmp = getattr(storage, "tmp_dir", None)
    if tmp is not None:
        assert list(tmp.iterdir()) == []


async def test_list_keys_paging_and_selection(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    keys = [f"img-{i:03d}" for i in range(25)] + ["img", "imh", "ilk", "a", "z-last"]
    for k in keys:
        await put(storage, store.id, k, b"x" * len(k))
    ordered = sorted(keys)

    # paging with exclusiveStartKey
    seen, start = [], None
    while True:
        page = await storage.list_keys(store.id, KeySelection(), start, 7)
        seen += [i.key for i in page.items]
        if not page.is_truncated:
            break
        assert len(page.items) == 7
        start = page.items[-1].key
    assert seen == ordered

    full = await storage.list_keys(store.id, KeySelection(), None, len(keys))
    assert len(full.items) == len(keys) and not full.is_truncated
    assert (await storage.list_keys(store.id, KeySelection(), None, len(keys) - 1)).is_truncated
    # a start key that does not exist
    page = await storage.list_keys(store.id, KeySelection(), "img-0105", 3)
    assert [i.key for i in page.items] == ["img-011", "img-012", "img-013"]
    page = await storage.list_keys(store.id, KeySelection(), "zzz", 3)
    assert page.items == [] and not page.is_truncated

    # prefix
    page = await storage.list_keys(store.id, KeySelection(prefix="img-"), None, 1000)
    assert [i.key for i in page.items] == [k for k in ordered if k.startswith("img-")]
    page = await storage.list_keys(store.id, KeySelection(prefix="img"), "img-020", 1000)
    assert [i.key for i in page.items] == ["img-021", "img-022", "img-023", "img-024"]
    page = await storage.list_keys(store.id, KeySelection(prefix="im"), None, 2)
    assert [i.key for i in page.items] == ["img", "img-000"] and page.is_truncated
    assert (await storage.list_keys(store.id, KeySelection(prefix="nope"), None, 10)).items == []
    # exact
    page = await storage.list_keys(store.id, KeySelection(exact="img"), None, 10)
    assert [(i.key, i.size) for i in page.items] == [("img", 3)] and not page.is_truncated
    assert (await storage.list_keys(store.id, KeySelection(exact="im"), None, 10)).items == []
    page = await storage.list_keys(store.id, KeySelection(prefix="img-", exact="img-004"), None, 10)
    assert [i.key for i in page.items] == ["img-004"]
    assert (await storage.list_keys(store.id, KeySelection(prefix="x", exact="img-004"), None, 10)).items == []
    assert (await storage.list_keys(store.id, KeySelection(exact="img"), "img", 10)).items == []
    # other stores are separate
    _, other = await new_store(storage, "other")
    assert (await storage.list_keys(other.id, KeySelection(), None, 10)).items == []


async def test_prefix_with_special_characters(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    keys = ["a_b", "a_c", "axb", "a%b", "a.", "a-", "a(", "a)", "a'", "a!"]
    for k in keys:
        await put(storage, store.id, k, b"")
    # '_' and '%' are LIKE wildcards; a prefix must match them literally
    assert [i.key for i in (await storage.list_keys(store.id, KeySelection(prefix="a_"), None, 10)).items] == [
        "a_b", "a_c"]
    assert [i.key for i in (await storage.list_keys(store.id, KeySelection(prefix="a%"), None, 10)).items] == [
        "a%b"]


# -- snapshots -------------------------------------------------------------------------------------------------


async def snapshot_contents(snap, batch: int = 1000, after: str | None = None) -> dict[str, bytes]:
    out = {}
    async for records in snap.records(after=after, batch=batch):
        for r in records:
            data = await read_all(snap, r)
            assert len(data) == r.size and zlib.crc32(data) == r.crc32
            out[r.key] = data
    return out


async def test_snapshot_is_isolated_from_writes(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    limit = inline_max(storage)
    original = {
        "a-small": b"small",
        "a-mid": os.urandom(limit),  # the largest inline record
        "b-big": os.urandom(limit + 1),
        "c-big": os.urandom(3 * limit),
        "d-small": b"",
    }
    for k, v in original.items():
        await put(storage, store.id, k, v)
    gen = (await storage.get_store(store.id)).generation

    async with storage.snapshot(store.id, KeySelection()) as snap:
        assert snap.generation == gen
        t = snap.totals
        assert t.count == 5
        assert t.key_bytes == sum(len(k) for k in original)
        assert t.decoded_bytes == sum(len(v) for v in original.values())
        assert t.big_count == 0

        # writers change everything meanwhile
        await put(storage, store.id, "a-small", b"changed")
        await put(storage, store.id, "a-mid", b"changed too")
        await put(storage, store.id, "b-big", os.urandom(limit + 5))
        await storage.delete_record(store.id, "c-big")
        await put(storage, store.id, "d-small", os.urandom(limit * 2))
        await put(storage, store.id, "e-new", b"new")
        # and the garbage collector runs after the grace period (but before the snapshot's lease expires)
        await storage.collect_garbage(now=later(grace(storage) + 5))
        assert (await storage.get_store(store.id)).generation > gen

        assert await snapshot_contents(snap) == original
        assert await snapshot_contents(snap, batch=1) == original
        assert list(await snapshot_contents(snap, after="b-big")) == ["c-big", "d-small"]
        rec = None
        async for records in snap.records(after="b", batch=1):
            rec = records[0]
            break
        assert rec.key == "b-big"
        assert await read_all(snap, rec, 10, 20) == original["b-big"][10:20]
        assert snap.totals == t

    # a new snapshot sees the new state
    async with storage.snapshot(store.id, KeySelection()) as snap2:
        assert snap2.generation > gen
        contents = await snapshot_contents(snap2)
        assert sorted(contents) == ["a-mid", "a-small", "b-big", "d-small", "e-new"]
        assert contents["a-small"] == b"changed"


async def test_snapshot_selection_and_empty(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    for k in ["img-1", "img-2", "imh", "doc"]:
        await put(storage, store.id, k, k.encode() * 3)
    async with storage.snapshot(store.id, KeySelection(prefix="img-")) as snap:
        assert (snap.totals.count, snap.totals.key_bytes, snap.totals.decoded_bytes) == (2, 10, 30)
        assert list(await snapshot_contents(snap)) == ["img-1", "img-2"]
    async with storage.snapshot(store.id, KeySelection(exact="doc")) as snap:
        assert await snapshot_contents(snap) == {"doc": b"docdocdoc"}
    async with storage.snapshot(store.id, KeySelection(prefix="zzz")) as snap:
        assert snap.totals.count == snap.totals.key_bytes == snap.totals.decoded_bytes == snap.totals.big_count == 0
        assert await snapshot_contents(snap) == {}
    with pytest.raises(NotFound):
        async with storage.snapshot("NoSuchStore000000", KeySelection()):
            pass


async def test_snapshot_survives_store_deletion(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    big = os.urandom(inline_max(storage) * 2)
    await put(storage, store.id, "big", big)
    await put(storage, store.id, "small", b"s")
    async with storage.snapshot(store.id, KeySelection()) as snap:
        await storage.delete_store(store.id)
        await storage.collect_garbage(now=later(grace(storage) + 5))
        assert await snapshot_contents(snap) == {"big": big, "small": b"s"}


async def test_get_record_blob_readable_during_grace_period(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    big = os.urandom(inline_max(storage) + 10)
    await put(storage, store.id, "k", big)
    meta = await storage.get_record(store.id, "k")
    await put(storage, store.id, "k", b"replacement")
    await storage.delete_record(store.id, "k")
    await storage.collect_garbage(now=later(grace(storage) / 2))
    assert await read_all(storage, meta) == big


# -- stats -----------------------------------------------------------------------------------------------------


async def test_stats_are_buffered_and_flushed(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    _, other = await new_store(storage, "o")
    await anyio.sleep(0.005)
    storage.count_access(store.id, reads=2)
    storage.count_access(store.id, reads=1, writes=3)
    storage.count_access(store.id, deletes=1, lists=4)
    storage.count_access(other.id, lists=1)
    storage.count_access("NoSuchStore000000", reads=1)  # a store deleted meanwhile: ignored
    await storage.flush_stats()
    s = await storage.get_store(store.id)
    assert (s.stats.read_count, s.stats.write_count, s.stats.delete_count, s.stats.list_count) == (3, 3, 1, 4)
    assert s.accessed_at > store.accessed_at
    o = await storage.get_store(other.id)
    assert (o.stats.read_count, o.stats.list_count) == (0, 1)
    # deltas add up, they don't overwrite
    storage.count_access(store.id, reads=10)
    await storage.flush_stats()
    await storage.flush_stats()
    assert (await storage.get_store(store.id)).stats.read_count == 13


async def test_times_are_utc_milliseconds(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    meta = await put(storage, store.id, "k", b"v")
    for t in (store.created_at, store.modified_at, store.accessed_at, meta.modified_at):
        assert t.tzinfo is not None and t.utcoffset() == timedelta(0)
        assert t.microsecond % 1000 == 0
        assert abs(t.timestamp() - time.time()) < 60
    assert meta.modified_at.astimezone(UTC) == (await storage.get_record(store.id, "k")).modified_at


async def test_many_records_stream_in_batches(storage: Storage) -> None:
    _, store = await new_store(storage, "s")
    n = 2500

    async def put_range(start: int) -> None:
        for i in range(start, n, 25):
            await put(storage, store.id, f"k{i:05d}", hashlib.sha1(str(i).encode()).digest())

    async with anyio.create_task_group() as writers:  # 25 writers at once (one by one, 2,500 commits wait in turn)
        for start in range(25):
            writers.start_soon(put_range, start)
    async with storage.snapshot(store.id, KeySelection()) as snap:
        assert snap.totals.count == n and snap.totals.decoded_bytes == 20 * n
        sizes, last = [], None
        async for batch in snap.records(batch=1000):
            sizes.append(len(batch))
            assert last is None or batch[0].key > last
            last = batch[-1].key
        assert sizes == [1000, 1000, 500]
