"""The JSON of dataset items on their way in: a push body parsed, and each item encoded as it is stored. orjson does
the work where its answer is provably the standard library's, the standard library where it may not be.

The stored form of an item (API-datasets.md 4.4; the json and jsonl exports copy it byte for byte) is what
``stdlib_encode`` gives: ``json.dumps(item, ensure_ascii=False, separators=(",", ":"))`` as UTF-8, of the value
``jsontext.loads`` (``json.loads``) parses. orjson parses and writes JSON several times faster, and differs from
that in three ways, each handled by the caller (api/items.py ``prepare_push_body``) with what is here:

- It refuses what json.loads takes: NaN and Infinity, 1e400 (json: infinity), lone surrogates, a BOM, UTF-16.
  ``fast_loads`` raises NotFast on any orjson error, and the body goes through ``jsontext.loads``, which gives
  today's value or today's 400.
- It parses an integer beyond 64 bits as a float (json: the exact integer). ``floats_as_parsed`` is false for a
  float of magnitude 2**63 or more (which a body may also hold as such: it only costs speed), and the body goes
  through json.
- It writes some floats otherwise (1e-05 as 0.00001, 1e-07 as 1e-7). ``floats_as_parsed`` compares each float's
  orjson text with Python's ``repr`` (what json writes); one that differs sends the body through json.

Everything else is the same: key order, the last of duplicate keys wins, escapes of control characters, UTF-8 of
non-ASCII text, -0.0, correctly rounded float parsing. tests/datasets/test_itemjson.py checks it against the
standard library with generated values and bodies.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from openkvs import jsontext

_stdlib_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_INT64 = float(2**63)


class NotFast(Exception):
    """orjson can't tell what the json module would: parse with ``jsontext.loads``."""


class LoneSurrogate(jsontext.InvalidJson):
    """A string holds a lone UTF-16 surrogate: it has no UTF-8 form to store or send back."""


def fast_loads(raw: bytes) -> Any:
    """orjson's value of a body (depth unchecked: the caller's walk does that), or NotFast."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotFast from None


def floats_as_parsed(floats: list[float]) -> bool:
    """Whether the floats of a ``fast_loads`` value are those json.loads gives and are written as it writes them,
    so that ``encode(..., fast=True)`` may be used (else: parse with json)."""
    dumps = orjson.dumps
    for f in set(floats):
        if not -_INT64 < f < _INT64 or dumps(f) != repr(f).encode():
            return False
    return True


def stdlib_encode(item: Any) -> bytes:
    """The stored bytes of a value, by the rule itself. Raises LoneSurrogate."""
    try:
        return _stdlib_dumps(item).encode()
    except UnicodeEncodeError:
        raise LoneSurrogate("A string in the items holds a lone UTF-16 surrogate.") from None


def encode(items: list[Any], *, fast: bool) -> list[bytes]:
    """The stored bytes of each item. ``fast``: the items came from ``fast_loads`` and passed ``floats_as_parsed``
    (so hold no integer beyond 64 bits, no lone surrogate, no float that orjson writes otherwise)."""
    if fast:
        return list(map(orjson.dumps, items))
    return [stdlib_encode(item) for item in items]
