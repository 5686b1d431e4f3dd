"""A model-based test of the request queue (hypothesis state machine), on both backends: random adds, batch adds,
head, lock, prolong, delete-lock, unlock, mark handled, reclaim and delete, with a controlled clock, checked after
every step against a small reference model written from API-request-queues.md sections 5 and 6 (not from the
implementation's code): the head in order, the counters, every answer and every refusal."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from openkvs.requestid import request_id
from openkvs.storage.base import QUEUE, Storage
from openkvs.storage.queues import NewRequest, QueueStorage, RequestHandledOrLocked, queue_storage
from tests.conftest import examples

KEYS = [f"http://m/{i}" for i in range(6)]
CLIENTS = ["A", "B", None]


@dataclass
class Item:
    """One request in the model: handled, or placed on a side at a time with a sequence number; maybe locked."""

    handled: bool
    front: bool = False
    at: int = 0
    seq: int = 0
    owner: str | None = None  # the lock's owner ("" for no key) while ``expires`` is in the future
    expires: int = 0


@dataclass
class Model:
    now: int
    items: dict[str, Item] = field(default_factory=dict)
    seq: int = 0

    def place(self, item: Item, front: bool, at: int) -> None:
        self.seq += 1
        item.front, item.at, item.seq, item.owner, item.expires = front, at, self.seq, None, 0

    def locked(self, item: Item) -> bool:
        return not item.handled and item.expires > self.now

    def available(self) -> list[str]:
        pending = [(k, i) for k, i in self.items.items() if not i.handled and not self.locked(i)]
        front = sorted((p for p in pending if p[1].front), key=lambda p: (-p[1].at, -p[1].seq))
        back = sorted((p for p in pending if not p[1].front), key=lambda p: (p[1].at, p[1].seq))
        return [k for k, _ in front + back]

    def lock(self, key: str, front: bool, secs: int, client: str | None) -> None:
        """Locked until now + secs; when that lapses it stands placed at the expiry on the side given."""
        item = self.items[key]
        self.place(item, front, self.now + secs * 1000)
        item.owner, item.expires = client or "", self.now + secs * 1000


def new_request(key: str, handled: bool, retry: int = 0) -> NewRequest:
    body: dict[str, Any] = {"uniqueKey": key, "url": key, "method": "GET", "retryCount": retry}
    if handled:
        body["handledAt"] = "2026-12-01T00:00:00.000Z"
    return NewRequest(request_id(key), key, key, "GET", retry, handled, json.dumps(body))


class QueueMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    storage: Storage
    user_id: str

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def new_queue(self) -> None:
        self.model = Model(now=time.time_ns() // 1_000_000)
        store = self.run(self.storage.create_store(self.user_id, None, None, "k", kind=QUEUE))
        self.qid = store.id
        self.qs: QueueStorage = queue_storage(self.storage)
        self.qs.queue_clock = lambda: self.model.now

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), forefront=st.booleans(),
          handled=st.booleans(), client=st.sampled_from(CLIENTS))
    def add(self, keys: list[str], forefront: bool, handled: bool, client: str | None) -> None:
        regs = self.run(self.qs.add_requests(self.qid, [new_request(k, handled) for k in keys],
                                             forefront=forefront, client_key=client))
        for key, reg in zip(keys, regs, strict=True):
            item = self.model.items.get(key)
            if item is None:
                assert (reg.was_already_present, reg.was_already_handled) == (False, False)
                item = self.model.items[key] = Item(handled)
                if not handled:
                    self.model.place(item, forefront, self.model.now)
            else:
                assert (reg.was_already_present, reg.was_already_handled) == (True, item.handled)

    @rule(limit=st.integers(1, 3), secs=st.integers(1, 5), client=st.sampled_from(CLIENTS))
    def lock_head(self, limit: int, secs: int, client: str | None) -> None:
        head = self.run(self.qs.lock_head(self.qid, limit=limit, lock_secs=secs, client_key=client))
        expected = self.model.available()[:limit]
        assert [i.url for i in head.items] == expected
        for key in expected:
            self.model.lock(key, self.model.items[key].front, secs, client)
        assert head.has_locked == any(self.model.locked(i) for i in self.model.items.values())

    @rule(key=st.sampled_from(KEYS), secs=st.integers(1, 5), forefront=st.booleans(), client=st.sampled_from(CLIENTS))
    def prolong(self, key: str, secs: int, forefront: bool, client: str | None) -> None:
        item = self.model.items.get(key)
        try:
            expiry = self.run(self.qs.prolong_lock(self.qid, request_id(key), lock_secs=secs, forefront=forefront,
                                                   client_key=client))
        except RequestHandledOrLocked as exc:
            assert item is not None
            if item.handled:
                assert str(exc) == RequestHandledOrLocked.HANDLED
            else:
                assert self.model.locked(item) and item.owner != (client or ""), str(exc)
            return
        except Exception as exc:
            assert item is None, exc
            return
        assert item is not None and not item.handled
        assert not self.model.locked(item) or item.owner == (client or "")
        assert expiry.timestamp() * 1000 == self.model.now + secs * 1000
        self.model.lock(key, forefront, secs, client)

    @rule(key=st.sampled_from(KEYS), forefront=st.booleans(), client=st.sampled_from(CLIENTS))
    def delete_lock(self, key: str, forefront: bool, client: str | None) -> None:
        item = self.model.items.get(key)
        try:
            self.run(self.qs.delete_lock(self.qid, request_id(key), forefront=forefront, client_key=client))
        except RequestHandledOrLocked:
            assert item is not None and self.model.locked(item) and item.owner != (client or "")
            return
        except Exception as exc:
            assert item is None, exc
            return
        assert item is not None
        if self.model.locked(item):
            assert item.owner == (client or "")
            self.model.place(item, forefront, self.model.now)

    @rule(client=st.sampled_from(CLIENTS))
    def unlock(self, client: str | None) -> None:
        count = self.run(self.qs.unlock_requests(self.qid, client_key=client))
        mine = [(k, i) for k, i in self.model.items.items() if self.model.locked(i) and i.owner == (client or "")]
        assert count == len(mine)
        for _, item in sorted(mine, key=lambda p: (-p[1].at if p[1].front else p[1].at, p[1].seq if not p[1].front
                                                   else -p[1].seq)):
            self.model.place(item, item.front, self.model.now)

    @rule(key=st.sampled_from(KEYS), handled=st.booleans(), forefront=st.booleans(), client=st.sampled_from(CLIENTS))
    def update(self, key: str, handled: bool, forefront: bool, client: str | None) -> None:
        """Mark handled (handled) or reclaim / update (not handled); an upsert when missing."""
        reg = self.run(self.qs.update_request(self.qid, new_request(key, handled, retry=1), forefront=forefront,
                                              client_key=client))
        item = self.model.items.get(key)
        assert (reg.was_already_present, reg.was_already_handled) == (
            item is not None, item is not None and item.handled)
        if item is None:
            item = self.model.items[key] = Item(handled)
            if not handled:
                self.model.place(item, forefront, self.model.now)
            return
        held_by_other = self.model.locked(item) and item.owner != (client or "")
        item.handled = handled
        if handled:
            item.owner, item.expires = None, 0
        elif not held_by_other:
            self.model.place(item, forefront, self.model.now)

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True), client=st.sampled_from(CLIENTS))
    def delete(self, keys: list[str], client: str | None) -> None:
        found = self.run(self.qs.delete_requests(self.qid, [request_id(k) for k in keys], client_key=client))
        assert found == [k if k in self.model.items else None for k in keys]
        for k in keys:
            self.model.items.pop(k, None)

    @rule(seconds=st.integers(1, 6))
    def tick(self, seconds: int) -> None:
        self.model.now += seconds * 1000

    @invariant()
    def head_and_counts(self) -> None:
        if not hasattr(self, "qid"):
            return
        head = self.run(self.qs.queue_head(self.qid, limit=100, client_key="A"))
        assert [i.url for i in head.items] == self.model.available()
        counts = self.run(self.qs.queue_counts([self.qid]))[self.qid]
        handled = sum(i.handled for i in self.model.items.values())
        assert (counts.total, counts.handled, counts.pending) == (len(self.model.items), handled,
                                                                 len(self.model.items) - handled)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_queue_follows_the_model(backend: str, tmp_path: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        storage = loop.run_until_complete(_open(backend, tmp_path))
        try:
            QueueMachine.loop = loop
            QueueMachine.storage = storage
            QueueMachine.user_id = loop.run_until_complete(storage.create_user("model")).id
            run_state_machine_as_test(QueueMachine, settings=settings(
                max_examples=examples(40), stateful_step_count=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck),
            ))
        finally:
            loop.run_until_complete(_close(backend, storage))
    finally:
        loop.close()


async def _open(backend: str, tmp_path: Any) -> Storage:
    import os

    from openkvs.storage.ids import new_id
    from openkvs.storage.postgres import PostgresStorage
    from openkvs.storage.sqlite import SQLiteStorage

    storage: Storage
    if backend == "sqlite":
        storage = SQLiteStorage(tmp_path / "data")
    else:
        dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
        storage = PostgresStorage(dsn, namespace=f"test_{new_id().lower()}")
    await storage.open()
    return storage


async def _close(backend: str, storage: Storage) -> None:
    await storage.aclose()
    if backend == "postgres":
        await storage.drop()
