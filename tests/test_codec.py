"""openkvs.codec without a server: bounded decoding steps, bombs stopped at the limit, every stream shape a
client may send (multi-member gzip, raw deflate, large brotli), truncated streams, and decoded ranges."""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterable

import brotli
import pytest

from openkvs import codec, errors

MIB = 1 << 20
# No single decoded piece is larger than this (the brotli binding rounds its output limit up to a block).
PIECE_MAX = 512 * 1024


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": lambda d: gzip.compress(d, 9),
    "deflate": lambda d: zlib.compress(d, 9),
    "deflate-raw": deflate_raw,
    "br": lambda d: brotli.compress(d, quality=5),
}


def http_encoding(name: str) -> str:
    return "deflate" if name == "deflate-raw" else name


def mixed(n: int) -> bytes:
    """Compressible but not trivially so: random blocks and runs."""
    out = bytearray()
    while len(out) < n:
        out += os.urandom(3000) + bytes([len(out) % 251]) * 7000
    return bytes(out[:n])


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def decode_all(encoding: str, chunks: Iterable[bytes]) -> bytes:
    d = codec.Decoder(encoding)
    out = bytearray()
    for chunk in chunks:
        for piece in d.feed(chunk):
            assert len(piece) <= PIECE_MAX
            out += piece
    d.finish()
    return bytes(out)


async def agen(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


async def upload(encoding: str | None, chunks: Iterable[bytes], limit: int) -> tuple[codec.UploadBody, bytes]:
    body = codec.UploadBody(agen(chunks), encoding, limit, None)
    stored = bytearray()
    async for chunk in body:
        stored += chunk
    return body, bytes(stored)


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("chunk", [1, 7, 65536, None])
def test_round_trip_any_chunking(name, chunk):
    plain = mixed(300_000)
    enc = ENCODERS[name](plain)
    assert decode_all(http_encoding(name), chunked(enc, chunk or len(enc))) == plain


@pytest.mark.parametrize("size", [480 * 1024, 490_000, 2 * MIB + 17, 5 * MIB])
def test_brotli_over_480_kib_decodes_whole(size):
    # issue 11 item 10: the decoder took all input yet still held output; the loop stopped there and the body
    # was refused as "not valid br"
    plain = mixed(size)
    enc = brotli.compress(plain, quality=5)
    assert decode_all("br", [enc]) == plain
    assert decode_all("br", chunked(enc, 65536)) == plain
    body, stored = asyncio.run(upload("br", chunked(enc, 65536), limit=size))
    assert stored == enc and body.decoded_size == size and body.crc32 == zlib.crc32(plain)


@pytest.mark.parametrize("name", ["gzip", "deflate", "deflate-raw"])
def test_zlib_output_pending_with_no_input_left_is_not_lost(name):
    # A step that fills its output may have taken all input and still hold output (raw deflate has no trailer
    # left over to show it): lengths just past a step boundary, where the last step is cut.
    for n in range(codec._STEP, codec._STEP + 300, 7):
        plain = bytes(n)
        assert decode_all(http_encoding(name), [ENCODERS[name](plain)]) == plain, n


def test_multi_member_gzip():
    parts = [b"first ", mixed(100_000), b"", b" last"]
    enc = b"".join(gzip.compress(p) for p in parts)
    assert decode_all("gzip", [enc]) == b"".join(parts)
    assert decode_all("gzip", chunked(enc, 5)) == b"".join(parts)


def test_gzip_garbage_after_a_member_is_an_error():
    with pytest.raises(codec.DecodeError):
        decode_all("gzip", [gzip.compress(b"data") + b"not gzip"])


@pytest.mark.parametrize("split", [1, 2, 3])
def test_deflate_zlib_or_raw_told_apart_by_the_first_two_bytes(split):
    plain = mixed(50_000)
    for enc in (zlib.compress(plain), deflate_raw(plain)):
        assert decode_all("deflate", [enc[:split], enc[split:]]) == plain


@pytest.mark.parametrize("name", list(ENCODERS))
def test_truncated_streams_are_errors(name):
    enc = ENCODERS[name](mixed(200_000))
    for cut in (1, len(enc) // 2, len(enc) - 1):
        with pytest.raises(codec.DecodeError):
            decode_all(http_encoding(name), chunked(enc[:cut], 4096))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_garbage_is_an_error(name):
    with pytest.raises(codec.DecodeError):
        decode_all(http_encoding(name), [b"\xff\xfe this is not compressed data at all" * 10])


@functools.cache
def bomb(name: str, size: int) -> bytes:
    """``size`` zero bytes, encoded (compressed a MiB at a time: the zeros are never in memory at once)."""
    zeros = bytes(MIB)
    if name == "br":
        c = brotli.Compressor(quality=1, lgwin=24)
        return b"".join(c.process(zeros) for _ in range(size // MIB)) + c.finish()
    wbits = {"gzip": 31, "deflate": 15, "deflate-raw": -15}[name]
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join(z.compress(zeros) for _ in range(size // MIB)) + z.flush()


@pytest.mark.parametrize("name", list(ENCODERS))
def test_a_bomb_is_decoded_a_bounded_step_at_a_time(name):
    enc = bomb(name, 64 * MIB)
    steps = codec.Decoder(http_encoding(name)).feed(enc)  # the whole bomb in one input chunk
    first = next(steps)
    assert 0 < len(first) <= PIECE_MAX  # only one step was decoded so far, not 64 MiB
    total = len(first) + sum(len(p) for p in steps)
    assert total == 64 * MIB


@pytest.mark.parametrize("name", list(ENCODERS))
def test_a_bomb_upload_stops_at_the_limit_with_bounded_memory(name):
    enc = bomb(name, 64 * MIB)
    limit = 1 * MIB
    decoded = 0

    async def run() -> None:
        nonlocal decoded
        body = codec.UploadBody(agen([enc]), http_encoding(name), limit, len(enc))
        try:
            async for _ in body:
                pass
        finally:
            decoded = body.decoded_size

    tracemalloc.start()
    try:
        with pytest.raises(errors.RequestTooLarge):
            asyncio.run(run())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert limit < decoded <= limit + PIECE_MAX  # stopped one step past the limit
    assert peak < 8 * MIB  # the 64 MiB were never decoded (or held) at once


def test_an_upload_at_exactly_the_limit_is_accepted():
    plain = mixed(MIB)
    body, _ = asyncio.run(upload("gzip", chunked(gzip.compress(plain), 1000), limit=MIB))
    assert body.decoded_size == MIB and body.crc32 == zlib.crc32(plain)


def test_the_event_loop_runs_while_a_chunk_is_decoded():
    # the steps after the first of a chunk run in worker threads: a timer on the loop keeps firing meanwhile
    enc = bomb("gzip", 64 * MIB)

    async def run() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        t = asyncio.create_task(tick())
        n = 0
        async for piece in codec.decode_chunk(codec.Decoder("gzip"), enc):
            n += len(piece)
        t.cancel()
        return n, ticks

    n, ticks = asyncio.run(run())
    assert n == 64 * MIB
    assert ticks > 50  # 256 steps; a decode that never left the loop would leave the timer at 0 or 1


async def collect(it: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for piece in it:
        out += piece
    return bytes(out)


class Source:
    """A stored stream that counts what was read from it and whether it was closed."""

    def __init__(self, data: bytes, size: int = 65536) -> None:
        self.chunks = chunked(data, size)
        self.read = 0
        self.closed = False

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            for c in self.chunks:
                self.read += len(c)
                yield c
        finally:
            self.closed = True


@pytest.mark.parametrize("name", list(ENCODERS))
def test_decoded_range_reads_no_further_than_its_end(name):
    plain = mixed(2 * MIB)
    enc = ENCODERS[name](plain)
    src = Source(enc)
    got = asyncio.run(collect(codec.slice_stream(codec.decode_stream(src.gen(), http_encoding(name)), 1000, 5000)))
    assert got == plain[1000:5000]
    assert src.closed and src.read < len(enc)
    src = Source(enc)
    whole = asyncio.run(collect(codec.slice_stream(codec.decode_stream(src.gen(), http_encoding(name)), 0, len(plain))))
    assert whole == plain and src.read == len(enc)
    tail = asyncio.run(collect(codec.slice_stream(codec.decode_stream(Source(enc).gen(), http_encoding(name)),
                                                  len(plain) - 1, len(plain))))
    assert tail == plain[-1:]
