"""``S3Bucket``: the few S3 calls openkvs needs, as signed requests on an httpx connection pool.

Why not botocore/aiobotocore: they bring aiohttp and botocore (~80 MB installed) for six calls, and botocore's
DeleteObjects leaves out the ``Content-MD5`` that Swift's s3api requires. These calls work on AWS S3, MinIO, Ceph
RGW, Cloudflare R2 and Swift s3api: nothing conditional (no ``If-None-Match`` PUT), Content-MD5 on DeleteObjects,
multipart parts of 8 MiB (every service's minimum is 5 MiB).

Errors: a connection failure, a timeout or a 5xx (and 429, SlowDown) is ``BucketUnavailable`` (the request may be
retried; it becomes HTTP 503); a 404 on an object is ``ObjectMissing``; any other answer is ``BucketError`` with
S3's code and message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import httpx

from ...redact import redacted
from .sigv4 import Credentials, Signer, uri_encode

READ_PIECE = 1024 * 1024  # get() yields pieces of at most this
DELETE_BATCH = 1000  # keys per DeleteObjects: the S3 maximum


class BucketError(Exception):
    """An answer the client did not expect (access denied, no such bucket, a bad request); ``status``: the HTTP
    status of that answer (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# What a HEAD of the bucket answered with these statuses means (the bucket is created by its owner, not by openkvs)
WHY_BUCKET_REFUSED = {
    404: "no such bucket (openkvs does not create it: create it first)",
    403: "access denied (the credentials may not use this bucket)",
}


class BucketUnavailable(BucketError):
    """The service cannot be reached or answered 5xx/429: try again later."""


class ObjectMissing(BucketError):
    """No object under that key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: datetime


def _ns_strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(el: ET.Element, name: str) -> str | None:
    for child in el:
        if _ns_strip(child.tag) == name:
            return child.text or ""
    return None


async def _pieces(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


_TLS: dict[tuple[str, str], ssl.SSLContext] = {}


def _tls_context() -> ssl.SSLContext:
    """The TLS context of every bucket's connection pool in this process: httpx would build one per client,
    parsing the CA bundle again (about 21 ms of CPU for each storage opened with a bucket and each CLI command on
    one; 5 % of the quick tier's CPU), even for an http:// endpoint. Made by httpx as it would be (its CAs, or the
    SSL_CERT_FILE / SSL_CERT_DIR it reads from the environment) and kept per value of those two settings, so a
    bucket opened after they change trusts what they now name. (Shared safely: a context is read-only once made;
    httpcore sets the same ALPN, http/1.1, on each connection.)"""
    key = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    ctx = _TLS.get(key)
    if ctx is None:
        ctx = _TLS[key] = httpx.create_ssl_context()
    return ctx


def _parse(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise BucketError(f"S3 answered with XML that does not parse: {exc}") from None


class S3Bucket:
    """One bucket. ``endpoint``: ``https://host[:port]`` (empty: AWS's endpoint of the region); ``path_style``:
    ``endpoint/bucket/key`` instead of ``bucket.host/key`` (MinIO, Ceph and Swift usually want path style)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str,
        region: str,
        credentials: Credentials,
        path_style: bool,
        max_connections: int = 64,
        timeout: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.region = region
        endpoint = (endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"S3 endpoint must be http(s)://host[:port], got {redacted(endpoint)!r}")
        if path_style:
            self._base = f"{parts.scheme}://{parts.netloc}"
            self._host = parts.netloc
            self._root = "/" + uri_encode(bucket, slash=False)
        else:
            self._base = f"{parts.scheme}://{bucket}.{parts.netloc}"
            self._host = f"{bucket}.{parts.netloc}"
            self._root = ""
        self.endpoint = endpoint
        self._signer = Signer(credentials, region)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self._http: httpx.AsyncClient | None = None

    @property
    def _client(self) -> httpx.AsyncClient:
        """The connection pool, made on first use (again after ``aclose``: a storage may be reopened)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                limits=self._limits, timeout=self._timeout, follow_redirects=False, verify=_tls_context()
            )
        return self._http

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    # -- requests ----------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        key: str | None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | Sequence[bytes] | None = None,
    ) -> httpx.Request:
        """``content``: the body, or its pieces (sent one after another with their total as Content-Length, never
        joined: a part is 8 MiB, and one contiguous buffer of it per upload, freed and made again, is what kept a
        server's memory growing)."""
        body: bytes | AsyncIterator[bytes] | None = content if content is None or isinstance(content, bytes) else None
        if content is not None and not isinstance(content, bytes):
            headers = {**(headers or {}), "content-length": str(sum(map(len, content)))}
            body = _pieces(content)
        path = self._root + ("/" + uri_encode(key, slash=True) if key is not None else "/")
        query = query or {}
        signed = self._signer.headers(method, self._host, path, query, headers)
        qs = "&".join(
            f"{uri_encode(k, slash=False)}={uri_encode(v, slash=False)}" if v != "" else uri_encode(k, slash=False)
            for k, v in query.items()
        )
        url = self._base + path + ("?" + qs if qs else "")
        return self._client.build_request(method, url, headers=signed, content=body)

    async def _send(self, request: httpx.Request, *, stream: bool = False, key: str | None = None) -> httpx.Response:
        try:
            resp = await self._client.send(request, stream=stream)
        except httpx.TransportError as exc:  # connect, read, write, pool timeouts; refused, reset
            raise BucketUnavailable(f"S3 {request.method} {request.url.path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code < 300:
            return resp
        body = await resp.aread() if stream else resp.content
        await resp.aclose()
        code = message = ""
        try:
            err = ET.fromstring(body) if body else None
            if err is not None:
                code, message = _find(err, "Code") or "", _find(err, "Message") or ""
        except ET.ParseError:
            pass
        what = f"S3 {request.method} {request.url.path}: {resp.status_code} {code} {message}".rstrip()
        if resp.status_code >= 500 or resp.status_code == 429 or code == "SlowDown":
            raise BucketUnavailable(what, resp.status_code)
        if resp.status_code == 404 and key is not None and code in ("NoSuchKey", ""):
            raise ObjectMissing(what, resp.status_code)
        raise BucketError(what, resp.status_code)

    # -- the calls ---------------------------------------------------------------------------------------------

    async def create_bucket(self) -> None:
        """Create the bucket (tests and ``openkvs blobs``); an existing bucket of ours is fine."""
        body = b""
        if self.region != "us-east-1":
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{escape(self.region)}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        try:
            await self._send(self._request("PUT", None, content=body))
        except BucketError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise

    async def check(self) -> None:
        """HEAD the bucket: raises unless it exists and the credentials may use it. (A HEAD's answer has no body
        to say why: the two usual reasons are said here.)"""
        request = self._request("HEAD", None)
        # Unsigned, and the connection not kept: Swift's s3api answers a HEAD of a missing bucket with a chunked
        # body's end ("0"), which a kept connection would read as the next answer's status line.
        request.headers["connection"] = "close"
        try:
            await self._send(request)
        except BucketUnavailable:
            raise
        except BucketError as exc:
            why = WHY_BUCKET_REFUSED.get(exc.status)
            raise BucketError(f"{exc}: {why}" if why else str(exc), exc.status) from None

    async def put(self, key: str, data: bytes | Sequence[bytes]) -> None:
        await self._send(self._request("PUT", key, content=data))

    async def start_multipart(self, key: str) -> str:
        resp = await self._send(self._request("POST", key, {"uploads": ""}))
        upload_id = _find(_parse(resp.content), "UploadId")
        if not upload_id:
            raise BucketError(f"S3 CreateMultipartUpload {key}: no UploadId in the answer")
        return upload_id

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes | Sequence[bytes]) -> str:
        resp = await self._send(
            self._request("PUT", key, {"partNumber": str(number), "uploadId": upload_id}, content=data)
        )
        etag = resp.headers.get("etag")
        if not etag:
            raise BucketError(f"S3 UploadPart {key} #{number}: no ETag in the answer")
        return etag

    async def complete_multipart(self, key: str, upload_id: str, etags: Sequence[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{i}</PartNumber><ETag>{escape(e)}</ETag></Part>" for i, e in enumerate(etags, 1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        resp = await self._send(self._request("POST", key, {"uploadId": upload_id}, content=body))
        # S3 may answer 200 and still fail: the error is then in the body
        root = _parse(resp.content)
        if _ns_strip(root.tag) == "Error":
            code = _find(root, "Code") or ""
            what = f"S3 CompleteMultipartUpload {key}: {code} {_find(root, 'Message') or ''}"
            raise BucketUnavailable(what) if code in ("InternalError", "SlowDown") else BucketError(what)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._send(self._request("DELETE", key, {"uploadId": upload_id}), key=key)
        except ObjectMissing:  # NoSuchUpload: finished or aborted already
            pass
        except BucketError as exc:
            if "NoSuchUpload" not in str(exc):
                raise

    async def get(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of an object (a ranged GET), in pieces of up to READ_PIECE. Raises before the
        first piece if the object is missing; a failure later raises BucketUnavailable mid-iteration."""
        if start >= end:
            return
        req = self._request("GET", key, headers={"range": f"bytes={start}-{end - 1}"})
        resp = await self._send(req, stream=True, key=key)
        got = 0
        try:
            try:
                async for piece in resp.aiter_raw(READ_PIECE):
                    got += len(piece)
                    yield piece
            except httpx.TransportError as exc:
                raise BucketUnavailable(f"S3 GET {key}: {type(exc).__name__}: {exc}") from exc
            if got != end - start:
                raise BucketUnavailable(f"S3 GET {key}: {got} bytes instead of {end - start}")
        finally:
            await resp.aclose()

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete objects (missing ones are no error), up to DELETE_BATCH per request."""
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            objects = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in batch)
            body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # S3 requires it
            resp = await self._send(self._request("POST", None, {"delete": ""}, {"content-md5": md5}, body))
            errors = [el for el in _parse(resp.content) if _ns_strip(el.tag) == "Error"]
            failed = [e for e in errors if _find(e, "Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise BucketUnavailable(
                    f"S3 DeleteObjects: {len(failed)} not deleted, e.g. {_find(first, 'Key')}: "
                    f"{_find(first, 'Code')} {_find(first, 'Message')}"
                )

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (ListObjectsV2, 1,000 a page)."""
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            root = _parse((await self._send(self._request("GET", None, query))).content)
            for el in root:
                if _ns_strip(el.tag) == "Contents":
                    modified = (_find(el, "LastModified") or "").replace("Z", "+00:00")
                    size = int(_find(el, "Size") or 0)
                    yield ObjectInfo(_find(el, "Key") or "", size, datetime.fromisoformat(modified))
            token = _find(root, "NextContinuationToken")
            if (_find(root, "IsTruncated") or "").lower() != "true" or not token:
                return
