"""Store look-ups in a burst (the access decisions of many concurrent requests), on every backend: each caller
gets the answer it would get alone, whoever asks what (owner, grantee, stranger, anonymous, a missing store or
record, another kind, names). On PostgreSQL such a burst is asked together (storage/postgres/lookups.py): fewer
queries than look-ups, and an answer never read before its caller asked."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import pytest

from openkvs.storage.base import DATASET, Storage

from .conftest import Body
from .test_contract import new_store, put

pytestmark = pytest.mark.anyio

ID_READ = ("ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")
DSN = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def seen(storage: Storage, found: Any) -> Any:
    """What an access decision takes from a look-up, the bytes that came with the record included."""
    if found is None:
        return None
    record = found.record
    return found.store, found.grant, found.record_read, record, record is not None and storage.held_bytes(record)


async def _world(storage: Storage) -> tuple[list[dict[str, Any]], Any]:
    """Stores, users and records for look-ups of every kind; returns the look-ups (keyword arguments) and the
    private store."""
    alice, private = await new_store(storage, "private")
    _, public = await new_store(storage, "public", username="dave")
    await storage.update_store(public.id, {"general_access": "ANYONE_WITH_ID_CAN_READ"})
    bob = await storage.create_user("bob")
    carol = await storage.create_user("carol")
    await storage.set_grant(private.id, carol.id, False)
    for i in range(6):
        await put(storage, private.id, f"k{i}", os.urandom(100 * i))
        await put(storage, public.id, f"k{i}", os.urandom(50 * i + 1))
    dataset = await storage.create_store(alice.id, "ds", None, "k" * 32, kind=DATASET)
    asks: list[dict[str, Any]] = []
    for user_id in (alice.id, bob.id, carol.id, None):
        for store_id in (private.id, public.id, dataset.id, "NoSuchStore000000"):
            for key in ("k1", "k5", "missing", None):
                for readable in ((), ID_READ):
                    asks.append(dict(user_id=user_id, store_id=store_id, key=key, readable=readable))
    asks.append(dict(user_id=alice.id, store_id=dataset.id, kind=DATASET))
    asks.append(dict(user_id=alice.id, owner_id=alice.id, name="private", key="k2"))
    asks.append(dict(user_id=bob.id, owner_id=alice.id, name="private", key="k2", readable=ID_READ))
    return asks, private


def _call(storage: Storage, ask: dict[str, Any]) -> Any:
    ask = dict(ask)
    return storage.look_up_store(ask.pop("user_id"), **ask)


async def test_a_burst_of_look_ups_answers_each_as_alone(storage: Storage) -> None:
    asks, _ = await _world(storage)
    alone = [seen(storage, await _call(storage, a)) for a in asks]
    assert sum(a is not None and a[3] is not None for a in alone) >= 15  # records were read, with their bytes
    for _ in range(3):
        together = await asyncio.gather(*(_call(storage, a) for a in asks))
        for ask, want, got in zip(asks, alone, together, strict=True):
            assert seen(storage, got) == want, ask


async def test_a_caller_that_leaves_does_not_disturb_the_others(storage: Storage) -> None:
    asks, _ = await _world(storage)
    alone = [seen(storage, await _call(storage, a)) for a in asks]
    tasks = [asyncio.ensure_future(_call(storage, a)) for a in asks]
    await asyncio.sleep(0)
    for t in tasks[1::3]:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (want, got) in enumerate(zip(alone, results, strict=True)):
        if i % 3 != 1 or not isinstance(got, asyncio.CancelledError):
            assert seen(storage, got) == want, asks[i]
    # and the next burst is answered as well
    again = await asyncio.gather(*(_call(storage, a) for a in asks))
    assert [seen(storage, g) for g in again] == alone


@pytest.mark.postgres
async def test_postgres_asks_a_burst_together(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    if type(storage).__name__ != "PostgresStorage":
        pytest.skip("PostgreSQL's look-ups")
    asks, _ = await _world(storage)
    by_id = [a for a in asks if "store_id" in a]
    queries = 0
    for name in ("_fetch", "_fetchrow"):
        real = getattr(storage, name)

        async def counting(*args: Any, real: Any = real) -> Any:
            nonlocal queries
            queries += 1
            return await real(*args)

        monkeypatch.setattr(storage, name, counting)
    found = await asyncio.gather(*(_call(storage, a) for a in by_id))
    assert len(found) == len(by_id)
    # one shape is (with a record or not, the kind, the levels): each asks alone once, then together
    assert queries <= 4 * 4, f"{len(by_id)} look-ups took {queries} queries"


@pytest.mark.postgres
async def test_postgres_a_look_up_in_a_burst_sees_what_was_committed_before_it_asked(storage: Storage) -> None:
    """Another node writes a record while a look-up of another key is in flight (its answer, read before that
    commit, not yet taken in: this event loop is busy running psql): a look-up of that record asked after the
    commit must find it."""
    if type(storage).__name__ != "PostgresStorage":
        pytest.skip("PostgreSQL's look-ups")
    alice, store = await new_store(storage, "s")
    await put(storage, store.id, "other", b"x")
    await asyncio.gather(*(storage.look_up_store(alice.id, store_id=store.id, key="other") for _ in range(8)))
    namespace = storage.namespace  # type: ignore[attr-defined]
    for i in range(5):
        in_flight = asyncio.ensure_future(storage.look_up_store(alice.id, store_id=store.id, key="other"))
        await asyncio.sleep(0)  # it sends its query
        subprocess.run(  # the other node's write of k{i}, committed while this loop waits
            ["psql", DSN, "-qc",
             f"UPDATE {namespace}.stores SET title = 'title {i}' WHERE id = '{store.id}';"
             f"INSERT INTO {namespace}.records (store_id, key, content_type, size, decoded_size, crc32, "
             f"modified_at, blob_id, chunk_size) VALUES ('{store.id}', 'k{i}', 'text/plain', 0, 0, 0, now(), "
             f"nextval('{namespace}.blob_ids'), 1048576)"],
            check=True, timeout=60,
        )
        found = await storage.look_up_store(alice.id, store_id=store.id, key=f"k{i}")
        assert found is not None and found.store.title == f"title {i}", (i, found and found.store.title)
        assert found.record is not None and found.record.key == f"k{i}" and found.record.size == 0
        await in_flight


async def test_concurrent_gets_and_writes_of_a_store(storage: Storage) -> None:
    """A burst of look-ups with writes among them: every look-up made after a write was acknowledged sees it."""
    alice, store = await new_store(storage, "s")

    async def writer_then_reader(i: int) -> None:
        for n in range(5):
            data = f"{i}:{n}".encode()
            await storage.put_record(store.id, f"k{i}", Body([data]), "text/plain", None)
            found = await storage.look_up_store(alice.id, store_id=store.id, key=f"k{i}")
            assert found is not None and found.record is not None
            assert storage.held_bytes(found.record) == data

    await asyncio.gather(*(writer_then_reader(i) for i in range(16)))
