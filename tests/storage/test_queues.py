"""Request queues in storage (openkvs/storage/queues.py), on both backends: the contract's head order, locks with a
controlled clock, counters, hadMultipleClients, and exclusivity under concurrency (API-request-queues.md 5-9)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from openkvs.requestid import request_id
from openkvs.storage.base import QUEUE, NotFound, Storage
from openkvs.storage.queues import (
    NewRequest,
    QueueStorage,
    RequestHandledOrLocked,
    RequestNotFound,
    queue_storage,
)

pytestmark = pytest.mark.anyio


class Clock:
    """The queue clock of a backend, moved by hand (milliseconds)."""

    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


def req(url: str, *, unique_key: str | None = None, handled: bool = False, **extra: Any) -> NewRequest:
    key = unique_key or url
    body = {"uniqueKey": key, "url": url, "method": "GET", "retryCount": 0, **extra}
    if handled:
        body["handledAt"] = "2026-12-01T00:00:00.000Z"
    return NewRequest(request_id(key), key, url, "GET", 0, handled, json.dumps(body))


async def new_queue(storage: Storage, clock: Clock | None = None) -> tuple[QueueStorage, str]:
    user = await storage.get_user_by_name("alice") or await storage.create_user("alice")
    store = await storage.create_store(user.id, None, None, "signing-key", kind=QUEUE)
    qs = queue_storage(storage)
    if clock is not None:
        qs.queue_clock = clock
    return qs, store.id


async def head_urls(qs: QueueStorage, qid: str, limit: int = 100, key: str | None = "k") -> list[str]:
    head = await qs.queue_head(qid, limit=limit, client_key=key)
    return [i.url for i in head.items]


async def counts(qs: QueueStorage, qid: str) -> tuple[int, int, int]:
    c = (await qs.queue_counts([qid]))[qid]
    return c.total, c.handled, c.pending


async def test_add_dedupes_by_unique_key_and_counts(storage: Storage) -> None:
    qs, qid = await new_queue(storage)
    assert await counts(qs, qid) == (0, 0, 0)
    (first,) = await qs.add_requests(qid, [req("http://a")], forefront=False, client_key="k")
    assert (first.request_id, first.was_already_present, first.was_already_handled) == (
        request_id("http://a"), False, False,
    )
    again = await qs.add_requests(qid, [req("http://a", foo=1)], forefront=True, client_key="k")
    assert [(r.was_already_present, r.was_already_handled) for r in again] == [(True, False)]
    # nothing changed: neither the body nor the place
    stored = await qs.get_request(qid, request_id("http://a"))
    assert stored is not None and "foo" not in json.loads(stored.body) and stored.lock_expires_at is None

    # a batch: new, handled-on-arrival (answers false, as Apify does), the same key twice
    regs = await qs.add_requests(
        qid, [req("http://b"), req("http://c", handled=True), req("http://b"), req("http://a")],
        forefront=False, client_key="k",
    )
    assert [(r.was_already_present, r.was_already_handled) for r in regs] == [
        (False, False), (False, False), (True, False), (True, False),
    ]
    assert await counts(qs, qid) == (3, 1, 2)
    regs = await qs.add_requests(qid, [req("http://c")], forefront=False, client_key="k")
    assert (regs[0].was_already_present, regs[0].was_already_handled) == (True, True)
    assert await head_urls(qs, qid) == ["http://a", "http://b"]
    assert await qs.get_request(qid, request_id("http://nope")) is None


async def test_head_order_front_and_back(storage: Storage) -> None:
    qs, qid = await new_queue(storage)
    for u in ("1", "2", "3"):
        await qs.add_requests(qid, [req(u)], forefront=False, client_key="k")
    await qs.add_requests(qid, [req("priority1")], forefront=True, client_key="k")
    await qs.add_requests(qid, [req("priority2")], forefront=True, client_key="k")
    assert await head_urls(qs, qid) == ["priority2", "priority1", "1", "2", "3"]
    await qs.add_requests(qid, [req("a"), req("b"), req("c")], forefront=True, client_key="k")
    assert await head_urls(qs, qid) == ["c", "b", "a", "priority2", "priority1", "1", "2", "3"]
    assert await head_urls(qs, qid, limit=4) == ["c", "b", "a", "priority2"]
    # an update of a pending request re-places it: to the back, or the front with forefront
    await qs.update_request(qid, req("1", retryCount=1), forefront=False, client_key="k")
    await qs.update_request(qid, req("3"), forefront=True, client_key="k")
    assert await head_urls(qs, qid) == ["3", "c", "b", "a", "priority2", "priority1", "2", "1"]


async def test_lock_expiry_prolong_and_release(storage: Storage) -> None:
    clock = Clock()
    qs, qid = await new_queue(storage, clock)
    await qs.add_requests(qid, [req("x1"), req("x2"), req("x3")], forefront=False, client_key="A")

    got = await qs.lock_head(qid, limit=2, lock_secs=60, client_key="A")
    assert [i.url for i in got.items] == ["x1", "x2"] and got.has_locked
    assert all(i.lock_expires_at is not None and i.lock_expires_at.timestamp() * 1000 == clock.ms + 60_000
               for i in got.items)
    # locked requests are not available to anyone, the owner included
    assert await head_urls(qs, qid, key="A") == ["x3"]
    other = await qs.lock_head(qid, limit=25, lock_secs=60, client_key="B")
    assert [i.url for i in other.items] == ["x3"]
    assert (await qs.lock_head(qid, limit=25, lock_secs=60, client_key="C")).items == []
    assert (await qs.lock_head(qid, limit=25, lock_secs=60, client_key="C")).has_locked

    x1, x2, x3 = (request_id(u) for u in ("x1", "x2", "x3"))
    stored = await qs.get_request(qid, x1)
    assert stored is not None and stored.lock_expires_at is not None
    # only the owner may prolong or delete a live lock
    with pytest.raises(RequestHandledOrLocked, match="locked by another client"):
        await qs.prolong_lock(qid, x1, lock_secs=10, forefront=False, client_key="B")
    with pytest.raises(RequestHandledOrLocked, match="locked by another client"):
        await qs.delete_lock(qid, x1, forefront=False, client_key=None)
    with pytest.raises(RequestNotFound):
        await qs.prolong_lock(qid, request_id("missing"), lock_secs=10, forefront=False, client_key="A")
    with pytest.raises(RequestNotFound):
        await qs.delete_lock(qid, request_id("missing"), forefront=False, client_key="A")
    expiry = await qs.prolong_lock(qid, x1, lock_secs=120, forefront=True, client_key="A")
    assert expiry.timestamp() * 1000 == clock.ms + 120_000

    # 60 s later x2 (A) and x3 (B) lapse: back in the head, in the order of their expiry; x1 still held
    clock.advance(60)
    assert await head_urls(qs, qid) == ["x2", "x3"]
    stored = await qs.get_request(qid, x2)
    assert stored is not None and stored.lock_expires_at is None
    # a lapsed lock may be re-taken by prolong (by anyone: nobody else holds it)
    await qs.prolong_lock(qid, x3, lock_secs=30, forefront=False, client_key="C")
    assert await head_urls(qs, qid) == ["x2"]
    # 60 s more: x1's prolonged lock (forefront) lapses and it comes first; x3 (C, back) lapsed earlier
    clock.advance(60)
    assert await head_urls(qs, qid) == ["x1", "x2", "x3"]

    # delete-lock: the owner's live lock is removed and the request placed now (front with forefront)
    got = await qs.lock_head(qid, limit=1, lock_secs=60, client_key="A")
    assert [i.url for i in got.items] == ["x1"]
    await qs.delete_lock(qid, x1, forefront=False, client_key="A")
    assert await head_urls(qs, qid) == ["x2", "x3", "x1"]
    await qs.delete_lock(qid, x1, forefront=False, client_key="B")  # not locked: nothing happens
    assert await head_urls(qs, qid) == ["x2", "x3", "x1"]

    # unlock frees every live lock of one key, no other
    await qs.lock_head(qid, limit=2, lock_secs=60, client_key="A")
    await qs.lock_head(qid, limit=1, lock_secs=60, client_key=None)
    assert await head_urls(qs, qid) == []
    assert await qs.unlock_requests(qid, client_key="B") == 0
    assert await qs.unlock_requests(qid, client_key="A") == 2
    assert sorted(await head_urls(qs, qid)) == ["x2", "x3"]
    assert await qs.unlock_requests(qid, client_key=None) == 1  # the keyless locks belong to "no key"
    assert sorted(await head_urls(qs, qid)) == ["x1", "x2", "x3"]
    assert not (await qs.lock_head(qid, limit=0, lock_secs=1, client_key="A")).has_locked


async def test_update_marks_handled_and_reclaims(storage: Storage) -> None:
    clock = Clock()
    qs, qid = await new_queue(storage, clock)
    await qs.add_requests(qid, [req("u1"), req("u2"), req("u3")], forefront=False, client_key="A")
    u1, u2, u3 = (request_id(u) for u in ("u1", "u2", "u3"))
    await qs.lock_head(qid, limit=2, lock_secs=180, client_key="A")

    # marking handled works whoever holds the lock, and counts once
    reg = await qs.update_request(qid, req("u1", handled=True), forefront=False, client_key="B")
    assert (reg.was_already_present, reg.was_already_handled) == (True, False)
    reg = await qs.update_request(qid, req("u1", handled=True), forefront=False, client_key="A")
    assert (reg.was_already_present, reg.was_already_handled) == (True, True)
    assert await counts(qs, qid) == (3, 1, 2)
    with pytest.raises(RequestHandledOrLocked, match="already handled"):
        await qs.prolong_lock(qid, u1, lock_secs=10, forefront=False, client_key="A")
    await qs.delete_lock(qid, u1, forefront=False, client_key="A")  # handled: a no-op

    # an update by another client keeps the owner's lock (content changes)
    await qs.update_request(qid, req("u2", retryCount=5), forefront=False, client_key="B")
    stored = await qs.get_request(qid, u2)
    assert stored is not None and stored.lock_expires_at is not None and json.loads(stored.body)["retryCount"] == 5
    assert await head_urls(qs, qid) == ["u3"]
    # the owner's reclaim releases its lock and places the request (forefront: first)
    await qs.update_request(qid, req("u2", retryCount=6), forefront=True, client_key="A")
    assert await head_urls(qs, qid) == ["u2", "u3"]

    # a reclaim of a handled request makes it pending again
    reg = await qs.update_request(qid, req("u1"), forefront=False, client_key="A")
    assert reg.was_already_handled
    assert await counts(qs, qid) == (3, 0, 3)
    assert await head_urls(qs, qid) == ["u2", "u3", "u1"]

    # upsert of a missing request creates it
    reg = await qs.update_request(qid, req("u4", handled=True), forefront=False, client_key="A")
    assert (reg.was_already_present, reg.was_already_handled) == (False, False)
    assert await counts(qs, qid) == (4, 1, 3)
    _ = u3


async def test_delete_requests_and_queue(storage: Storage) -> None:
    qs, qid = await new_queue(storage)
    await qs.add_requests(qid, [req("d1"), req("d2", handled=True), req("d3")], forefront=False, client_key="A")
    await qs.lock_head(qid, limit=1, lock_secs=60, client_key="A")  # d1 locked: locks do not stop a delete
    keys = await qs.delete_requests(qid, [request_id("d1"), request_id("d2"), request_id("zz")], client_key="B")
    assert keys == ["d1", "d2", None]
    assert await counts(qs, qid) == (1, 0, 1)
    assert await qs.get_request(qid, request_id("d1")) is None
    assert await head_urls(qs, qid) == ["d3"]
    assert await storage.delete_store(qid)
    with pytest.raises(NotFound):
        await qs.add_requests(qid, [req("d4")], forefront=False, client_key="A")
    with pytest.raises(NotFound):
        await qs.lock_head(qid, limit=1, lock_secs=60, client_key="A")
    # the queue's rows went with it: a new queue (another ID) starts empty, and no rows of the old one are left
    qs, qid2 = await new_queue(storage)
    assert await counts(qs, qid) == (0, 0, 0)
    assert (await qs.list_requests(qid, after=None, limit=10, client_key=None))[0] == []


async def test_list_requests_pages_and_filters(storage: Storage) -> None:
    clock = Clock()
    qs, qid = await new_queue(storage, clock)
    urls = [f"http://l/{i}" for i in range(12)]
    await qs.add_requests(qid, [req(u) for u in urls], forefront=False, client_key="A")
    await qs.update_request(qid, req(urls[0], handled=True), forefront=False, client_key="A")
    locked = {i.id for i in (await qs.lock_head(qid, limit=3, lock_secs=60, client_key="A")).items}
    ids = sorted(request_id(u) for u in urls)

    seen: list[str] = []
    after = None
    while True:
        page, more = await qs.list_requests(qid, after=after, limit=5, client_key="A")
        seen += [r.id for r in page]
        if not more:
            break
        after = page[-1].id
    assert seen == ids

    async def listed(pending: bool, locked: bool) -> list[Any]:
        page, more = await qs.list_requests(
            qid, after=None, limit=100, pending=pending, locked=locked, handled=False, client_key="A"
        )
        assert not more
        return page

    only_locked = await listed(False, True)
    assert {r.id for r in only_locked} == locked
    assert all(r.lock_expires_at is not None for r in only_locked)
    assert {r.id for r in await listed(True, False)} == set(ids) - locked - {request_id(urls[0])}
    assert {r.id for r in await listed(True, True)} == set(ids) - {request_id(urls[0])}
    clock.advance(61)  # the locks lapse: those requests are pending again
    page, _ = await qs.list_requests(qid, after=None, limit=100, locked=True, pending=False, handled=False,
                                     client_key="A")
    assert page == []


async def test_had_multiple_clients(storage: Storage) -> None:
    qs, qid = await new_queue(storage)
    assert not (await qs.queue_counts([qid]))[qid].had_multiple_clients
    await qs.add_requests(qid, [req("m1")], forefront=False, client_key="run-1")
    head = await qs.queue_head(qid, limit=10, client_key="run-1")
    assert not head.had_multiple_clients
    await qs.get_request(qid, request_id("m1"))  # does not count
    assert not (await qs.queue_counts([qid]))[qid].had_multiple_clients
    head = await qs.queue_head(qid, limit=10, client_key=None)  # no key: a new client
    assert head.had_multiple_clients
    assert (await qs.queue_counts([qid]))[qid].had_multiple_clients
    # a refused call leaves no trace: it is not a client (only a call that was carried out is)
    qs2, qid2 = await new_queue(storage)
    await qs2.add_requests(qid2, [req("m1")], forefront=False, client_key="A")
    with pytest.raises(RequestNotFound):
        await qs2.delete_lock(qid2, request_id("nope"), forefront=False, client_key="B")
    with pytest.raises(RequestNotFound):
        await qs2.prolong_lock(qid2, request_id("nope"), lock_secs=60, forefront=False, client_key="B")
    await qs2.lock_head(qid2, limit=1, lock_secs=60, client_key="A")
    with pytest.raises(RequestHandledOrLocked):
        await qs2.prolong_lock(qid2, request_id("m1"), lock_secs=60, forefront=False, client_key="B")
    with pytest.raises(RequestHandledOrLocked):
        await qs2.delete_lock(qid2, request_id("m1"), forefront=False, client_key="B")
    assert not (await qs2.queue_counts([qid2]))[qid2].had_multiple_clients
    await qs2.unlock_requests(qid2, client_key="B")  # carried out (it frees nothing of B's): a second client
    assert (await qs2.queue_counts([qid2]))[qid2].had_multiple_clients


async def test_modified_at_moves_on_changes(storage: Storage) -> None:
    clock = Clock()
    qs, qid = await new_queue(storage, clock)
    before = (await storage.get_store(qid)).modified_at  # type: ignore[union-attr]
    clock.advance(5)
    await qs.add_requests(qid, [req("t1")], forefront=False, client_key="A")
    after_add = (await storage.get_store(qid)).modified_at  # type: ignore[union-attr]
    assert after_add - before >= timedelta(seconds=4)
    clock.advance(5)
    head = await qs.lock_head(qid, limit=1, lock_secs=10, client_key="A")
    assert head.modified_at - after_add == timedelta(seconds=5)


# -- concurrency -----------------------------------------------------------------------------------------------


async def test_concurrent_adds_of_one_unique_key_create_it_once(storage: Storage) -> None:
    qs, qid = await new_queue(storage)
    results: list[Any] = []

    async def add(n: int) -> None:
        regs = await qs.add_requests(
            qid, [req("http://same"), req(f"http://own/{n}")], forefront=n % 2 == 0, client_key=f"c{n}"
        )
        results.append(regs[0])

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(add, n)
    assert sum(not r.was_already_present for r in results) == 1
    assert {r.request_id for r in results} == {request_id("http://same")}
    assert await counts(qs, qid) == (21, 0, 21)


async def _second_instance(storage: Storage, tmp_path: Any) -> Storage:
    """Another backend instance on the same database: for SQLite another writer connection (another process would
    be the same), for PostgreSQL another pool (another node)."""
    from openkvs.storage.postgres import PostgresStorage
    from openkvs.storage.sqlite import SQLiteStorage

    if isinstance(storage, SQLiteStorage):
        other: Storage = SQLiteStorage(storage.data_dir, background=False)
    else:
        assert isinstance(storage, PostgresStorage)
        other = PostgresStorage(storage.dsn, namespace=storage.namespace)
    await other.open()
    return other


async def test_head_lock_hands_each_request_to_one_client(storage: Storage, tmp_path: Any) -> None:
    """Many clients on two backend instances take, hold and mark requests handled at once: every request is
    handed out exactly once (no lock lapses: 600 s), and the counters end exact."""
    qs, qid = await new_queue(storage)
    n = 150
    for i in range(0, n, 25):
        await qs.add_requests(qid, [req(f"http://c/{j}") for j in range(i, i + 25)], forefront=False, client_key="s")
    other = await _second_instance(storage, tmp_path)
    try:
        handed: dict[str, str] = {}
        dupes: list[str] = []

        async def worker(name: str, q: QueueStorage) -> None:
            while True:
                head = await q.lock_head(qid, limit=3, lock_secs=600, client_key=name)
                if not head.items:
                    if not head.has_locked:
                        return
                    await anyio.sleep(0.01)
                    continue
                for item in head.items:
                    if item.id in handed:
                        dupes.append(item.id)
                    handed[item.id] = name
                    await q.update_request(qid, req(item.url, handled=True), forefront=False, client_key=name)

        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(worker, f"w{w}", queue_storage(storage if w % 2 else other))
        assert dupes == []
        assert len(handed) == n
        assert await counts(qs, qid) == (n, n, 0)
        assert len({handed[k] for k in handed}) > 1  # the work was shared
    finally:
        await other.aclose()


async def test_expired_locks_come_back_once(storage: Storage) -> None:
    """Clients that die (never mark handled): their requests return when the locks lapse, and each is then taken by
    exactly one of the clients racing for it."""
    clock = Clock()
    qs, qid = await new_queue(storage, clock)
    await qs.add_requests(qid, [req(f"e{i}") for i in range(20)], forefront=False, client_key="s")
    first = await qs.lock_head(qid, limit=20, lock_secs=30, client_key="dead")
    assert len(first.items) == 20
    assert (await qs.lock_head(qid, limit=20, lock_secs=30, client_key="x")).items == []
    clock.advance(30)
    taken: list[str] = []

    async def take(name: str) -> None:
        for _ in range(5):
            head = await qs.lock_head(qid, limit=2, lock_secs=30, client_key=name)
            taken.extend(i.id for i in head.items)

    async with anyio.create_task_group() as tg:
        for w in range(6):
            tg.start_soon(take, f"t{w}")
    assert sorted(taken) == sorted(i.id for i in first.items)
