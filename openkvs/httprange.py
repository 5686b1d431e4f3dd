"""``Range`` and ``If-Range`` (RFC 9110 sections 14 and 13.1.5) for a representation whose size is known.

We serve one byte range at most. Anything we do not understand, and multi-range requests, are ignored (the
caller sends the whole representation with 200), which RFC 9110 allows: a server may ignore ``Range``.
A well-formed single range that cannot be satisfied raises ``RangeNotSatisfiable`` (the caller answers 416
with ``Content-Range: bytes */size``).
"""

from __future__ import annotations

import re

__all__ = ["RangeNotSatisfiable", "parse_range", "if_range_allows", "content_range", "unsatisfied_range", "select"]

# One range-spec: "first-last", "first-" or "-suffix". ASCII digits only (no signs, and not the other scripts'
# digits that \d and int() accept), optional whitespace around.
_SPEC = re.compile(r"[ \t]*(?:([0-9]+)[ \t]*-[ \t]*([0-9]*)|-[ \t]*([0-9]+))[ \t]*")

# A position of more digits than this (after leading zeros) is past the end of anything we serve (10**18 bytes is
# an exabyte) and counts as _HUGE: int() of thousands of digits is slow, and over 4,300 digits a ValueError.
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


def _position(digits: str) -> int:
    digits = digits.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_DIGITS else _HUGE


class RangeNotSatisfiable(Exception):
    """A syntactically valid single range that selects no byte of the representation."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for a representation of {size} bytes")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end_exclusive) of the one byte range ``header`` asks for, or None to send the whole thing.

    None: no header, not ``bytes=``, malformed, a range whose last byte is before its first, or several ranges.
    Raises ``RangeNotSatisfiable`` for a single well-formed range that starts at or past ``size``, a suffix of
    zero bytes, or any range of an empty representation.
    """
    if header is None:
        return None
    unit, sep, specs = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) != 1:  # several ranges, however many: the whole response (parts are not even parsed)
        return None
    match = _SPEC.fullmatch(parts[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        n = _position(suffix)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return (max(size - n, 0), size)
    start = _position(first)
    if last:
        stop = _position(last)
        if stop < start or (stop == start == _HUGE and _greater(first, last)):
            return None  # RFC 9110 14.1.1: invalid, so the whole header is ignored
        end = min(stop, size - 1) + 1
    else:
        end = size
    if start >= size:
        raise RangeNotSatisfiable(size)
    return (start, end)


def _greater(a: str, b: str) -> bool:
    """a > b for two digit strings of any length, without int() (both past _MAX_DIGITS)."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) > (len(b), b)


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """True when the range may be honoured: no ``If-Range``, or exactly our current strong ETag.

    A weak tag never matches (RFC 9110 13.1.5 requires strong comparison) and an HTTP date is not accepted
    either (our validators are ETags), so both mean: send the whole representation.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith("W/") or etag.startswith("W/"):
        return False
    return value == etag and value.startswith('"') and value.endswith('"') and len(value) >= 2


def content_range(start: int, end: int, size: int) -> str:
    """``Content-Range`` for the bytes [start, end) of ``size``; ``end`` is exclusive, the header's is not."""
    if not 0 <= start < end <= size:
        raise ValueError(f"bad range [{start}, {end}) of {size}")
    return f"bytes {start}-{end - 1}/{size}"


def unsatisfied_range(size: int) -> str:
    """``Content-Range`` for a 416 answer."""
    return f"bytes */{size}"


def select(range_header: str | None, if_range: str | None, etag: str, size: int) -> tuple[int, int, str | None]:
    """What to send of a representation: (start, end_exclusive, Content-Range header or None for all of it).

    The whole thing when there is no usable range or ``If-Range`` names another version; raises
    ``RangeNotSatisfiable`` for a well-formed range past the end.
    """
    if if_range_allows(if_range, etag):
        span = parse_range(range_header, size)
        if span is not None:
            return span[0], span[1], content_range(span[0], span[1], size)
    return 0, size, None
