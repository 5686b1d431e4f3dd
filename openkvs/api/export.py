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
no longer the items, so the selection is scanned once for its columns (memory still flat, time linear).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from openkvs import access
from openkvs.access import DATASETS, Access, Signed
from openkvs.api.common import public_base, state
from openkvs.api.download import ArchiveResponse, _prepend, readahead
from openkvs.datasets import formats, pipeline, query
from openkvs.ratelimit import client_ip
from openkvs.storage.datasets import BLOCK, ItemSnapshot, selection_blocks

NO_LIMIT = 999_999_999_999  # X-Apify-Pagination-Limit without a limit: what the clients expect


def select(total: int, offset: int, limit: int | None, desc: bool) -> tuple[int, int, int]:
    """(lo, hi, count): the index range the query selects from ``total`` items and how many that is."""
    avail = max(0, total - offset)
    count = min(limit, avail) if limit else avail
    if desc:
        return total - offset - count, total - offset, count
    return offset, offset + count, count


async def export_items(request: Request) -> Response:
    found = await access.decide(request, DATASETS, request.path_params["dataset_id"], Access.READ, Signed.CONTENT)
    store = found.store
    q = query.parse_items_query(request.query_params, store.schema)
    st = state(request)
    user = found.user
    who = f"user:{user.id}" if user is not None else "ip:" + client_ip(request.scope, st.trusted_proxies)
    renderer = formats.renderer(
        q, label=store.name or store.id, dataset_id=store.id, public_url=public_base(request)
    )
    stack = AsyncExitStack()
    try:
        stack.enter_context(st.downloads.take(who))  # before the snapshot: that is what the cap protects
        snap: ItemSnapshot = await stack.enter_async_context(st.storage.datasets.snapshot(store.id))
        total = snap.info.item_count
        lo, hi, count = select(total, q.offset, q.limit, q.desc)
        columns = await table_columns(snap, q.shape, lo, hi) if renderer.tabular else None
        headers = {
            "Content-Type": renderer.content_type,
            "X-Content-Type-Options": "nosniff",
            "X-Apify-Pagination-Offset": str(q.offset),
            "X-Apify-Pagination-Limit": str(q.limit or NO_LIMIT),
            "X-Apify-Pagination-Count": str(count),
            "X-Apify-Pagination-Total": str(total),
            "X-Apify-Pagination-Desc": "true" if q.desc else "false",
        }
        headers.update(renderer.extra_headers)  # html: Content-Security-Policy: sandbox
        if q.format.attachment:
            headers["Content-Disposition"] = f'attachment; filename="{store.name or store.id}.{renderer.filename_ext}"'
        if request.method == "HEAD":
            await stack.aclose()
            response = Response(None, 200, headers)
            del response.headers["content-length"]  # streamed bodies have none; HEAD says the same
            return response
        st.storage.count_access(store.id, reads=count)
        raw = q.shape.identity and q.format.name in ("json", "jsonl")
        chunks = _render(snap, renderer, q.shape, columns, lo, hi, q.desc, raw)
        try:  # the first bytes before the response starts: a failure there is still a clean error answer
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return ArchiveResponse(200, headers, _prepend(first, chunks), stack, st.settings.download_send_timeout, store.id)
    except BaseException:
        await stack.aclose()
        raise


async def table_columns(snap: ItemSnapshot, shape: pipeline.Shape, lo: int, hi: int) -> list[str]:
    """The columns of a tabular export of items ``[lo, hi)`` (contract 6.2). From the path index where it can
    tell (``pipeline.columns``), else by a scan of the selection. Raises the 400 no-columns error."""
    cols = None
    if not shape.unwind:
        paths: list[Any] = []
        whole = selection_blocks(lo, hi)
        await _scan_paths(snap, lo, whole[0] * BLOCK if whole else hi, paths)
        if whole:
            for _, block in await snap.block_paths(*whole):
                pipeline.merge_paths(paths, block)
            await _scan_paths(snap, (whole[1] + 1) * BLOCK, hi, paths)
        cols = pipeline.columns(shape, paths)
    if cols is None:
        collector = pipeline.ColumnCollector(shape)
        async for batch in snap.items(lo, hi):
            await anyio.to_thread.run_sync(_collect, collector, batch)
        cols = collector.columns()
    return cols


def _collect(collector: Any, batch: list[bytes]) -> None:
    collector.add_items([json.loads(raw) for raw in batch])


async def _scan_paths(snap: ItemSnapshot, lo: int, hi: int, paths: list[Any]) -> None:
    """Merge the paths of items ``[lo, hi)`` into ``paths`` (a partial block at an end of the selection)."""
    async for batch in snap.items(lo, hi):
        await anyio.to_thread.run_sync(_merge_items, paths, batch)


def _merge_items(paths: list[Any], batch: list[bytes]) -> None:
    pipeline.block_paths([json.loads(raw) for raw in batch], paths)


async def _render(
    snap: ItemSnapshot,
    renderer: Any,
    shape: pipeline.Shape,
    columns: list[str] | None,
    lo: int,
    hi: int,
    desc: bool,
    raw: bool,
) -> AsyncIterator[bytes]:
    """The body: the renderer's start, each batch of items (the next read while this one is rendered and sent),
    its end. ``raw``: JSON formats of unchanged items copy the stored bytes (``raw_json``), without parsing them."""
    yield renderer.start(columns)
    async for batch in readahead(snap.items(lo, hi, desc=desc)):
        if raw:
            piece = renderer.raw_json(batch)
        else:
            piece = await anyio.to_thread.run_sync(_rows, renderer, shape, batch)
        if piece:
            yield piece
    yield renderer.end()


def _rows(renderer: Any, shape: pipeline.Shape, batch: list[bytes]) -> bytes:
    rows: list[dict[str, Any]] = []
    for raw in batch:
        rows += shape.rows(json.loads(raw))
    return renderer.rows(rows)  # type: ignore[no-any-return]
