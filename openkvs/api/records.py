"""Keys and records: list keys, and GET / HEAD / PUT / POST / DELETE of one record."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from datetime import datetime
from email.utils import format_datetime
from string import ascii_letters, digits
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from openkvs import access, codec, compress, errors, schema, signing
from openkvs.access import STORES, Access, Decision, Signed
from openkvs.api.common import (
    ApiRequest,
    count_returned,
    declared_length,
    json_response,
    public_base,
    query_bool,
    query_limit,
    query_text,
    raw_headers,
    select_range,
    selection,
    slot_holder,
    state,
    state_of,
)
from openkvs.api.dispatch import Bytes, methods
from openkvs.api.download import ArchiveResponse
from openkvs.storage.base import RecordMeta, Storage, User

# Stored pages can't run scripts as this origin, and browsers must not guess another type (API.md 4.6).
RECORD_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
# The headers every record GET answers with (also a 304), encoded once. (A record stored with a Content-Encoding
# adds "Vary: Accept-Encoding": only its response depends on that request header.)
RECORD_FIXED_HEADERS = {"Accept-Ranges": "bytes", **RECORD_SECURITY_HEADERS}
_RECORD_FIXED_RAW = [(k.lower().encode(), v.encode()) for k, v in RECORD_FIXED_HEADERS.items()]


async def list_keys(request: Request) -> Response:
    found = await access.decide(request, STORES, request.path_params["store_id"], Access.READ, Signed.CONTENT)
    store = found.store
    limit = query_limit(request)
    start = query_text(request, "exclusiveStartKey")
    sel = selection(request, store)
    storage = state(request).storage
    page = await storage.list_keys(store.id, sel, start, limit)
    count_returned(request, storage, store.id, lists=1)
    base = f"{public_base(request)}/v2/key-value-stores/{store.id}/records/"
    secret = store.url_signing_secret_key
    items = [
        {
            "key": item.key,
            "size": item.size,
            "contentType": item.content_type,  # openkvs extension: a listing needs no HEAD per key for it
            "recordPublicUrl": (
                f"{base}{quote_key(item.key)}?signature={signing.record_signature(secret, item.key)}"
            ),
        }
        for item in page.items
    ]
    return json_response(
        {
            "items": items,
            "count": len(items),
            "limit": limit,
            "exclusiveStartKey": start,
            "isTruncated": page.is_truncated,
            "nextExclusiveStartKey": items[-1]["key"] if page.is_truncated and items else None,
        }
    )


@functools.lru_cache(maxsize=4096)
def _http_date(dt: datetime) -> str:
    return format_datetime(dt, usegmt=True)


def _etag(record: RecordMeta, encoded: bool) -> str:
    stamp = int(record.modified_at.timestamp() * 1000)
    tag = f"{record.crc32:08x}-{record.decoded_size:x}-{stamp:x}"
    return f'"{tag}-{record.content_encoding}"' if encoded else f'"{tag}"'


@functools.lru_cache(maxsize=4096)
def _plain_raw(content_type: str, crc32: int, decoded_size: int, modified_at: datetime, length: int,
               ) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a plain GET's 200 of an identity record of ``length`` bytes: _record_headers's, in its
    order, with Content-Length and RECORD_FIXED_HEADERS, encoded as _answer would. The same few hot records are
    read again and again; their headers depend on these fields only."""
    stamp = int(modified_at.timestamp() * 1000)
    return (
        (b"content-type", content_type.encode("latin-1")),
        (b"etag", f'"{crc32:08x}-{decoded_size:x}-{stamp:x}"'.encode()),
        (b"last-modified", _http_date(modified_at).encode()),
        (b"content-length", str(length).encode()),
        *_RECORD_FIXED_RAW,
    )


# What ``quote(text, safe="")`` leaves as it is (urllib's always-safe characters).
_UNRESERVED = frozenset(ascii_letters + digits + "_.-~")


def quote_key(key: str) -> str:
    """A record key as a path segment: ``quote(key, safe="")``, whose work (several Python calls, about as much as
    the rest of a PUT's answer) is skipped for the common key of letters, digits and ``_.-~`` that it keeps."""
    return key if _UNRESERVED.issuperset(key) else quote(key, safe="")


def _path_key(request: Request) -> str:
    """The key as it is in the decoded path. A guard on the route's path parameter: a pattern ending in ``$`` also
    matches before a final newline that ``.*`` doesn't take, so with Starlette's ``path`` convertor ``/records/a%0A``
    would be routed with the key ``a`` and write another record than the one named (app.py's ``key`` convertor
    takes newlines too)."""
    params = request.scope["path_params"]
    key = params["key"]
    path = request.scope["path"]
    store_id = params["store_id"]
    # path[len(head):] with head = "/v2/key-value-stores/" + store_id + "/records/" (21 + 9 characters): the head
    # itself made only when the key differs (a path under a root_path, or a bad key)
    if path[30 + len(store_id):] != key and path.startswith(f"/v2/key-value-stores/{store_id}/records/"):
        raise errors.InvalidRecordKey()
    return key


# (enum members as constants: see access._ID)
_READ, _WRITE, _SIGNED_RECORD = Access.READ, Access.WRITE, Signed.RECORD


async def record_endpoint(request: Request) -> Response | Bytes:
    key = _path_key(request)
    store_id = request.scope["path_params"]["store_id"]
    method = request.scope["method"]
    if method in ("GET", "HEAD"):
        # The record comes in the same query as the store when the caller may read it (not through a signature).
        # (a GET comes through record_methods._get, a HEAD here)
        found = await access.decide(request, STORES, store_id, _READ, _SIGNED_RECORD, key=key, fetch=True)
        return await _get_record(request, found, key)
    found = await access.decide(request, STORES, store_id, _WRITE, key=key)
    if method == "DELETE":
        storage = state(request).storage
        await storage.delete_record(found.store.id, key)
        storage.count_access(found.store.id, deletes=1)
        return Response(status_code=204)
    return await _put_record(request, found.store, key)


class record_methods(methods):
    """The record route's ``methods``: a GET answered in one coroutine of its own (``methods.__call__``'s and
    ``record_endpoint``'s steps written out: each coroutine made and torn down costs about as much as a dozen
    lines of Python, and this is the most common request); any other method as ``methods`` answers it."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        if scope["method"] == "GET":
            return self._get(scope, receive, send)
        return methods.__call__(self, scope, receive, send)

    async def _get(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = ApiRequest(scope, receive)
        key = _path_key(request)
        found = await access.decide(request, STORES, scope["path_params"]["store_id"], _READ, _SIGNED_RECORD,
                                    key=key, fetch=True)
        record = found.record
        response: Response | Bytes
        if record is not None and found.record_read:  # read with the decision: _get_record's first steps
            storage = scope["state"]["openkvs"].storage
            storage.count_access(found.store.id, reads=1)
            response = _plain(request, storage, record) or await _record_response(
                request, storage, record, key, found.user
            )
        else:
            response = await _get_record(request, found, key)
        if type(response) is Bytes:  # (as methods.__call__ sends it)
            await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
            await send({"type": "http.response.body", "body": response.body})
        else:
            await response.__call__(scope, receive, send)


def _record_headers(record: RecordMeta, etag: str) -> dict[str, str]:
    """The headers of every record response but a 304's, before those of encoding, range and disposition (and
    RECORD_FIXED_HEADERS, which _answer adds)."""
    return {"Content-Type": record.content_type, "ETag": etag, "Last-Modified": _http_date(record.modified_at)}


def _answer(status: int, headers: dict[str, str], body: bytes) -> Bytes:
    """A record GET's response when its body is in memory (a small record, a HEAD, a 304): the given headers plus
    RECORD_FIXED_HEADERS."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw += _RECORD_FIXED_RAW
    return Bytes(status, raw, body)


async def _get_record(request: Request, found: Decision, key: str) -> Response | Bytes:
    storage = state_of(request.scope).storage
    store_id = found.store.id
    if found.record_read:
        record = found.record
    else:
        record = await storage.get_record(store_id, key)  # read access through a signature: decided, now read
    if record is None:
        raise errors.RecordNotFound()
    count_returned(request, storage, store_id, reads=1)
    return _plain(request, storage, record) or await _record_response(request, storage, record, key, found.user)


def _plain(request: Request, storage: Storage, record: RecordMeta) -> Bytes | None:
    """The most common request of all: a plain GET of a small identity record (no range, no condition, no
    attachment), answered with the bytes that came with the lookup. None for anything else."""
    scope = request.scope
    if record.content_encoding is None and scope["method"] == "GET":
        held = storage.held_bytes(record)
        sent = raw_headers(request)
        if held is not None and b"range" not in sent and b"if-none-match" not in sent and (
            not scope["query_string"] or "attachment" not in request.query_params
        ):
            return Bytes(200, list(_plain_raw(record.content_type, record.crc32, record.decoded_size,
                                              record.modified_at, len(held))), held)
    return None


async def _record_response(
    request: Request, storage: Storage, record: RecordMeta, key: str, user: User | None
) -> Response | Bytes:
    """A record's answer but ``_plain``'s: encodings, conditions, ranges, attachments, HEAD, streaming. ``user``:
    the caller (None: a signature or general access), whose download slot a long decode takes."""
    encoded = record.content_encoding is not None and compress.accepts(
        request.headers.get("accept-encoding"), record.content_encoding
    )
    size = record.size if encoded or record.content_encoding is None else record.decoded_size
    etag = _etag(record, encoded)
    headers = _record_headers(record, etag)
    if record.content_encoding is not None:
        headers["Vary"] = "Accept-Encoding"
    if encoded:
        headers["Content-Encoding"] = record.content_encoding  # type: ignore[assignment]
    if query_bool(request, "attachment"):
        headers["Content-Disposition"] = f'attachment; filename="{key}"'
    if_none_match = request.headers.get("if-none-match")
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    if if_none_match and (
        if_none_match.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    ):
        del headers["Content-Type"]
        return _answer(304, headers, b"")
    start, end, status = select_range(request, etag, size, headers)
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD" or start == end:
        return _answer(status, headers, b"")
    held = storage.held_bytes(record) if encoded or record.content_encoding is None else None
    if held is not None:  # a small record came with the lookup: no read, no streaming machinery
        return _answer(status, headers, held[start:end] if end - start < len(held) else held)
    # Read the first piece before the response starts: if the database is unavailable this is still a clean 503
    # (after the headers an error can only cut the connection). A record of up to one piece is then fully read.
    # A decoded range that starts past DECODE_SKIP_FREE holds a download slot while it streams (see _record_bytes),
    # so it is sent as a download is: a client that reads nothing for download_send_timeout is cut off and the slot
    # freed, where a StreamingResponse held it for as long as the connection stayed open.
    slot: AsyncExitStack | None = None  # (made only then: the other record GETs pay nothing for it)
    if record.content_encoding is not None and not encoded and start > DECODE_SKIP_FREE:
        slot = AsyncExitStack()
        slot.enter_context(state(request).downloads.take(slot_holder(request, user)))
    body = _record_bytes(request, record, encoded, start, end)
    try:
        first = await anext(body, b"")
    except BaseException:
        await body.aclose()
        if slot is not None:
            await slot.aclose()
        raise
    if len(first) == end - start:  # the whole body in one piece: a plain response, no streaming machinery
        await body.aclose()
        if slot is not None:
            await slot.aclose()
        return _answer(status, headers, first)
    if slot is not None:
        slot.push_async_callback(body.aclose)
        timeout = state(request).settings.download_send_timeout
        rest = _prepend(first, body)
        store_id = request.path_params.get("store_id", "")
        return ArchiveResponse(status, {**headers, **RECORD_FIXED_HEADERS}, rest, slot, timeout, store_id)
    return StreamingResponse(_prepend(first, body), status, {**headers, **RECORD_FIXED_HEADERS})


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


# A decoded range that starts past this many bytes takes a download slot while it streams (see _record_bytes).
DECODE_SKIP_FREE = 16 * 1024 * 1024


async def _record_bytes(
    request: Request, record: RecordMeta, encoded: bool, start: int, end: int
) -> AsyncGenerator[bytes, None]:
    storage = state(request).storage
    if encoded or record.content_encoding is None:
        async for chunk in storage.read_blob(record, start, end):
            yield chunk
        return
    # Decoded on the fly for a client that doesn't take the stored encoding: a range means decode and skip, work
    # the server does for bytes nobody reads. Compressed a thousandfold (gzip's most), a 1 MiB record decodes to
    # 1 GiB: "bytes=-1" cost a second of CPU for one byte, as often as it was asked, by anyone who may read it. So
    # a range that skips more than DECODE_SKIP_FREE holds a download slot as it streams (_record_response takes
    # it), as a ZIP does: at most max_downloads_per_user at once per caller and max_downloads in all, else 429
    # before the first byte.
    decoded = codec.decode_stream(storage.read_blob(record), record.content_encoding)
    async for chunk in codec.slice_stream(decoded, start, end):
        yield chunk


# Decision (the contract is silent): a record's Content-Type, kept and listed with it, at most this many characters,
# else 400. Only the request head bounded it (64 KiB): a store of 1,000 one-byte records with 60,000-character types
# made each key listing a 60 MB page, and 20 listings at once took the server from 71 MB to 2.3 GB.
CONTENT_TYPE_MAX = 1024


async def _put_record(request: Request, store, key: str) -> Bytes:  # type: ignore[no-untyped-def]
    st = state(request)
    content_type = request.headers.get("content-type") or "application/octet-stream"
    if len(content_type) > CONTENT_TYPE_MAX:
        raise errors.InvalidInput(
            f"The Content-Type header has {len(content_type):,} characters, more than {CONTENT_TYPE_MAX:,}."
        )
    encoding = codec.normalize_encoding(request.headers.get("content-encoding"))
    declared = declared_length(request)
    if declared == 0:
        encoding = None  # an empty body is empty in any encoding
    check = None
    for cid, spec in schema.collections_for_key(store.schema, key):
        schema.check_content_type(cid, spec, content_type)
        if "jsonSchema" in spec:
            check = _json_check(cid, spec, check)
    body = codec.UploadBody(
        request.stream(),
        encoding,
        st.settings.max_record_bytes,
        declared,
        check=check,
        check_limit=schema.JSON_COLLECTION_MAX,
    )
    try:
        await st.storage.put_record(store.id, key, body, content_type, encoding)
    except codec.DecodeError:
        raise errors.InvalidInput(f"The request body is not valid {encoding} data.") from None
    st.storage.count_access(store.id, writes=1)
    location = f"{public_base(request)}/v2/key-value-stores/{store.id}/records/{quote_key(key)}"
    return json_response_empty(location)


def _json_check(cid, spec, previous):  # type: ignore[no-untyped-def]
    async def check(data: bytes) -> None:
        if previous is not None:
            await previous(data)
        await schema.check_json_off_loop(cid, spec, data)

    return check


_CREATED_TAIL = [(b"content-length", b"2"), (b"content-type", b"application/json; charset=utf-8")]


def json_response_empty(location: str) -> Bytes:
    """201 ``{}`` with its Location: the headers Starlette's Response would send, in its order, without making
    one (every PUT answers this)."""
    return Bytes(201, [(b"location", location.encode("latin-1")), *_CREATED_TAIL], b"{}")
