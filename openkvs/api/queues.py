"""Request-queue endpoints (API-request-queues.md): the queue object (``queue_json``, for the generic resource
handlers), and the requests of a queue: add and batch add, list, get, update, delete and batch delete, the head,
head/lock, prolong and delete of a lock, unlock. Input rules are queue_input.py's; the state and its rules are
storage's (openkvs/storage/queues.py)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openkvs import access, console, errors, jsontext
from openkvs.access import Access
from openkvs.api import queue_input as qi
from openkvs.api.common import (
    QUEUE_BATCH,
    QUEUE_REQUESTS,
    count_returned,
    iso,
    json_response,
    public_base,
    query_bool,
    query_int,
    read_json_body,
    state,
)
from openkvs.api.resources import ResourceApi, titled_fields
from openkvs.storage import base
from openkvs.storage import queues as sq
from openkvs.storage.base import Store

LIST_LIMIT = 1000  # default page of GET requests
LIST_MAX = 10_000
HEAD_LIMIT = 100
HEAD_MAX = 1000  # REQUEST_QUEUE_HEAD_MAX_LIMIT
HEAD_LOCK_LIMIT = 25


async def describe(request: Request, resources: Sequence[tuple[Store, Access]], listing: bool) -> list[dict[str, Any]]:
    """The wire forms of queues (api/resources.py): their counters come from storage, one query per page."""
    counts = await sq.queue_storage(state(request).storage).queue_counts([q.id for q, _ in resources])
    return [queue_json(request, q, counts[q.id], listed=listing) for q, _ in resources]


QUEUES_API = ResourceApi(
    access.QUEUES, "/v2/request-queues", describe, "Request queue with this name already exists", takes_schema=False,
    titled=True,
)


def queue_json(request: Request, store: Store, counts: sq.QueueCounts, *, listed: bool = False) -> dict[str, Any]:
    """Section 4: the queue object (``listed``: as a list item, without consoleUrl, name "" when unnamed)."""
    out: dict[str, Any] = {
        **titled_fields(store, listed=listed),
        "totalRequestCount": counts.total,
        "handledRequestCount": counts.handled,
        "pendingRequestCount": counts.pending,
        "hadMultipleClients": counts.had_multiple_clients,
        "actId": None,
        "actRunId": None,
        "generalAccess": store.general_access,
        "stats": {
            "readCount": store.stats.read_count,
            "writeCount": store.stats.write_count,
            "deleteCount": store.stats.delete_count,
            "headItemReadCount": store.stats.list_count,
            "storageBytes": store.stats.storage_bytes,
        },
    }
    if not listed:
        out["consoleUrl"] = console.url_of(public_base(request), "request-queues", store.id)
    return out


# -- the frame of every request endpoint -------------------------------------------------------------------------


async def _queue(request: Request, level: Access, budget: str | None = None) -> tuple[str, sq.QueueStorage]:
    """The queue the path names, with the caller's right checked and the request charged to ``budget`` (section 10:
    QUEUE_REQUESTS for an operation on one request, QUEUE_BATCH for batches and head/lock, else the queue's
    store budget), and the queue methods of storage."""
    found = await access.decide(request, access.QUEUES, request.path_params["queue_id"], level, budget=budget)
    return found.store.id, sq.queue_storage(state(request).storage)


@contextmanager
def _answers() -> Iterator[None]:
    """Storage's refusals as the contract's errors."""
    try:
        yield
    except sq.RequestNotFound:
        raise qi.RequestNotFound() from None
    except sq.RequestHandledOrLocked as exc:
        raise qi.RequestHandledOrLocked(str(exc)) from None
    except base.NotFound:
        raise qi.QueueNotFound() from None


def _request_json(stored: sq.StoredRequest) -> str:
    """The stored JSON text with ``id`` first and ``lockExpiresAt`` last, spliced rather than parsed again."""
    tail = stored.body[1:]
    if stored.lock_expires_at is not None:
        tail = f'{tail[:-1]},"lockExpiresAt":"{iso(stored.lock_expires_at)}"}}'
    return f'{{"id":{json.dumps(stored.id)},{tail}'


async def _json_body(request: Request, check: Callable[[Any], Any]) -> Any:
    """The JSON body through ``check`` (queue_input's rules, which walk the whole value and encode it for
    storage), with the parse: off the event loop for a body of any size but a small one. On the event loop, a
    request of 6 MB of tiny strings in userData held every other request up for 1.2 s, one of 3 MB of nested empty
    arrays for 3 s."""
    qi.check_content_type(request)
    return await read_json_body(request, max_depth=jsontext.BODY_MAX_DEPTH, check=check)


def _raw_response(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status, media_type="application/json; charset=utf-8")


def _registration(r: sq.Registration) -> dict[str, Any]:
    return {"requestId": r.request_id, "wasAlreadyPresent": r.was_already_present,
            "wasAlreadyHandled": r.was_already_handled}


def _head_item(item: sq.HeadItem) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "uniqueKey": item.unique_key, "url": item.url, "method": item.method,
                           "retryCount": item.retry_count}
    if item.lock_expires_at is not None:
        out["lockExpiresAt"] = iso(item.lock_expires_at)
    return out


# -- /requests -----------------------------------------------------------------------------------------------


async def requests_endpoint(request: Request) -> Response:
    if request.method == "POST":
        return await _add(request)
    return await _list(request)


async def _add(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.WRITE, QUEUE_REQUESTS)
    forefront = query_bool(request, "forefront")
    key = qi.client_key(request)
    new = await _json_body(request, qi.parse_request)
    with _answers():
        (reg,) = await qs.add_requests(queue_id, [new], forefront=forefront, client_key=key)
    state(request).storage.count_access(queue_id, writes=1)
    return json_response(_registration(reg), 201)


async def _list(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.READ)
    key = qi.client_key(request)
    limit = query_int(request, "limit", LIST_LIMIT, minimum=0, maximum=LIST_MAX) or LIST_LIMIT
    cursor = request.query_params.get("cursor") or None
    start = request.query_params.get("exclusiveStartId") or None
    raw_filter = request.query_params.get("filter") or None
    if start is not None and (cursor is not None or raw_filter is not None):
        raise errors.InvalidInput('"exclusiveStartId" may not be combined with "cursor" or "filter".')
    if start is not None and "\x00" in start:
        raise errors.InvalidInput('"exclusiveStartId" must not contain a NUL character.')
    filters = set(raw_filter.split(",")) if raw_filter is not None else set()
    if filters - {"pending", "locked"}:
        raise errors.InvalidInput('"filter" takes "pending" and/or "locked".')
    after = qi.decode_cursor(cursor) if cursor is not None else start
    with _answers():
        if filters:
            items, more = await qs.list_requests(
                queue_id, after=after, limit=limit, pending="pending" in filters, locked="locked" in filters,
                handled=False, client_key=key,
            )
        else:
            items, more = await qs.list_requests(queue_id, after=after, limit=limit, client_key=key)
    count_returned(request, state(request).storage, queue_id, reads=len(items))  # (section 8)
    next_cursor = qi.encode_cursor(items[-1].id) if more and items else None
    meta = json.dumps({"limit": limit, "cursor": cursor, "exclusiveStartId": start, "nextCursor": next_cursor},
                      separators=(",", ":"))
    return _raw_response(f'{{"data":{{"items":[{",".join(_request_json(r) for r in items)}],{meta[1:]}}}')


# -- /requests/batch and /requests/unlock ------------------------------------------------------------------------


async def batch_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.WRITE, QUEUE_BATCH)
    key = qi.client_key(request)
    if request.method == "POST":
        forefront = query_bool(request, "forefront")
        news = await _json_body(request, _batch_to_add)
        with _answers():
            regs = await qs.add_requests(queue_id, news, forefront=forefront, client_key=key)
        state(request).storage.count_access(queue_id, writes=len(regs))
        processed = [{**_registration(r), "uniqueKey": n.unique_key} for r, n in zip(regs, news, strict=True)]
        return json_response({"processedRequests": processed, "unprocessedRequests": []}, 201)
    targets = await _json_body(request, _batch_to_delete)
    with _answers():
        keys = await qs.delete_requests(queue_id, [t[0] for t in targets], client_key=key)
    state(request).storage.count_access(queue_id, deletes=sum(k is not None for k in keys))
    processed = []
    for (request_id, given), stored in zip(targets, keys, strict=True):
        entry: dict[str, Any] = {"id": request_id}
        if stored is not None or given is not None:
            entry["uniqueKey"] = stored if stored is not None else given
        processed.append(entry)
    return json_response({"processedRequests": processed, "unprocessedRequests": []})


def _batch_to_add(body: Any) -> list[sq.NewRequest]:
    return [qi.parse_request(obj, index=i) for i, obj in enumerate(qi.parse_batch(body))]


def _batch_to_delete(body: Any) -> list[tuple[str, str | None]]:
    return [_to_delete(obj, i) for i, obj in enumerate(qi.parse_batch(body))]


def _to_delete(obj: Any, index: int) -> tuple[str, str | None]:
    """(request ID, the uniqueKey given) of one element of a batch delete."""
    where = f" (request at index {index})"
    if not isinstance(obj, dict):
        raise errors.InvalidInput(f"a request must be a JSON object{where}.")
    given_id, unique_key = obj.get("id"), obj.get("uniqueKey")
    if unique_key is not None:
        unique_key = qi.text_field(obj, "uniqueKey", where)
        derived = qi.request_id(unique_key)
        if given_id is not None and given_id != derived:
            raise qi.RequestIdInvalid()
        return derived, unique_key
    # (each message names what is wrong: an "id" given but malformed was told it needed an "id")
    if given_id is None:
        raise errors.InvalidInput(f'each request needs "id" or "uniqueKey"{where}.')
    if not isinstance(given_id, str):
        raise errors.InvalidInput(f'"id" must be a string{where}.')
    if not qi.plausible_request_id(given_id):
        raise errors.InvalidInput(f'"id" is not a request ID: 1 to 64 ASCII letters and digits{where}.')
    return given_id, None


async def unlock_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.WRITE)
    key = qi.client_key(request)
    with _answers():
        count = await qs.unlock_requests(queue_id, client_key=key)
    state(request).storage.count_access(queue_id, writes=count)
    return json_response({"unlockedCount": count})


# -- /requests/{requestId} and its lock --------------------------------------------------------------------------


_REQUEST_LEVELS = {"GET": Access.READ, "HEAD": Access.READ, "PUT": Access.WRITE, "DELETE": Access.WRITE}


async def request_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, _REQUEST_LEVELS[request.method], QUEUE_REQUESTS)
    request_id = request.path_params["request_id"]
    storage = state(request).storage
    if request.method in ("GET", "HEAD"):
        stored = await qs.get_request(queue_id, request_id) if qi.plausible_request_id(request_id) else None
        if stored is None:
            raise qi.RequestNotFound()
        count_returned(request, storage, queue_id, reads=1)
        return _raw_response(f'{{"data":{_request_json(stored)}}}')
    key = qi.client_key(request)
    if request.method == "PUT":
        forefront = query_bool(request, "forefront")
        new = await _json_body(request, functools.partial(qi.parse_request, path_id=request_id))
        with _answers():
            reg = await qs.update_request(queue_id, new, forefront=forefront, client_key=key)
        storage.count_access(queue_id, writes=1)
        return json_response(_registration(reg))
    if qi.plausible_request_id(request_id):
        with _answers():
            deleted = await qs.delete_requests(queue_id, [request_id], client_key=key)
        storage.count_access(queue_id, deletes=sum(k is not None for k in deleted))
    return Response(status_code=204)


async def lock_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.WRITE, QUEUE_REQUESTS)
    request_id = request.path_params["request_id"]
    key = qi.client_key(request)
    forefront = query_bool(request, "forefront")
    if request.method == "PUT":
        secs = qi.lock_secs(request)
        if not qi.plausible_request_id(request_id):
            raise qi.RequestNotFound()
        with _answers():
            expiry = await qs.prolong_lock(queue_id, request_id, lock_secs=secs, forefront=forefront, client_key=key)
        state(request).storage.count_access(queue_id, writes=1)
        return json_response({"lockExpiresAt": iso(expiry)})
    if not qi.plausible_request_id(request_id):
        raise qi.RequestNotFound()
    with _answers():
        deleted = await qs.delete_lock(queue_id, request_id, forefront=forefront, client_key=key)
    state(request).storage.count_access(queue_id, writes=int(deleted))  # section 8: +1 per deleted lock
    return Response(status_code=204)


# -- /head and /head/lock ----------------------------------------------------------------------------------------


async def head_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.READ)
    key = qi.client_key(request)
    limit = query_int(request, "limit", HEAD_LIMIT, minimum=0, maximum=HEAD_MAX) or HEAD_LIMIT
    with _answers():
        head = await qs.queue_head(queue_id, limit=limit, client_key=key)
    count_returned(request, state(request).storage, queue_id, lists=len(head.items))  # (section 8: per item)
    return json_response({
        "limit": limit,
        "queueModifiedAt": iso(head.modified_at),
        "hadMultipleClients": head.had_multiple_clients,
        "items": [_head_item(i) for i in head.items],
    })


async def head_lock_endpoint(request: Request) -> Response:
    queue_id, qs = await _queue(request, Access.WRITE, QUEUE_BATCH)
    key = qi.client_key(request)
    secs = qi.lock_secs(request)
    limit = query_int(request, "limit", HEAD_LOCK_LIMIT, minimum=0, maximum=HEAD_LOCK_LIMIT) or HEAD_LOCK_LIMIT
    with _answers():
        head = await qs.lock_head(queue_id, limit=limit, lock_secs=secs, client_key=key)
    state(request).storage.count_access(queue_id, writes=len(head.items))
    return json_response({
        "limit": limit,
        "lockSecs": secs,
        "clientKey": key,
        "queueModifiedAt": iso(head.modified_at),
        "hadMultipleClients": head.had_multiple_clients,
        "queueHasLockedRequests": head.has_locked,
        "items": [_head_item(i) for i in head.items],
    }, 201)


