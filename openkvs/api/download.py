"""GET|HEAD /v2/key-value-stores/{storeId}/records: every selected record in one ZIP archive (API.md section 8).

Everything that can fail is checked before the response starts: access, the selection, the snapshot, the exact
size and the range. After the first byte an error can only abort the connection (the client then sees fewer bytes
than Content-Length), never a short archive that looks complete.

The archive is read from one storage snapshot held open for the whole response, so concurrent writes don't
change the bytes, and a resumed download (Range + If-Range with the ETag) continues the very same archive as long
as the store's generation has not moved.

A client that stops reading would hold that snapshot forever: each piece must be sent within
``download_send_timeout`` seconds or the connection is aborted, and ``download_slots`` caps how many run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from openkvs import access, codec, errors, zipwriter
from openkvs.access import STORES, Access, Signed
from openkvs.api import safenames
from openkvs.api.common import query_bool, select_range, selection, slot_holder, state
from openkvs.cycle import BUFFERS, Cycle
from openkvs.storage.base import RecordMeta, Snapshot, StorageError
from openkvs.storage.datasets import Piece

ARCHIVE_FORMAT = 1  # bump when the bytes of an archive for the same records would change
T = TypeVar("T")
log = logging.getLogger("openkvs.download")
_UNSAFE_FILENAME = re.compile(r'[^A-Za-z0-9._()!\'-]')


def archive_etag(
    store_id: str, generation: int, prefix: str | None, exact: str | None, safe_names: bool = False
) -> str:
    """Strong: the same store generation, selection and naming always give the same bytes."""
    ident = f"{ARCHIVE_FORMAT}\0{store_id}\0{generation}\0{prefix or ''}\0{exact if exact is not None else ''}"
    if safe_names:
        ident += "\0safeNames"
    return '"' + hashlib.sha256(ident.encode()).hexdigest()[:32] + '"'


async def download_records(request: Request) -> Response:
    found = await access.decide(request, STORES, request.path_params["store_id"], Access.READ, Signed.CONTENT)
    store = found.store
    sel = selection(request, store)
    safe = query_bool(request, "safeNames")  # entry names that extract everywhere, and a manifest (safenames.py)
    st = state(request)
    storage = st.storage
    stack = AsyncExitStack()
    try:
        # before the snapshot: that is what the cap protects
        stack.enter_context(st.downloads.take(slot_holder(request, found.user)))
        snap: Snapshot = await stack.enter_async_context(storage.snapshot(store.id, sel))
        plan = await safenames.plan(snap) if safe else None
        size = plan.size if plan else await _archive_size(snap)
        etag = archive_etag(store.id, snap.generation, sel.prefix, sel.exact, safe)
        filename = _UNSAFE_FILENAME.sub("_", store.name or store.id) + ".zip"
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-cache",
        }
        start, end, status = select_range(request, etag, size, headers)
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD" or start == end:
            await stack.aclose()
            return Response(b"", status, headers)
        storage.count_access(store.id, reads=1)
        chunks = _archive_bytes(snap, start, end, plan, total=size)
        try:  # the first bytes before the response starts: a missing file there is still a clean error answer
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return ArchiveResponse(
            status, headers, _prepend(first, chunks), stack, st.settings.download_send_timeout, store.id
        )
    except BaseException:
        await stack.aclose()
        raise


async def _archive_size(snap: Snapshot) -> int:
    t = snap.totals
    size = zipwriter.archive_size_from_totals(t.count, t.key_bytes, t.decoded_bytes, t.big_count)
    if size is not None:
        return size
    # Past 4 GiB the size depends on which offsets need ZIP64: one pass over the records' metadata.
    counter = zipwriter.SizeCounter()
    async for batch in snap.records():
        for entry in batch:
            counter.add(entry)
    return counter.total()


def _archive_bytes(
    snap: Snapshot, start: int, end: int, plan: safenames.Plan | None = None, *, total: int | None = None
) -> AsyncIterator[bytes]:
    # ``total``: the Content-Length announced (zipwriter.iter_range fails an archive that turns out longer)
    def batches() -> AsyncIterator[Sequence[RecordMeta]]:
        # The next batch is fetched while this one is turned into archive bytes and sent.
        return readahead(snap.records())

    def listing() -> AsyncIterator[Sequence[RecordMeta]]:
        return readahead(snap.zip_entries())  # the central directory needs no record bytes

    def read(entry: RecordMeta, lo: int, hi: int) -> AsyncIterator[bytes]:
        if entry.content_encoding is None:
            return snap.read_blob(entry, lo, hi)
        return codec.slice_stream(codec.decode_stream(snap.read_blob(entry), entry.content_encoding), lo, hi)

    inline = snap.held_bytes
    if plan is None:  # headers the storage kept from write time: batches of small records come laid out already
        kept_local, kept_central = snap.kept_local(), snap.kept_central()
        if kept_local is not None and kept_central is not None:  # (iter_range calls each function once)
            local, central = kept_local, kept_central
            return readahead(zipwriter.iter_range(
                lambda: readahead(local), start, end, read, inline=inline, listing=lambda: readahead(central),
                total=total,
            ))
    if plan is not None:  # the same records under their safe names, and the manifest last
        named, named_listing, named_read = plan.wrap(batches), plan.wrap(listing), plan.read(read)
        return readahead(
            zipwriter.iter_range(
                named, start, end, named_read, inline=plan.inline(inline), listing=named_listing, total=total
            )
        )
    # held_bytes: small records the batch brought along are copied without an async read each.
    return readahead(zipwriter.iter_range(batches, start, end, read, inline=inline, listing=listing, total=total))


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def readahead(chunks: AsyncIterator[T]) -> AsyncIterator[T]:
    """Produce the next item while the current one is being used (a chunk sent, a batch of records laid out), so
    disk or database reads and socket writes overlap instead of taking turns."""
    it = chunks.__aiter__()
    pending = asyncio.ensure_future(anext(it, None))
    try:
        while (chunk := await pending) is not None:
            pending = asyncio.ensure_future(anext(it, None))
            yield chunk
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


class SendTimeout(Exception):
    """The client read nothing for ``download_send_timeout`` seconds, and the server's transport could not be
    reached to abort the connection: raised so that the server drops it."""


def _abort_connection(scope: Scope) -> None:
    """Drop the connection at once, unsent bytes and all. A graceful close would wait for the client to read what
    is still buffered, i.e. forever (and an HTTP/1.0 client would take it for the body's end: Cycle.abort). The
    transport is reachable through uvicorn's own ``send`` (a method of its request cycle), which ApiMiddleware
    keeps in the scope."""
    raw_send = scope.get("openkvs.raw_send")
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        raise SendTimeout()
    if isinstance(cycle, Cycle):
        cycle.abort()
    else:
        transport.abort()


# The most bytes handed to one send, each under its own ``download_send_timeout``: the timeout is meant for a client
# that reads nothing, so a piece must go out in that time at any rate worth serving (1 MiB in 60 s: 17 KiB/s).
# ZIP pieces are at most this already (READ_CHUNK); an export's rendered batches may be several MiB.
SEND_PIECE = 1024 * 1024


def _pieces(chunk: Piece) -> Sequence[Piece | memoryview]:
    """``chunk`` in pieces of at most SEND_PIECE: views of it, not copies (the server's send copies a piece once
    more anyway: into its chunk framing, or its write buffer). A list of buffers (storage's rows, or the csv lines
    of each: those may be many times their rows, 8 MB for a piece of sparse items under 2,000 columns) in lists of
    at most SEND_PIECE bytes, a buffer cut by views where one ends."""
    if isinstance(chunk, list):
        return _runs(chunk)
    if len(chunk) <= SEND_PIECE:
        return (chunk,)
    view = memoryview(chunk)
    return [view[i : i + SEND_PIECE] for i in range(0, len(chunk), SEND_PIECE)]


def _runs(buffers: list[bytes | memoryview]) -> list[Piece]:
    """``buffers`` as lists of at most SEND_PIECE bytes each, in order (``_pieces``)."""
    runs: list[Piece] = []
    run: list[bytes | memoryview] = []
    room = SEND_PIECE
    for buf in buffers:
        while len(buf) > room:
            view = memoryview(buf)
            run.append(view[:room])
            runs.append(run)
            buf, run, room = view[room:], [], SEND_PIECE
        if buf:
            run.append(buf)
            room -= len(buf)
    if run:
        runs.append(run)
    return runs


class ArchiveResponse(Response):
    """Streams the archive and closes the snapshot when done, when the client goes away, when a piece can't be
    sent within ``send_timeout`` seconds (then the connection is aborted), or on error."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        chunks: AsyncIterator[Piece],
        stack: AsyncExitStack,
        send_timeout: float,
        store_id: str,
    ):
        super().__init__(None, status, headers)
        self._chunks = chunks
        self._stack = stack
        self._send_timeout = send_timeout
        self._store_id = store_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        async with self._stack:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                timeout = self._send_timeout
                buffered = BUFFERS in scope.get("extensions", ())  # (else a list of buffers goes joined)
                try:
                    # A server's send returns once the bytes before it are handed to the kernel: a client that
                    # doesn't read makes it wait. Each send is at most SEND_PIECE bytes (see _pieces).
                    with anyio.fail_after(timeout):
                        await send(
                            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                        )
                    async for chunk in self._chunks:
                        if not chunk:  # (an export's empty prefix or suffix: a message of its own sent the head
                            continue  # alone, a TCP segment more; server.py holds the head until the first bytes)
                        for piece in _pieces(chunk):
                            message: dict[str, object] = {"type": "http.response.body", "more_body": True}
                            if not isinstance(piece, list):
                                message["body"] = piece
                            elif buffered:
                                message["body"], message[BUFFERS] = b"", piece
                            else:
                                message["body"] = b"".join(piece)
                            with anyio.fail_after(timeout):
                                await send(message)
                    # The slot and the snapshot are let go before the last message: a client sees the response
                    # end only with it, so its next download never finds its own finished one still counted.
                    await self._stack.aclose()
                    with anyio.fail_after(timeout):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                except StorageError as exc:  # after the first byte: the transfer is cut, never ended short; one
                    # log line (damage: the request's, with an id, as before the first byte), not the trace of an
                    # exception group
                    if not isinstance(errors.from_storage_error(exc, scope["method"], scope["path"]),
                                      errors.StorageDamaged):
                        log.warning("download of %s aborted after its first byte: %s", self._store_id, exc)
                    _abort_connection(scope)
                except errors.ApiError as exc:  # the request's own fault, found after the first byte (an export's
                    # flatten cap in a later row): the transfer is cut, as any failure after it; not a server error
                    if exc.status >= 500:
                        raise
                    log.warning("download of %s aborted after its first byte: %s", self._store_id, exc.message)
                    _abort_connection(scope)
                except TimeoutError:
                    log.warning(
                        "download of store %s aborted: the client read nothing for %s s", self._store_id, timeout
                    )
                    _abort_connection(scope)
                tg.cancel_scope.cancel()
