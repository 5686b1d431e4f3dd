"""Content-Encoding: incremental decoders with an output cap (so a compression bomb is stopped after at most
``limit`` decoded bytes), the upload body that storage consumes, and decoding of stored bytes on the way out."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import brotli

from openkvs import errors

ENCODINGS = ("gzip", "br", "deflate")
_STEP = 256 * 1024  # largest decoded piece produced from one call, so a bomb can't allocate much at once


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


class Decoder:
    """Feed encoded chunks, get decoded pieces of at most _STEP bytes each."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._br = brotli.Decompressor() if encoding == "br" else None
        self._z = self._new_zlib() if encoding != "br" else None
        self._first = True

    def _new_zlib(self) -> zlib._Decompress:
        # gzip: wbits 16+15. deflate: the zlib format per RFC 9110; raw deflate is tried if that fails at once.
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self.encoding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            if self._br is not None:
                piece = self._br.process(data, output_buffer_limit=_STEP)
                out.append(piece)
                while not self._br.can_accept_more_data():
                    out.append(self._br.process(b"", output_buffer_limit=_STEP))
                return out
            assert self._z is not None
            while data:
                try:
                    piece = self._z.decompress(data, _STEP)
                except zlib.error:
                    if self._first and self.encoding == "deflate":
                        self._z, self._first = zlib.decompressobj(-zlib.MAX_WBITS), False
                        continue
                    raise
                self._first = False
                out.append(piece)
                if self._z.unconsumed_tail:
                    data = self._z.unconsumed_tail
                elif self._z.eof and self._z.unused_data and self.encoding == "gzip":
                    data = self._z.unused_data  # a further gzip member
                    self._z = self._new_zlib()
                else:
                    data = b""
            return out
        except (zlib.error, brotli.error) as exc:
            raise DecodeError(str(exc)) from None

    def finish(self) -> None:
        """Raises DecodeError if the stream ended early."""
        if self._br is not None:
            if not self._br.is_finished():
                raise DecodeError("truncated brotli stream")
        elif self._z is not None and not self._z.eof:
            raise DecodeError(f"truncated {self.encoding} stream")


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
        kept = bytearray() if self._check else None
        async for chunk in self._chunks:
            if not chunk:
                continue
            self.stored_size += len(chunk)
            if self.stored_size > self.limit:
                raise self._too_large(self.stored_size)
            pieces = decoder.feed(chunk) if decoder else (chunk,)
            for piece in pieces:
                self.decoded_size += len(piece)
                if self.decoded_size > self.limit:
                    raise self._too_large(self.decoded_size)
                self.crc32 = zlib.crc32(piece, self.crc32)
                if kept is not None:
                    if len(kept) + len(piece) > self._check_limit:
                        raise errors.SchemaValidationFailed(
                            f"A record checked against a JSON schema may have at most {self._check_limit} bytes."
                        )
                    kept += piece
            yield chunk
        if decoder and self.stored_size:
            decoder.finish()
        if self._check is not None and kept is not None:
            await self._check(bytes(kept))


async def decode_stream(chunks: AsyncIterable[bytes], encoding: str | None) -> AsyncIterator[bytes]:
    """Decoded bytes of a stored stream. Stored bytes were checked on upload, so an error here means damage."""
    if encoding is None:
        async for chunk in chunks:
            yield chunk
        return
    decoder = Decoder(encoding)
    async for chunk in chunks:
        for piece in decoder.feed(chunk):
            if piece:
                yield piece


async def slice_stream(chunks: AsyncIterable[bytes], start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a stream, reading no further than needed."""
    pos = 0
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
