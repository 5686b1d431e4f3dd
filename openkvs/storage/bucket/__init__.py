"""Record bytes in an S3-compatible bucket: ``BlobStore``, what a backend asks of the place it keeps big records'
bytes, and ``S3BlobStore``, its S3 implementation (``s3.py`` does the requests, ``sigv4.py`` signs them).

One object per record version, ``{prefix}blobs/{blob_id}``, written once and never overwritten: no reader can see
a half-written object and no two writers race on a name (blob ids come from the backend's sequence). Which
objects exist is the backend's business: it notes an intent before an upload starts and deletes objects after
the grace period (``storage/postgres``: the ``uploads``, ``garbage`` and ``leases`` tables).

Errors become the storage errors: an unreachable or failing service ``StorageUnavailable`` (HTTP 503 with
Retry-After, clients retry), a missing object ``NotFound`` as for missing chunks, any other refusal (access
denied, no such bucket) ``StorageUnavailable`` too, with S3's message in the log: a configuration error that an
operator fixes, after which the same request works.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from ...redact import redacted
from ..base import NotFound, StorageUnavailable
from .s3 import WHY_BUCKET_REFUSED, BucketError, BucketUnavailable, ObjectInfo, ObjectMissing, S3Bucket
from .sigv4 import Credentials, load_credentials, load_region

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # bytes per multipart part (and the most a single PUT carries): every service takes it
DEFAULT_INLINE_MAX = 64 * 1024


class BucketRefused(StorageUnavailable):
    """The service answered and refused the bucket (it does not exist, or the credentials may not use it):
    ``why`` says which in words that name no bucket (a readiness answer is public)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class BucketConfigError(ValueError):
    """The bucket settings can't work (no credentials, a bad endpoint): said once at start, no traceback."""


class BlobStore(abc.ABC):
    """Big records' bytes, one object per blob id. ``inline_max``: records up to this many bytes stay in the
    database (an object store request costs more than a small row)."""

    inline_max: int = DEFAULT_INLINE_MAX
    url: str = ""  # s3://bucket/prefix, for messages

    @abc.abstractmethod
    async def upload(
        self, blob_id: int, head: bytearray, rest: AsyncIterator[bytes], started: Callable[[str], Awaitable[None]]
    ) -> int:
        """Store ``head`` then the rest of ``rest`` as blob ``blob_id``; returns the size. A multipart upload
        calls ``started(upload_id)`` first, so that a crash leaves a name to abort. If anything raises (the
        body, the service), whatever was written is removed (best effort) and the error propagates."""

    @abc.abstractmethod
    def read(self, blob_id: int, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a blob (a ranged GET)."""

    @abc.abstractmethod
    async def delete(self, blob_ids: Iterable[int], upload_ids: Iterable[str] = ()) -> None:
        """Remove blobs (missing ones are fine) and abort the multipart uploads ``upload_ids`` of the same
        blobs (pairs by position with ``blob_ids``, may be shorter)."""

    @abc.abstractmethod
    def list(self) -> AsyncIterator[tuple[int, ObjectInfo]]:
        """Every blob in the bucket under this store's prefix: (blob id, object), in key order."""

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise StorageUnavailable unless the bucket answers and the credentials may use it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


@dataclass(frozen=True, slots=True)
class BucketUrl:
    bucket: str
    prefix: str  # "" or ending in "/"


def parse_url(url: str) -> BucketUrl:
    """``s3://BUCKET`` or ``s3://BUCKET/PREFIX``; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected s3://BUCKET/PREFIX, got {redacted(url)!r}")
    prefix = parts.path.strip("/")
    return BucketUrl(parts.netloc, prefix + "/" if prefix else "")


def translated(exc: BucketError) -> Exception:
    if isinstance(exc, ObjectMissing):
        return NotFound(str(exc))
    return StorageUnavailable(str(exc))


@asynccontextmanager
async def _bucket_errors() -> AsyncIterator[None]:
    try:
        yield
    except BucketError as exc:
        raise translated(exc) from exc


class S3BlobStore(BlobStore):
    def __init__(
        self,
        url: str,
        *,
        endpoint: str = "",
        region: str = "",
        path_style: bool = False,
        inline_max: int = DEFAULT_INLINE_MAX,
        credentials: Credentials | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        where = parse_url(url)
        shown = redacted(url)  # (credentials in the URL, s3://KEY:SECRET@BUCKET, are not used, nor shown)
        creds = credentials or load_credentials()
        if creds is None:
            raise BucketConfigError(
                f"{shown}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and "
                "~/.aws/credentials"
            )
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        self.url = shown  # for messages and logs only
        self.inline_max = inline_max
        self.part_size = part_size
        self.prefix = where.prefix + "blobs/"
        try:
            self.bucket = S3Bucket(
                where.bucket, endpoint=endpoint, region=load_region(region), credentials=creds, path_style=path_style
            )
        except ValueError as exc:
            raise BucketConfigError(f"{shown}: {exc}") from None

    def key(self, blob_id: int) -> str:
        return f"{self.prefix}{blob_id}"

    async def aclose(self) -> None:
        await self.bucket.aclose()

    async def check(self) -> None:
        try:
            await self.bucket.check()
        except BucketError as exc:
            why = None if isinstance(exc, BucketUnavailable) else WHY_BUCKET_REFUSED.get(exc.status)
            raise (BucketRefused(str(exc), why) if why else translated(exc)) from exc

    async def upload(
        self, blob_id: int, head: bytearray, rest: AsyncIterator[bytes], started: Callable[[str], Awaitable[None]]
    ) -> int:
        key = self.key(blob_id)
        # A part is the body's pieces as they came (never joined into one buffer: see S3Bucket._request), at least
        # part_size bytes except the last; S3 takes parts of any size above its 5 MiB minimum.
        part = [bytes(head)] if head else []
        have, ended = await _gather(rest, part, len(head), self.part_size + 1)
        if ended:  # one PUT
            async with _bucket_errors():
                await self.bucket.put(key, part)
            return have
        # Multipart: part n goes up while part n+1 is read from the body (two parts in memory at most).
        async with _bucket_errors():
            upload_id = await self.bucket.start_multipart(key)
        etags: list[str] = []
        sending: asyncio.Task[str] | None = None
        size = 0
        try:
            await started(upload_id)
            while part:
                if sending is not None:
                    etags.append(await sending)
                size += have
                sending = asyncio.ensure_future(self.bucket.put_part(key, upload_id, len(etags) + 1, part))
                part, have = [], 0
                if not ended:
                    have, ended = await _gather(rest, part, 0, self.part_size)
            assert sending is not None
            etags.append(await sending)
            sending = None
            async with _bucket_errors():
                await self.bucket.complete_multipart(key, upload_id, etags)
            return size
        except BucketError as exc:  # (a part of an aborted upload is "missing": still no NotFound for a write)
            await self._abandon(key, upload_id, sending)
            raise StorageUnavailable(str(exc)) from exc
        except BaseException:
            await self._abandon(key, upload_id, sending)
            raise

    async def _abandon(self, key: str, upload_id: str, sending: asyncio.Future[str] | None) -> None:
        """Abort a multipart upload after a failure (shielded; if the service is down too, the backend's intent
        row keeps the name for its sweeper)."""
        with anyio.move_on_after(10, shield=True):
            if sending is not None:
                await asyncio.wait({sending})
                if not sending.cancelled():
                    sending.exception()
            try:
                await self.bucket.abort_multipart(key, upload_id)
            except Exception as exc:  # the sweeper retries
                log.warning("could not abort the upload of %s: %s", key, exc)

    async def read(self, blob_id: int, start: int, end: int) -> AsyncIterator[bytes]:
        async with _bucket_errors():
            async for piece in self.bucket.get(self.key(blob_id), start, end):
                yield piece

    async def delete(self, blob_ids: Iterable[int], upload_ids: Iterable[str] = ()) -> None:
        blob_ids = list(blob_ids)
        async with _bucket_errors():
            for blob_id, upload_id in zip(blob_ids, upload_ids, strict=False):
                if upload_id:
                    await self.bucket.abort_multipart(self.key(blob_id), upload_id)
            await self.bucket.delete([self.key(b) for b in blob_ids])

    async def list(self) -> AsyncIterator[tuple[int, ObjectInfo]]:
        async with _bucket_errors():
            async for obj in self.bucket.list(self.prefix):
                name = obj.key[len(self.prefix) :]
                if name.isdigit():
                    yield int(name), obj


async def _gather(it: AsyncIterator[bytes], pieces: list[bytes], have: int, n: int) -> tuple[int, bool]:
    """Append the pieces of ``it`` to ``pieces`` (holding ``have`` bytes) until they hold at least ``n`` bytes;
    returns (the bytes they hold, whether ``it`` ended)."""
    while have < n:
        try:
            piece = await it.__anext__()
        except StopAsyncIteration:
            return have, True
        if piece:
            pieces.append(bytes(piece))
            have += len(piece)
    return have, False
