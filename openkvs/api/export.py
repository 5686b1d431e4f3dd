"""GET|HEAD /v2/datasets/{datasetId}/items: the items of a dataset in one of seven formats, streamed
(API-datasets.md sections 4.5-7).

Everything that can fail is decided before the first byte: access, the query, the snapshot, the selection, the
columns of a tabular format. The items are read from one snapshot held for the whole response (``Total`` fixed at
arrival; later pushes never appear; a delete meanwhile does not cut it short), in batches, each rendered in a worker
thread while the previous one is sent; the server's ``send`` waits while the client's socket is full, so memory stays
flat. After the first byte an error aborts the connection (never a complete-looking document); a client that goes
away cancels the work; one that reads nothing for ``download_send_timeout`` is cut off. Exports take a download
slot, like ZIP downloads (``max_downloads``, ``max_downloads_per_user``).

Offsets are seeks: the selection is the index range ``[lo, hi)`` of the snapshot, read ascending or descending.
The header of a tabular export comes from the path index kept at push time (storage/datasets.py): the whole
blocks inside the selection from the index, the partial blocks at its ends scanned. With ``unwind`` the rows are
no longer the items, so the selection is scanned once for its columns (memory still flat, time linear): at most
``items.MAX_HEADER_SCAN_CELLS`` cells, else a 400 before the first byte, and a client that goes away meanwhile
stops it (``_unless_client_leaves``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from openkvs import access, compress
from openkvs.access import DATASETS, Access, Signed
from openkvs.api import items
from openkvs.api.common import public_base, slot_holder, state
from openkvs.api.download import ArchiveResponse, _prepend
from openkvs.datasets import formats, query
from openkvs.storage.datasets import ItemSnapshot

T = TypeVar("T")

NO_LIMIT = 999_999_999_999  # X-Apify-Pagination-Limit without a limit: what the clients expect


async def export_items(request: Request) -> Response:
    found = await access.decide(request, DATASETS, request.path_params["dataset_id"], Access.READ, Signed.CONTENT)
    store = found.store
    q = query.parse_items_query(request.query_params, store.schema)
    st = state(request)
    renderer = formats.renderer(q, label=store.name or store.id, dataset_id=store.id, public_url=public_base(request))
    stack = AsyncExitStack()
    try:
        # before the snapshot: that is what the cap protects
        stack.enter_context(st.downloads.take(slot_holder(request, found.user)))
        snap: ItemSnapshot = await stack.enter_async_context(st.storage.datasets.snapshot(store.id))
        total = snap.info.item_count
        lo, hi, count = items.select(total, q.offset, q.limit, q.desc)
        columns = None
        if renderer.tabular:
            columns = await _unless_client_leaves(request, lambda: items.table_columns(snap, q.shape, lo, hi))
        headers = {
            "Content-Type": renderer.content_type,
            "X-Content-Type-Options": "nosniff",
            "X-Apify-Pagination-Offset": str(q.offset),
            "X-Apify-Pagination-Limit": str(q.limit or NO_LIMIT),
            "X-Apify-Pagination-Count": str(count),
            "X-Apify-Pagination-Total": str(total),
            "X-Apify-Pagination-Desc": "true" if q.desc else "false",
        }
        headers.update(renderer.extra_headers)  # Content-Security-Policy: sandbox
        encoding = None
        if q.format.name != "xlsx":  # (a ZIP already: compressing it again gains nothing)
            headers["Vary"] = "Accept-Encoding"
            encoding = compress.choose(request.headers.get("accept-encoding"))
            if encoding is not None:
                headers["Content-Encoding"] = encoding
        if q.format.attachment:
            headers["Content-Disposition"] = f'attachment; filename="{store.name or store.id}.{renderer.filename_ext}"'
        if request.method == "HEAD":
            await stack.aclose()
            return _chunked(Response(None, 200, headers))  # the GET's headers, without a body
        st.storage.count_access(store.id, reads=count)
        raw = q.shape.identity and q.format.name in ("json", "jsonl")
        chunks = items.render(snap, renderer, q.shape, columns, lo, hi, q.desc, raw)
        if encoding is not None:
            chunks = compress.compress(chunks, encoding)
        try:  # the first bytes before the response starts: a failure there is still a clean error answer
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        timeout = st.settings.download_send_timeout
        return _chunked(ArchiveResponse(200, headers, _prepend(first, chunks), stack, timeout, store.id))
    except BaseException:
        await stack.aclose()
        raise


async def _unless_client_leaves(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` (a header scan before the response starts), cancelled when the client goes away meanwhile: then
    ClientDisconnect, which ends the request without an answer (app.py), the download slot and snapshot freed."""
    done: list[T] = []
    failed: list[Exception] = []

    async def run() -> None:
        try:
            done.append(await work())
        except Exception as exc:  # raised below as it is, not as a task group's ExceptionGroup
            failed.append(exc)
        tg.cancel_scope.cancel()

    async def watch() -> None:
        try:  # a GET's body (none) comes first, then nothing until the client disconnects
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:
            failed.append(exc)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(watch)
    if failed:
        raise failed[0]
    if not done:
        raise ClientDisconnect()
    return done[0]


def _chunked(response: Response) -> Response:
    """Without the ``Content-Length: 0`` Starlette gives a response whose body it doesn't hold: an export's length
    is not known before it ends, and it says so, chunked transfer, for GET and HEAD alike (the server added it to a
    GET's head only, so a HEAD had no framing header where its GET had one; RFC 9112 6.1 lets a HEAD's say what the
    GET's body would have; the server writes no body for a HEAD, chunked or not)."""
    response.raw_headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    response.raw_headers.append((b"transfer-encoding", b"chunked"))
    return response
