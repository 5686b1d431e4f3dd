"""PostgreSQL's binary COPY format (``COPY (query) TO STDOUT (FORMAT binary)``): its facts, and a parser of a COPY
of a few columns into memoryviews of the data as asyncpg hands it over (a snapshot's batches of small records:
snapshot.py). chunks.py parses COPYs of blob chunks with the same facts."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

# What a binary COPY starts with: the signature, the flags and the length of the header extension (0 here).
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEAD = len(SIGNATURE) + 8
I16 = struct.Struct("!h").unpack_from
I32 = struct.Struct("!i").unpack_from


class CopyValues:
    """The values of a binary COPY of rows of ``width`` columns, fed in pieces as they come: ``values`` holds every
    row's values, row after row, each a memoryview of the piece it came in (no copy) or None for NULL; ``ended``
    once the trailer came. asyncpg hands over whole CopyData messages (one row each); a row cut between two pieces
    anyway is put together in a copy of its own."""

    __slots__ = ("width", "values", "ended", "_started", "_rest")

    def __init__(self, width: int) -> None:
        self.width = width
        self.values: list[memoryview | None] = []
        self.ended = False
        self._started = False
        self._rest = b""  # the start of a row (or of the COPY's header) whose end is in the next piece

    def feed(self, data: bytes | bytearray) -> None:
        if self.ended:
            raise ValueError("data after a binary COPY's trailer")
        view = memoryview(self._rest + data if self._rest else data)
        n = len(view)
        i = 0
        if not self._started:
            if n < HEAD:
                self._rest = bytes(view)
                return
            if view[: len(SIGNATURE)] != SIGNATURE or I32(view, HEAD - 4)[0] != 0:
                raise ValueError("not a binary COPY without a header extension")
            self._started = True
            i = HEAD
        values = self.values
        width = self.width
        while i + 2 <= n:
            fields = I16(view, i)[0]
            if fields == -1:
                if i + 2 != n:
                    raise ValueError("data after a binary COPY's trailer")
                self.ended = True
                i = n
                break
            if fields != width:
                raise ValueError(f"a binary COPY row of {fields} fields, not {width}")
            row: list[memoryview | None] = []
            j = i + 2
            for _ in range(width):
                if j + 4 > n:
                    break
                length = I32(view, j)[0]
                j += 4
                if length < 0:  # NULL
                    row.append(None)
                    continue
                if j + length > n:
                    break
                row.append(view[j : j + length])
                j += length
            if len(row) < width:  # the row's end is in the next piece
                break
            values += row
            i = j
        self._rest = bytes(view[i:]) if i < n else b""


def literal(value: str | int) -> str:
    """``value`` as an SQL constant, for a COPY's query (COPY takes no parameters): an int as its digits, a string
    as an escape string constant (``E'...'``, backslashes and quotes doubled), which reads the same whatever
    ``standard_conforming_strings`` says. asyncpg's own quoting of copy_from_query's arguments costs two round
    trips a COPY (a prepare of the query and a select of the quoted values)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"no SQL constant for {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    if "\x00" in value:  # (the API refuses them: PostgreSQL text holds none)
        raise ValueError("a NUL character in an SQL string")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def with_constants(sql: str, args: Sequence[str | int]) -> str:
    """``sql`` with each parameter ``$n`` replaced by ``literal(args[n - 1])``."""
    return _PARAM.sub(lambda m: literal(args[int(m.group(1)) - 1]), sql)


_PARAM = re.compile(r"\$(\d+)\b")
