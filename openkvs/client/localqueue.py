"""Request queues in Crawlee's local storage, read by ``openkvs import`` and written by ``openkvs export --queue``:

    storage/request_queues/<queue name, or "default">/
        __metadata__.json     {"id", "name", ..., "handled_request_count", "pending_request_count", ...}
        <first 15 hex digits of the uniqueKey's SHA-256>.json
                              {"unique_key", "url", "method", "payload", "headers", "user_data", "retry_count",
                               "no_retry", "loaded_url", "handled_at"}
    storage/key_value_stores/default/__RQ_STATE_<queue id>
                              the queue's order: {"forefront_requests": {uniqueKey: n}, "regular_requests": ...,
                              "handled_requests": [...], ...} (crawlee 1.x saves it now and then, not always)

That is crawlee 1.x (``FileSystemRequestQueueClient``). The older layout of the JavaScript Crawlee and crawlee 0.x
is read too: ``<request id>.json`` holding ``{"id", "orderNo" (or "order_no"), "url", "uniqueKey", ..., "json"}``,
the whole request (camelCase) as a JSON text in ``json``, and its place in ``orderNo`` (null once handled; forefront
ones negative). The Apify CLI's older SQLite queues (``db.sqlite``) are not read.

Import adds the requests in the queue's order (from the saved state, else ``orderNo``, else the order their files
were last written in, which is when Crawlee added or reclaimed them) with their uniqueKey, url, method, payload,
headers, userData, retryCount, noRetry, loadedUrl and handledAt, 25 to a batch. An add is idempotent by uniqueKey,
so a re-run adds what is missing and changes nothing else. What the API cannot carry: forefront (it becomes the
position), requests in progress (pending again, as Crawlee makes them when it opens the queue), the queue's ID and
times, hadMultipleClients.

Export writes the crawlee 1.x layout, with the order of the pending requests saved in the state record (the first
1000 in head order, the rest after them in the API's listing order), so that Crawlee takes them in that order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from openkvs import rules
from openkvs.client.http import BadAnswer, ClientError, data, parsing, request, resource
from openkvs.client.localfiles import (
    DEFAULT_STORE,
    METADATA,
    QUEUE_ORDER,
    api_path,
    crawlee_json,
    crawlee_time,
    export_folder,
    local_name,
    metadata,
    new_folder,
    put_in_place,
    read_bounded,
    refuse_names,
    write,
)
from openkvs.client.progress import Progress
from openkvs.plural import counted

SUBDIR = "request_queues"
COLLECTION = "request-queues"
STATE_PREFIX = QUEUE_ORDER  # crawlee's RecoverableState key, in the default key-value store
MAX_REQUEST_FILE = rules.MAX_JSON_BODY  # a request is part of a batch: no more than a batch's body
MAX_STATE_FILE = 1 << 30
HEAD_LIMIT = 1000  # the most one GET head gives (API-request-queues.md 5.11)
# Requests asked per page of the listing: a page is held whole (at most http.MAX_ANSWER, 64 MiB), and 1,000 requests
# of Crawlee's usual size (~1 KB) are far below it
LIST_LIMIT = 1000
# crawlee 1.x's field names, as written by Request.model_dump, and the API's
SNAKE: dict[str, str] = {
    "unique_key": "uniqueKey", "user_data": "userData", "retry_count": "retryCount", "no_retry": "noRetry",
    "loaded_url": "loadedUrl", "handled_at": "handledAt", "error_messages": "errorMessages",
}
# crawlee's fields in the order it writes them, with their defaults
CRAWLEE_FIELDS: dict[str, Any] = {
    "unique_key": None, "url": None, "method": "GET", "payload": None, "headers": {}, "user_data": {},
    "retry_count": 0, "no_retry": False, "loaded_url": None, "handled_at": None,
}


@dataclass
class LocalQueue:
    name: str
    folder: Path
    files: list[str]  # the request files' names, pending ones first in the queue's order, then handled ones
    handled: int
    order: str  # where the order came from, for the summary


def is_queue(folder: Path) -> bool:
    meta = metadata(folder)
    return "total_request_count" in meta or "totalRequestCount" in meta or "handled_request_count" in meta


def file_name(unique_key: str) -> str:
    """crawlee 1.x's name of a request's file (FileSystemRequestQueueClient._get_file_base_name_from_unique_key)."""
    return hashlib.sha256(unique_key.encode()).hexdigest()[:15] + ".json"


def api_request(value: Any) -> dict[str, Any]:
    """A request file's JSON (either layout) as the API's request object: camelCase, no nulls, no ``id`` (the
    server derives it from uniqueKey)."""
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if isinstance(value.get("json"), str):  # the older layout: the request is inside
        value = json.loads(value["json"])
        if not isinstance(value, dict):
            raise ValueError('its "json" is not a JSON object')
    out: dict[str, Any] = {SNAKE.get(str(k), str(k)): v for k, v in value.items() if v is not None and k != "id"}
    for field in ("uniqueKey", "url"):
        text = out.get(field)
        if not isinstance(text, str) or not text or len(text.encode()) > 65_535:
            raise ValueError(f"its {field} is not a text of 1 to 65,535 bytes")
    return out


def _state(folder: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """crawlee 1.x's saved state of this queue (beside it in the storage folder), if it saved one."""
    kvs = folder.parent.parent / "key_value_stores" / DEFAULT_STORE
    if folder.parent.name != SUBDIR or not isinstance(meta.get("id"), str) or kvs.is_symlink() \
            or kvs.parent.is_symlink():
        return None
    try:
        state = json.loads(read_bounded(kvs / f"{STATE_PREFIX}{meta['id']}", MAX_STATE_FILE))
    except (OSError, ValueError, ClientError):
        return None
    return state if isinstance(state, dict) else None


def read_queue(folder: Path) -> LocalQueue:
    """The request files of a queue's folder, each read and checked, in the queue's order; a list of what is
    wrong (nothing sent)."""
    meta = metadata(folder)
    name = local_name(folder, meta)
    state = _state(folder, meta) or {}
    front, regular = state.get("forefront_requests") or {}, state.get("regular_requests") or {}
    if not isinstance(front, dict) or not isinstance(regular, dict):
        front, regular = {}, {}
    # (group, place in it, file name) of each request: names, not Paths (a Path once opened keeps its text too:
    # a million of them took ~400 MB)
    keyed: list[tuple[int, float, str]] = []
    place: tuple[int, float, str]
    problems: list[str] = []
    links: list[str] = []
    handled = 0
    orders: set[str] = set()
    with os.scandir(folder) as found:
        for entry in found:
            if entry.is_symlink():
                links.append(entry.name)
                continue
            if entry.name == METADATA or not entry.name.endswith(".json") or "~" in entry.name:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    raise ValueError("not a file")
                raw = json.loads(read_bounded(folder / entry.name, MAX_REQUEST_FILE))
                req = api_request(raw)
            except ClientError as exc:
                problems.append(f"{entry.name}: {str(exc).removeprefix(f'{folder / entry.name}: ')}")
                continue
            except ValueError as exc:
                problems.append(f"{entry.name}: not a request ({exc})")
                continue
            key = req["uniqueKey"]
            order_no = raw.get("orderNo", raw.get("order_no"))
            # (forefront first, the latest first; then the others, the earliest first; handled ones last)
            if req.get("handledAt") is not None:
                handled += 1
                keyed.append((4, entry.stat().st_mtime, entry.name))
                continue
            if isinstance(front.get(key), int):
                place, source = (0, -front[key], entry.name), "Crawlee's saved state"
            elif isinstance(regular.get(key), int):
                place, source = (1, regular[key], entry.name), "Crawlee's saved state"
            elif isinstance(order_no, (int, float)):
                place, source = (2, order_no, entry.name), "orderNo"
            else:
                place, source = (3, entry.stat().st_mtime, entry.name), "the files' times"
            orders.add(source)
            keyed.append(place)
    refuse_names(folder, sorted(links))
    if problems:
        problems.sort()
        shown = "\n  ".join(problems[:50]) + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else "")
        raise ClientError(f"{folder}: requests that can't be imported (nothing was imported):\n  {shown}")
    keyed.sort()
    order = " and ".join(sorted(orders)) or "none needed"
    return LocalQueue(name, folder, [file for _, _, file in keyed], handled, order)


@dataclass
class Added:
    added: int = 0
    present: int = 0  # already in the queue (an earlier import, or the same uniqueKey twice)
    handled: int = 0

    def line(self) -> str:
        return (f"added {counted(self.added, 'request')} ({self.handled} of them handled), "
                f"{self.present} already there")


def _batches(local: LocalQueue) -> Iterator[list[tuple[bytes, bool]]]:
    """The requests in order, in batches the API takes (at most rules.MAX_BATCH, and rules.MAX_JSON_BODY bytes),
    each request as JSON with whether it is handled."""
    batch: list[tuple[bytes, bool]] = []
    size = 2
    for file in local.files:
        req = api_request(json.loads(read_bounded(local.folder / file, MAX_REQUEST_FILE)))
        body = json.dumps(req, ensure_ascii=False, separators=(",", ":")).encode()
        if batch and (len(batch) == rules.MAX_BATCH or size + len(body) + 1 > rules.MAX_JSON_BODY):
            yield batch
            batch, size = [], 2
        batch.append((body, req.get("handledAt") is not None))
        size += len(body) + 1
    if batch:
        yield batch


def import_queue(
    client: httpx.Client,
    local: LocalQueue,
    target: str,
    *,
    progress: Callable[[str, int | None, int], Progress] = Progress,
) -> Added:
    """``local``'s requests added to ``target`` in order (see the module's docstring)."""
    done = Added()
    bar = progress(local.name, None, 0)
    try:
        for batch in _batches(local):
            body = b"[" + b",".join(one for one, _ in batch) + b"]"
            what = f"adding {counted(len(batch), 'request')} to {target}"
            r = request(client, "POST", api_path(COLLECTION, target) + "/requests/batch", what,
                        content=functools.partial(bytes, body), headers={"Content-Type": "application/json"})
            with parsing(what):
                processed = data(r, what)["processedRequests"]
            for answer, (_, handled) in zip(processed, batch, strict=True):
                if answer["wasAlreadyPresent"]:
                    done.present += 1
                else:
                    done.added += 1
                    done.handled += handled
            bar.advance(len(body))
    except (ClientError, OSError, ValueError) as exc:
        raise ClientError(f"{local.folder} -> {target}: {exc}; {done.added + done.present} of {len(local.files)} "
                          f"requests are in {target} (run the same command again to add the rest)") from None
    finally:
        bar.close()
    return done


def _pages(client: httpx.Client, target: str) -> Iterator[dict[str, Any]]:
    """The queue's requests, page by page; a server whose listing doesn't advance (a cursor given before) is a
    BadAnswer, not a loop."""
    cursor = None
    seen: set[str] = set()
    what = f"listing {target}"
    while True:
        params: dict[str, Any] = {"limit": LIST_LIMIT, **({"cursor": cursor} if cursor else {})}
        page = data(request(client, "GET", api_path(COLLECTION, target) + "/requests", what, params=params), what)
        with parsing(what):
            items, cursor = page["items"], page.get("nextCursor")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise BadAnswer(what, "items is not a list of requests")
            if cursor is not None and not isinstance(cursor, str):
                raise BadAnswer(what, f"nextCursor {cursor!r} is not a cursor")
        if cursor in seen:
            raise BadAnswer(what, f"the next cursor {cursor!r} came before: the listing does not advance")
        yield from items
        if not cursor or not items:
            return
        seen.add(cursor)


def crawlee_request(req: dict[str, Any]) -> dict[str, Any]:
    """The API's request as crawlee 1.x writes it (its fields in its order, with its defaults; any other field
    kept, named as crawlee would)."""
    camel = {v: k for k, v in SNAKE.items()}
    value = {camel.get(str(k), str(k)): v for k, v in req.items() if k not in ("id", "lockExpiresAt")}
    out = {field: value.pop(field, default) for field, default in CRAWLEE_FIELDS.items()}
    if out["handled_at"] is not None:
        out["handled_at"] = crawlee_time(out["handled_at"])
    return {**out, **value}


def export_queue(
    client: httpx.Client,
    target: str,
    root: Path,
    *,
    progress: Callable[[str, int | None, int], Progress] = Progress,
) -> tuple[Path, int, int]:
    """TARGET into ``root/request_queues/<name>/`` and its order into ``root/key_value_stores/default/``: its
    requests, how many, how many handled."""
    path = api_path(COLLECTION, target)
    info = resource(request(client, "GET", path, f"queue {target}"), f"queue {target}")
    name = info.get("name") or info["id"]
    if not isinstance(name, str) or not rules.STORE_NAME.ok(name) or not rules.STORE_ID.ok(info["id"]):
        raise ClientError(f"queue {target}: the server named it {name!r}, not a queue name: nothing was written")
    head = data(request(client, "GET", path + "/head", f"queue {target}", params={"limit": HEAD_LIMIT}),
                f"queue {target}")
    with parsing(f"queue {target}"):
        first = [i["uniqueKey"] for i in head["items"]]
    kvs = export_folder(root, "key_value_stores", DEFAULT_STORE)  # (checked before anything is written)
    partial, final = new_folder(root / SUBDIR, name)
    bar = progress(name, None, 0)
    pending: list[str] = []
    handled: list[str] = []
    try:
        for req in _pages(client, target):
            if not isinstance(req.get("uniqueKey"), str):
                raise BadAnswer(f"listing {target}", f"a request's uniqueKey is {req.get('uniqueKey')!r}")
            with parsing(f"listing {target}"):
                text = crawlee_json(crawlee_request(req))
            (partial / file_name(req["uniqueKey"])).write_text(text, "utf-8")
            (handled if req.get("handledAt") else pending).append(req["uniqueKey"])
            bar.advance(len(text))
    finally:
        bar.close()
    listed = set(pending)
    order = list(dict.fromkeys([*(k for k in first if k in listed), *pending]))  # (each key once, first place)
    state = {"sequence_counter": len(order), "forefront_sequence_counter": 0, "forefront_requests": {},
             "regular_requests": {k: i for i, k in enumerate(order)}, "in_progress_requests": [],
             "handled_requests": handled}
    key = f"{STATE_PREFIX}{info['id']}"
    state_bytes = crawlee_json(state).encode()
    write(kvs / key, state_bytes)
    write(kvs / f"{key}.{METADATA}", crawlee_json(
        {"key": key, "content_type": "application/json; charset=utf-8", "size": len(state_bytes)}).encode())
    with parsing(f"queue {target}"):  # (its times)
        meta = {"id": info["id"], "name": info.get("name"),
                "accessed_at": crawlee_time(info.get("accessedAt")), "created_at": crawlee_time(info.get("createdAt")),
                "modified_at": crawlee_time(info.get("modifiedAt")), "had_multiple_clients": False,
                "handled_request_count": len(handled), "pending_request_count": len(pending),
                "total_request_count": len(handled) + len(pending)}
    write(partial / METADATA, crawlee_json(meta).encode())
    put_in_place(partial, final)
    return final, len(handled) + len(pending), len(handled)
