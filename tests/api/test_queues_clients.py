"""The official apify-client (sync and async) request-queue methods against openkvs over a real socket, on both
backends: all 17 operations, with the clients' own models validating every answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from apify_client import ApifyClient, ApifyClientAsync
from apify_client.errors import ApifyApiError

from openkvs.requestid import request_id

from . import unique

if TYPE_CHECKING:
    from tests.conftest import Server


def test_every_operation_sync(shared_server: Server) -> None:
    client = ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url,
                         max_retries=1)
    name = unique("rqc")
    queues = client.request_queues()
    created = queues.get_or_create(name=name)  # 1 get or create
    assert created.name == name and created.total_request_count == 0
    assert queues.get_or_create(name=name).id == created.id
    assert created.id in [q.id for q in queues.list(limit=1000).items]  # 2 list
    rq = client.request_queue(created.id, client_key="crawler-1")
    assert rq.get().id == created.id  # 3 get
    renamed = unique("rqc2")
    assert rq.update(name=renamed, title="My queue").name == renamed  # 4 update
    assert client.request_queue(f"alice~{renamed}").get().id == created.id

    reg = rq.add_request({"url": "https://apify.com", "unique_key": "https://apify.com"})  # 5 add
    assert reg.request_id == "fvwscO2UJLdr10B" and not reg.was_already_present
    batch = rq.batch_add_requests(  # 6 batch add
        [{"url": f"https://example.com/{i}", "unique_key": f"https://example.com/{i}"} for i in range(30)]
    )
    assert len(batch.processed_requests) == 30 and batch.unprocessed_requests == []
    head = rq.list_head(limit=5)  # 7 head
    assert [i.url for i in head.items] == ["https://apify.com"] + [f"https://example.com/{i}" for i in range(4)]
    assert head.had_multiple_clients is False

    got = rq.get_request("fvwscO2UJLdr10B")  # 8 get request
    assert got is not None and got.url == "https://apify.com" and got.unique_key == "https://apify.com"
    assert rq.get_request(request_id("https://nowhere")) is None
    upd = rq.update_request(  # 9 update request
        {**got.model_dump(by_alias=True, exclude_none=True), "userData": {"label": "DETAIL"}}
    )
    assert upd.was_already_present and not upd.was_already_handled
    stored = rq.get_request(got.id)
    assert stored is not None and stored.user_data is not None and stored.user_data.label == "DETAIL"

    locked = rq.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=3)  # 10 head/lock
    assert len(locked.items) == 3 and locked.queue_has_locked_requests and locked.lock_secs == 60
    first = locked.items[0]
    prolonged = rq.prolong_request_lock(first.id, lock_duration=timedelta(seconds=120))  # 11 prolong
    assert prolonged is not None and prolonged.lock_expires_at > first.lock_expires_at
    rq.delete_request_lock(first.id, forefront=True)  # 12 delete lock
    assert rq.list_head(limit=1).items[0].id == first.id
    listed = rq.list_requests(limit=10, filter=["locked"])  # 13 list requests
    assert len(listed.items) == 2
    assert rq.unlock_requests().unlocked_count == 2  # 14 unlock
    all_ids = [r.id for r in rq.iterate_requests()]
    assert len(all_ids) == 31 and all_ids == sorted(all_ids)

    deleted = rq.batch_delete_requests([{"unique_key": f"https://example.com/{i}"} for i in range(5)])  # 15
    assert len(deleted.processed_requests) == 5
    rq.delete_request(request_id("https://example.com/5"))  # 16 delete request
    assert rq.get().total_request_count == 31 - 6
    rq.delete()  # 17 delete queue
    assert rq.get() is None


def test_every_operation_async(shared_server: Server) -> None:
    asyncio.run(every_operation_async(shared_server))


async def every_operation_async(shared_server: Server) -> None:
    client = ApifyClientAsync(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url,
                              max_retries=1)
    created = await client.request_queues().get_or_create(name=unique("rqa"))
    rq = client.request_queue(created.id, client_key="async-1")
    assert (await rq.get()).id == created.id
    assert (await client.request_queues().list(unnamed=True, limit=1000)).items
    await rq.update(title="t")
    await rq.add_request({"url": "https://example.com/test", "unique_key": "https://example.com/test"})
    reqs = [{"url": f"https://a.com/{i}", "unique_key": f"https://a.com/{i}"} for i in range(60)]
    result = await rq.batch_add_requests(reqs, max_parallel=3)
    assert len(result.processed_requests) == 60
    assert (await rq.get()).total_request_count == 61
    head = await rq.list_head(limit=1000)
    assert len(head.items) == 61 and head.items[0].id == "m4HI5oTdgEt45GR"

    handled = 0
    while True:
        locked = await rq.list_and_lock_head(lock_duration=timedelta(seconds=300), limit=25)
        if not locked.items:
            assert not locked.queue_has_locked_requests
            break
        for item in locked.items:
            full = await rq.get_request(item.id)
            assert full is not None
            full.handled_at = datetime.now(UTC)
            reg = await rq.update_request(full)
            assert not reg.was_already_handled
            handled += 1
    assert handled == 61
    info = await rq.get()
    assert (info.total_request_count, info.handled_request_count, info.pending_request_count) == (61, 61, 0)
    with pytest.raises(ApifyApiError) as refused:
        await rq.prolong_request_lock("m4HI5oTdgEt45GR", lock_duration=timedelta(seconds=5))
    assert refused.value.type == "request-handled-or-locked"
    page = await rq.list_requests(limit=10)
    assert len(page.items) == 10 and page.next_cursor
    assert (await rq.unlock_requests()).unlocked_count == 0
    await rq.delete_request_lock("m4HI5oTdgEt45GR")  # handled: a no-op
    await rq.batch_delete_requests([{"id": "m4HI5oTdgEt45GR"}])
    await rq.delete_request(request_id("https://a.com/0"))
    assert (await rq.get()).total_request_count == 59
    await rq.delete()
    assert await rq.get() is None
