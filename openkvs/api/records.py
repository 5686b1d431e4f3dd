"""Keys and records: list keys, and GET / HEAD / PUT / POST / DELETE of one record."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from openkvs import auth, codec, errors, schema, signing
from openkvs.api.common import (
    ApiRequest,
    plausible_store_id,
    rate_limit,
    state_of,
    valid_key,
    StoreAccess,
    select_range,
    check_key,
    find_store,
    caller,
    json_response,
    need,
    public_base,
    query_bool,
    query_limit,
    query_text,
    selection,
    state,
)
from openkvs.auth import Access
from openkvs.storage.base import RecordMeta

# Stored pages can't run scripts as this origin, and browsers must not guess another type (API.md 4.6).
RECORD_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
# The headers every record GET answers with (also a 304), encoded once. (A record stored with a Content-Encoding
# adds "Vary: Accept-Encoding": only its response depends on that request header.)
RECORD_FIXED_HEADERS = {"Accept-Ranges": "bytes", **RECORD_SECURITY_HEADERS}
_RECORD_FIXED_RAW = [(k.lower().encode(), v.encode()) for k, v in RECORD_FIXED_HEADERS.items()]


async def list_keys(request: Request) -> Response:
    who = await caller(request)
    found = await find_store(request, who, request.path_params["store_id"])
    store = found.store
    need(request, found, who, Access.READ, signed=auth.check_content_signature(store, request.query_params.get("signature")))
    limit = query_limit(request)
    start = query_text(request, "exclusiveStartKey")
    sel = selection(request, store)
    storage = state(request).storage
    page = await storage.list_keys(store.id, sel, start, limit)
    storage.count_access(store.id, lists=1)
    base = f"{public_base(request)}/v2/key-value-stores/{store.id}/records/"
    secret = store.url_signing_secret_key
    items = [
        {
            "key": item.key,
            "size": item.size,
            "recordPublicUrl": f"{base}{quote(item.key, safe='')}?signature={signing.record_signature(secret, item.key)}",
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


def _accepts(accept_encoding: str | None, encoding: str) -> bool:
    if not accept_encoding:
        return False
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if name in (encoding, "*") or (encoding == "gzip" and name == "x-gzip"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _path_key(request: Request) -> str:
    """The key as it is in the decoded path. A guard on the route's path parameter: a pattern ending in ``$`` also
    matches before a final newline that ``.*`` doesn't take, so with Starlette's ``path`` convertor ``/records/a%0A``
    would be routed with the key ``a`` and write another record than the one named (app.py's ``key`` convertor
    takes newlines too)."""
    key = request.path_params["key"]
    path = request.scope["path"]
    head = f"/v2/key-value-stores/{request.path_params['store_id']}/records/"
    if path.startswith(head) and path[len(head):] != key:
        raise errors.InvalidRecordKey()
    return key


async def record_endpoint(request: Request) -> Response:
    key = _path_key(request)
    who = await caller(request)
    reading = request.method in ("GET", "HEAD")
    store_id = request.path_params["store_id"]
    found = await find_store(request, who, store_id, record_op=True, record_key=key if reading else None)
    check_key(key)
    if reading:
        signed = auth.check_record_signature(found.store, key, request.query_params.get("signature"))
        need(request, found, who, Access.READ, signed=signed)
        return await _get_record(request, found, key)
    need(request, found, who, Access.WRITE)
    if request.method == "DELETE":
        storage = state(request).storage
        await storage.delete_record(found.store.id, key)
        storage.count_access(found.store.id, deletes=1)
        return Response(status_code=204)
    return await _put_record(request, found.store, key)


async def record_get(scope: Scope, receive: Receive, send: Send) -> None:
    """GET/HEAD of a record as a bare ASGI app, for app.py's fast lane (which has set ``path_params``): the same
    endpoint, without Starlette's routing and middleware layers around it; the owner's plain GET even shorter."""
    if await _owner_plain_get(scope, receive, send):
        return
    response = await record_endpoint(ApiRequest(scope, receive))
    await response(scope, receive, send)


# Request headers that make a GET more than plain (the general path handles them).
_NOT_PLAIN = frozenset((b"range", b"if-range", b"if-none-match"))


async def _owner_plain_get(scope: Scope, receive: Receive, send: Send) -> bool:
    """The most common request of all, answered with the least work: the store's owner, with a token already in
    the cache, GETs a small identity-encoded record by store ID, with no query string and no conditional or
    range header. Its access rule is the simplest one there is (the owner may read); anything
    else returns False before a byte is sent, and the general path (record_endpoint) answers instead, so every
    other rule and every error lives in one place. The same answer either way: tests/api/test_records.py
    compares the two paths header by header."""
    if scope["method"] != "GET" or scope["query_string"]:
        return False
    authorization = None
    for name, value in scope["headers"]:  # ASGI servers give header names in lower case
        if name in _NOT_PLAIN:
            return False
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    st = state_of(scope)
    token = auth.token_from_request(authorization, None)
    hit = st.tokens.cached(token) if token is not None else None
    if hit is None or hit[0] is None:
        return False
    params = scope["path_params"]
    store_id, key = params["store_id"], params["key"]
    if not (plausible_store_id(store_id) and valid_key(key)):
        return False
    storage = st.storage
    store, record = await storage.get_store_and_record(store_id, key, hit[0].id)
    if store is None or record is None or store.user_id != hit[0].id or record.content_encoding is not None:
        return False
    body = storage.held_bytes(record)
    if body is None:
        return False
    await rate_limit(scope, hit[0], store_id, record_op=True)  # as find_store does (a 429 is ApiMiddleware's)
    storage.count_access(store_id, reads=1)
    headers = _record_headers(record, _etag(record, False))
    headers["Content-Length"] = str(len(body))
    await _Bytes(200, headers, body)(scope, receive, send)
    return True


def _record_headers(record: RecordMeta, etag: str) -> dict[str, str]:
    """The headers of every record response but a 304's, before those of encoding, range and disposition (and
    RECORD_FIXED_HEADERS, which _Bytes adds)."""
    return {"Content-Type": record.content_type, "ETag": etag, "Last-Modified": _http_date(record.modified_at)}


class _Bytes:
    """A record GET's response when its body is in memory (a small record, a HEAD, a 304): the given headers plus
    RECORD_FIXED_HEADERS, sent as they are, without building a Starlette Response (which re-checks each one)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.headers += _RECORD_FIXED_RAW
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _get_record(request: Request, found: StoreAccess, key: str) -> Response | _Bytes:
    storage = state(request).storage
    store_id = found.store.id
    if found.record_looked_up:
        record = found.record
    else:
        record = await storage.get_record(store_id, key)
    if record is None:
        raise errors.RecordNotFound()
    storage.count_access(store_id, reads=1)
    encoded = record.content_encoding is not None and _accepts(
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
        return _Bytes(304, headers, b"")
    start, end, status = select_range(request, etag, size, headers)
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD" or start == end:
        return _Bytes(status, headers, b"")
    held = storage.held_bytes(record) if encoded or record.content_encoding is None else None
    if held is not None:  # a small record came with the lookup: no read, no streaming machinery
        return _Bytes(status, headers, held[start:end] if end - start < len(held) else held)
    # Read the first piece before the response starts: if the database is unavailable this is still a clean 503
    # (after the headers an error can only cut the connection). A record of up to one piece is then fully read.
    body = _record_bytes(request, record, encoded, start, end)
    try:
        first = await anext(body, b"")
    except BaseException:
        await body.aclose()
        raise
    if len(first) == end - start:  # the whole body in one piece: a plain response, no streaming machinery
        await body.aclose()
        return _Bytes(status, headers, first)
    return StreamingResponse(_prepend(first, body), status, {**headers, **RECORD_FIXED_HEADERS})


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _record_bytes(request: Request, record: RecordMeta, encoded: bool, start: int, end: int) -> AsyncIterator[bytes]:
    storage = state(request).storage
    if encoded or record.content_encoding is None:
        async for chunk in storage.read_blob(record, start, end):
            yield chunk
        return
    # Decoded on the fly for a client that doesn't take the stored encoding: a range means decode and skip.
    async for chunk in codec.slice_stream(codec.decode_stream(storage.read_blob(record), record.content_encoding), start, end):
        yield chunk


async def _put_record(request: Request, store, key: str) -> Response:  # type: ignore[no-untyped-def]
    st = state(request)
    content_type = request.headers.get("content-type") or "application/octet-stream"
    encoding = codec.normalize_encoding(request.headers.get("content-encoding"))
    declared = request.headers.get("content-length")
    declared_length = int(declared) if declared and declared.isdigit() else None
    if declared_length == 0:
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
        declared_length,
        check=check,
        check_limit=schema.JSON_COLLECTION_MAX,
    )
    try:
        await st.storage.put_record(store.id, key, body, content_type, encoding)
    except codec.DecodeError:
        raise errors.InvalidInput(f"The request body is not valid {encoding} data.") from None
    st.storage.count_access(store.id, writes=1)
    location = f"{public_base(request)}/v2/key-value-stores/{store.id}/records/{quote(key, safe='')}"
    return json_response_empty(location)


def _json_check(cid, spec, previous):  # type: ignore[no-untyped-def]
    async def check(data: bytes) -> None:
        if previous is not None:
            await previous(data)
        await schema.check_json_off_loop(cid, spec, data)

    return check


def json_response_empty(location: str) -> Response:
    return Response(b"{}", 201, {"Location": location}, media_type="application/json; charset=utf-8")

