"""openkvs.crc (ISA-L's CRC-32 where it has a wheel) gives zlib's CRC-32 for every input and running value: the
ETags, ZIP entries and download checks depend on it."""

from __future__ import annotations

import random
import zlib

from hypothesis import given
from hypothesis import strategies as st

from openkvs.crc import crc32


@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_the_same_crc_as_zlib(data: bytes, start: int) -> None:
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data, start) == zlib.crc32(data, start)


def test_large_inputs_in_pieces_and_buffers() -> None:
    data = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
    running = 0
    for at in range(0, len(data), 65536 + 3):
        running = crc32(memoryview(data)[at : at + 65536 + 3], running)
    assert running == zlib.crc32(data) == crc32(bytearray(data))
