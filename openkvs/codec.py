"""Content-Encoding: incremental decoders with an output cap (so a compression bomb is stopped after at most
``limit`` decoded bytes), the upload body that storage consumes, and decoding of stored bytes on the way out."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator

import anyio
import anyio.to_thread
import brotli
from anyio.lowlevel import RunVar

from openkvs import errors
from openkvs.crc import crc32

ENCODINGS = ("gzip", "br", "deflate")
# The most decoded bytes produced by one step, so a bomb can't allocate much at once and the size limit is checked
# after every step. (The brotli binding grows its output in blocks of 32, 64, 128 KiB...: a limit of half a step
# gives pieces of at most 224 KiB.)
_STEP = 256 * 1024
# The steps after the first of an input chunk (a bomb, or a large record read back decoded) run in worker threads:
# both codecs release the GIL while they work, so the event loop keeps serving others. A pool of its own, so that
# many big decodes wait for each other instead of taking the threads that storage reads need.
_DECODE_THREADS = 4
_BATCH = 1024 * 1024  # decoded bytes per trip to a worker thread (a trip costs about as much as a small step)
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("openkvs_decode_threads")  # one per event loop


class DecodeError(Exception):
    pass


def normalize_encoding(header: str | None) -> str | None:
    """The stored encoding for a Content-Encoding header: None for identity; raises UnsupportedEncoding."""
    if header is None:
        return None
    value = header.strip().lower()
    if value in ("", "identity"):
        return None
    if value == "x-gzip":
        return "gzip"
    if value not in ENCODINGS:
        raise errors.UnsupportedEncoding(header.strip())
    return value


def _zlib_header(head: bytes) -> bool:
    """Whether two bytes start a zlib stream (RFC 1950: method 8, window <= 32 KiB, check bits)."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class Decoder:
    """Feed encoded chunks, get decoded pieces of at most about _STEP bytes each, one step at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._br = brotli.Decompressor() if encoding == "br" else None
        self._z: zlib._Decompress | None = None
        if encoding == "gzip":
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # deflate: the zlib format per RFC 9110, but some clients send raw deflate; the first two bytes tell.
        self._head = b"" if encoding == "deflate" else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``data``, each decoded only when asked for: stop iterating (at a size limit)
        and nothing more is decoded. Iterate to the end before feeding the next chunk. Raises DecodeError."""
        try:
            if self._br is not None:
                yield from self._feed_br(data)
            else:
                yield from self._feed_zlib(data)
        except (zlib.error, brotli.error) as exc:
            raise DecodeError(str(exc)) from None

    def _feed_br(self, data: bytes) -> Iterator[bytes]:
        br = self._br
        assert br is not None
        while True:
            piece = br.process(data, output_buffer_limit=_STEP // 2)
            if piece:
                yield piece
            # More output is pending while input is left over, or when the output limit was what stopped it
            # (the decoder may have taken all input and still hold output: can_accept_more_data() is then True).
            if br.can_accept_more_data() and (len(piece) < _STEP // 2 or br.is_finished()):
                return
            data = b""

    def _feed_zlib(self, data: bytes) -> Iterator[bytes]:
        if self._head is not None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = None
            self._z = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
        z = self._z
        assert z is not None
        while True:
            piece = z.decompress(data, _STEP)
            if piece:
                yield piece
            if z.eof:
                if not (z.unused_data and self.encoding == "gzip"):
                    return  # (data after a deflate stream is ignored, as zlib.decompress does)
                data = z.unused_data  # a further gzip member
                self._z = z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif z.unconsumed_tail or len(piece) == _STEP:
                data = z.unconsumed_tail  # (a full piece may leave output pending inside zlib, even with no input)
            else:
                return

    def finish(self) -> None:
        """Raises DecodeError if the stream ended early."""
        if self._br is not None:
            if not self._br.is_finished():
                raise DecodeError("truncated brotli stream")
        elif self._z is None or not self._z.eof:
            raise DecodeError(f"truncated {self.encoding} stream")


async def decode_chunk(decoder: Decoder, data: bytes) -> AsyncGenerator[bytes, None]:
    """``decoder.feed(data)`` without holding up the event loop: the first step here (most bodies are one small
    step), the next ones in worker threads, a batch of up to _BATCH bytes per trip. The caller may stop early
    (at a size limit); nothing more is decoded then."""
    steps = decoder.feed(data)
    piece = next(steps, None)
    if piece is None:
        return
    yield piece
    while batch := await anyio.to_thread.run_sync(_take, steps, limiter=_decode_limiter()):
        for piece in batch:
            yield piece


def _take(steps: Iterator[bytes]) -> list[bytes]:
    out: list[bytes] = []
    size = 0
    for piece in steps:
        out.append(piece)
        size += len(piece)
        if size >= _BATCH:
            break
    return out


def _decode_limiter() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_DECODE_THREADS)
        _limiter.set(limiter)
        return limiter


class UploadBody:
    """A request body being stored (the ``RecordBody`` of storage.base). Yields the bytes as uploaded; meanwhile
    decodes them to count the decoded length and its CRC-32, and stops at ``limit`` decoded (or stored) bytes."""

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        encoding: str | None,
        limit: int,
        declared_length: int | None,
        check: Callable[[bytes], Awaitable[None]] | None = None,
        check_limit: int = 0,
    ) -> None:
        """``check``, if given, is awaited with the whole decoded body (at most ``check_limit`` bytes) after the
        last chunk and before iteration ends, so it can still abort the write by raising."""
        self._chunks = chunks
        self._check = check
        self._check_limit = check_limit
        self.encoding = encoding
        self.limit = limit
        self.declared_length = declared_length
        self.decoded_size = 0
        self.crc32 = 0
        self.stored_size = 0

    def _too_large(self, seen: int) -> errors.RequestTooLarge:
        return errors.RequestTooLarge(self.limit, max(self.declared_length or 0, seen))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.declared_length is not None and self.declared_length > self.limit and self.encoding is None:
            raise self._too_large(self.declared_length)
        decoder = Decoder(self.encoding) if self.encoding else None
        kept: list[bytes] | None = [] if self._check else None
        async for chunk in self._chunks:
            if not chunk:
                continue
            self.stored_size += len(chunk)
            if self.stored_size > self.limit:
                raise self._too_large(self.stored_size)
            if decoder is None:
                self._count(chunk, kept)
            else:
                async with contextlib.aclosing(decode_chunk(decoder, chunk)) as pieces:
                    async for piece in pieces:
                        self._count(piece, kept)  # at the limit, decoding stops here: no further step
            yield chunk
        if decoder and self.stored_size:
            decoder.finish()
        if self._check is not None and kept is not None:
            # joined once at the end (a single piece as it is): kept in a bytearray, each byte was copied twice
            # more, into memory freshly grown, which is most of what a large dataset push's read cost
            await self._check(kept[0] if len(kept) == 1 else b"".join(kept))

    def _count(self, piece: bytes, kept: list[bytes] | None) -> None:
        self.decoded_size += len(piece)
        if self.decoded_size > self.limit:
            raise self._too_large(self.decoded_size)
        self.crc32 = crc32(piece, self.crc32)
        if kept is not None:
            if self.decoded_size > self._check_limit:
                raise errors.SchemaValidationFailed(
                    f"A record checked against a JSON schema may have at most {self._check_limit} bytes."
                )
            kept.append(piece)


async def decode_stream(chunks: AsyncIterator[bytes], encoding: str | None) -> AsyncIterator[bytes]:
    """Decoded bytes of a stored stream, a step at a time (memory stays at a few steps whatever the ratio).
    Stored bytes were checked on upload, so an error here means damage."""
    async with _closing(chunks):
        if encoding is None:
            async for chunk in chunks:
                yield chunk
            return
        decoder = Decoder(encoding)
        async for chunk in chunks:
            async with contextlib.aclosing(decode_chunk(decoder, chunk)) as pieces:
                async for piece in pieces:
                    yield piece


async def slice_stream(chunks: AsyncIterator[bytes], start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a stream, reading (and so decoding) no further than needed."""
    pos = 0
    async with _closing(chunks):
        async for chunk in chunks:
            n = len(chunk)
            if pos + n > start:
                lo = max(start - pos, 0)
                hi = min(end - pos, n)
                if lo == 0 and hi == n:
                    yield chunk
                else:
                    yield chunk[lo:hi]
            pos += n
            if pos >= end:
                return


@contextlib.asynccontextmanager
async def _closing(chunks: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Closes a source that stopped being read (a storage read holds a file or a connection until then)."""
    try:
        yield chunks
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
