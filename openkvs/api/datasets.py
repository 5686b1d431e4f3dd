"""Dataset endpoints (API-datasets.md): the dataset object, push items (4.4) and statistics (4.6). The handlers
every kind shares (list, get or create, get, update, delete, signing key, grants) are ``DATASETS_API``
(api/resources.py); the export of items (4.5) is api/export.py. ``routes()``: all of them, for app.py."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openkvs import access, console, dataset_schema, errors, signing
from openkvs.access import DATASETS, Access
from openkvs.api import export, items
from openkvs.api.common import (
    DATASET_PUSH,
    fast_json_response,
    json_response,
    public_base,
    read_json_bytes,
    slot_holder,
    state,
    to_json,
)
from openkvs.api.dispatch import methods
from openkvs.api.resources import ResourceApi, titled_fields
from openkvs.datasets import pipeline
from openkvs.storage.base import Store
from openkvs.storage.datasets import DatasetInfo

PUBLIC_URL_DAYS = 14
_STATS_PIECE = 500  # properties of the statistics encoded by one json.dumps call (about 30 kB, well under 1 ms)
_JSON_TYPES = ("application/json",)


# -- the dataset object ------------------------------------------------------------------------------------------


def items_public_url(request: Request, store: Store) -> str:
    expires = int(time.time() * 1000) + PUBLIC_URL_DAYS * 86_400_000
    sig = signing.content_signature(store.url_signing_secret_key, store.id, expires)
    return f"{public_base(request)}/v2/datasets/{store.id}/items?signature={sig}"


async def describe(request: Request, resources: Sequence[tuple[Store, Access]], listing: bool) -> list[dict[str, Any]]:
    """The wire forms of a page of datasets: their counters asked of storage once for the page (in a list without
    ``fields``, which a list item does not show: one dataset's may be megabytes, 2,000 keys of any length)."""
    infos = await state(request).storage.datasets.info([store.id for store, _ in resources], fields=not listing)
    if listing:
        return [dataset_list_item(store, infos[store.id]) for store, _ in resources]
    return [dataset_json(request, store, right, infos[store.id]) for store, right in resources]


DATASETS_API = ResourceApi(
    DATASETS,
    "/v2/datasets",
    describe,
    "Dataset with this name already exists.",
    takes_schema=False,  # its own, create_schema's: a PUT ignores it (4.3)
    titled=True,
    create_schema=dataset_schema.validate_dataset_schema_off_loop,
    respond=fast_json_response,
)


def dataset_json(request: Request, store: Store, right: Access, info: DatasetInfo) -> dict[str, Any]:
    """The dataset object of contract 4.3; its signing key only for who may write."""
    base = public_base(request)
    data: dict[str, Any] = {
        **titled_fields(store, listed=False),
        "itemCount": info.item_count,
        "cleanItemCount": info.clean_item_count,
        "fields": info.fields,
        "schema": store.schema,
        "actId": None,
        "actRunId": None,
        "consoleUrl": console.url_of(base, "datasets", store.id),
        "itemsPublicUrl": items_public_url(request, store),
        "generalAccess": store.general_access,
        "stats": {
            "readCount": store.stats.read_count,
            "writeCount": store.stats.write_count,
            "storageBytes": info.bytes,
        },
    }
    if right >= Access.WRITE:
        data["urlSigningSecretKey"] = store.url_signing_secret_key
    return data


def dataset_list_item(store: Store, info: DatasetInfo) -> dict[str, Any]:
    """One dataset in the list of 4.1 (``name`` "" for an unnamed one: the Python client requires a string)."""
    return {
        **titled_fields(store, listed=True),
        "itemCount": info.item_count,
        "cleanItemCount": info.clean_item_count,
        "actId": None,
        "actRunId": None,
        "generalAccess": store.general_access,
        "stats": {
            "readCount": store.stats.read_count,
            "writeCount": store.stats.write_count,
            "inflatedBytes": info.bytes,
        },
    }


# -- push --------------------------------------------------------------------------------------------------------


def check_json_content_type(request: Request) -> None:
    """Contract section 1: absent, or application/json with any parameters."""
    ctype = request.headers.get("content-type")
    if ctype is not None and ctype.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise errors.InvalidContentTypeHeader()


async def push_items(request: Request) -> Response:
    found = await access.decide(request, DATASETS, request.path_params["dataset_id"], Access.WRITE, budget=DATASET_PUSH)
    check_json_content_type(request)
    store = found.store
    raw = await read_json_bytes(request)
    fields_schema = (store.schema or {}).get("fields") if isinstance(store.schema, dict) else None
    push = await anyio.to_thread.run_sync(items.prepare_push_body, raw, fields_schema)
    storage = state(request).storage
    if push.items:
        await storage.datasets.push(store.id, push, items.merge_block)
        storage.count_access(store.id, writes=len(push.items))
    location = f"{public_base(request)}/v2/datasets/{store.id}/items"
    return Response(b"{}", 201, {"Location": location}, media_type="application/json; charset=utf-8")


# -- statistics --------------------------------------------------------------------------------------------------


async def statistics(request: Request) -> Response:
    """Contract 4.6. Everything as large as the schema (one entry per property of ``fields``, and a schema may name
    100,000: nothing but the body's size bounds it) is built and encoded in a worker thread: on the event loop,
    the kept statistics of such a schema held every other request up 2.7 s (BENCHMARKS.md, Issue 13)."""
    found = await access.decide(request, DATASETS, request.path_params["dataset_id"], Access.READ)
    store = found.store
    fields = (store.schema or {}).get("fields") if isinstance(store.schema, dict) else None
    properties = fields.get("properties") if isinstance(fields, dict) else None
    if not isinstance(properties, dict) or not properties:
        return json_response({"fieldStatistics": None})
    st = state(request)
    count, kept = await st.storage.datasets.field_stats(store.id)
    if kept is not None or not count:  # kept up to date by every push
        result = await anyio.to_thread.run_sync(lambda: pipeline.FieldStats(store.schema, kept).result())
        return _stats_response(await anyio.to_thread.run_sync(_stats_body, result))
    # Items pushed before statistics were kept: one scan of them all (in a worker thread, batch by batch, taking a
    # download slot as an export does), kept for the next calls and the next pushes.
    stats = await anyio.to_thread.run_sync(pipeline.FieldStats, store.schema)
    with st.downloads.take(slot_holder(request, found.user)):
        async with st.storage.datasets.snapshot(store.id) as snap:
            async for batch in snap.items(0, snap.info.item_count, batch=items.EXPORT_BATCH):
                await anyio.to_thread.run_sync(_add_stats, stats, batch)
            scanned = snap.info.item_count
    result = await anyio.to_thread.run_sync(stats.result)
    if result is not None:
        await st.storage.datasets.keep_field_stats(store.id, scanned, result)
    return _stats_response(await anyio.to_thread.run_sync(_stats_body, result))


def _stats_body(result: dict[str, Any] | None) -> bytes:
    """The response's JSON, encoded a few hundred properties at a time: json.dumps holds the GIL for the whole of
    one call, and 100,000 properties in one call (0.45 s) held the event loop's thread off as long."""
    if not result:
        return to_json({"data": {"fieldStatistics": result}})
    entries = list(result.items())
    pieces = [to_json(dict(entries[i : i + _STATS_PIECE]))[1:-1] for i in range(0, len(entries), _STATS_PIECE)]
    return b'{"data":{"fieldStatistics":{' + b",".join(pieces) + b"}}}"


def _stats_response(body: bytes) -> Response:
    return Response(body, media_type="application/json; charset=utf-8")


def _add_stats(stats: Any, batch: list[bytes]) -> None:
    for raw in batch:
        stats.add(json.loads(raw))


def routes() -> list[Route]:
    items_path = "/v2/datasets/{dataset_id}/items"
    return [
        *DATASETS_API.routes(),
        Route(items_path, methods(GET=export.export_items, POST=push_items)),
        Route("/v2/datasets/{dataset_id}/statistics", methods(GET=statistics)),
    ]
