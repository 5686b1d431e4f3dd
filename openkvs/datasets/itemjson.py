"""The JSON of dataset items on their way in: a push body parsed, and each item encoded as it is stored. orjson does
the work where its answer is provably the standard library's, the standard library where it may not be.

The stored form of an item (API-datasets.md 4.4; the json and jsonl exports copy it byte for byte) is what
``stdlib_encode`` gives: ``json.dumps(item, ensure_ascii=False, separators=(",", ":"))`` as UTF-8, of the value
``jsontext.loads`` (``json.loads``) parses. orjson parses and writes JSON several times faster, and differs from
that in three ways, each handled here:

- It parses an integer beyond 64 bits as a float (json: the exact integer). A body with a number of 19 or more
  digits (``_LONG_NUMBER``; it may also match inside a string, which only costs speed) is parsed by json.
- It refuses what json.loads takes: NaN and Infinity, 1e400 (json: infinity), lone surrogates, a BOM, UTF-16. Any
  orjson error sends the body through ``jsontext.loads``, which gives today's value or today's 400.
- It writes some floats otherwise (1e-05 as 0.00001, 1e-07 as 1e-7). Every float in its output is compared with
  Python's ``repr`` (``_FLOAT``; a false match inside a string compares equal or costs speed), and an item with
  one that differs is encoded by json.

Everything else is the same: key order, the last of duplicate keys wins, escapes of control characters, UTF-8 of
non-ASCII text, -0.0, shortest round-trip floats, correctly rounded float parsing. tests/datasets/test_itemjson.py
checks it against the standard library with generated values and bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from openkvs import jsontext

# A number of 19+ digits after the character that can precede a number in JSON (which may be "[", ":", "," or
# whitespace after them): the integers orjson may turn into floats (2**63 has 19 digits), and some harmless others.
_LONG_NUMBER = re.compile(rb"[\[:,][ \t\n\r]*-?[0-9]{19}")
# A float as orjson writes it (compact output: always after one of "[:," and before one of ",]}").
_FLOAT = re.compile(rb"[\[:,](-?[0-9]+(?:\.[0-9]+(?:e[-+]?[0-9]+)?|e[-+]?[0-9]+))(?=[,\]}])")

_stdlib_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class LoneSurrogate(jsontext.InvalidJson):
    """A string holds a lone UTF-16 surrogate: it has no UTF-8 form to store or send back."""


def loads(raw: bytes, *, max_depth: int) -> tuple[Any, bool]:
    """The value of a request body and whether orjson parsed it (then ``encode(..., fast=True)`` may be used for
    its items). Raises jsontext.InvalidJson (and its TooDeep, NotFinite) as ``jsontext.loads`` does; a body that
    orjson parsed has its depth checked by the caller's walk (``depth_skeleton``), not here."""
    if not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass  # maybe valid for json (a BOM, UTF-16), maybe not: its answer is the one given
    return jsontext.loads(raw, max_depth=max_depth), False


def stdlib_encode(item: Any) -> bytes:
    """The stored bytes of a value, by the rule itself. Raises LoneSurrogate."""
    try:
        return _stdlib_dumps(item).encode()
    except UnicodeEncodeError:
        raise LoneSurrogate("A string in the items holds a lone UTF-16 surrogate.") from None


def encode(items: list[Any], *, fast: bool) -> list[bytes]:
    """The stored bytes of each item. ``fast``: the items came from orjson (``loads``), so hold no integer beyond 64
    bits, no lone surrogate and no non-finite float."""
    if not fast:
        return [stdlib_encode(item) for item in items]
    out = list(map(orjson.dumps, items))
    if not _floats_agree(b"".join(out)):
        out = [raw if _floats_agree(raw) else stdlib_encode(item) for raw, item in zip(out, items, strict=True)]
    return out


def _floats_agree(raw: bytes) -> bool:
    """Every float orjson wrote in ``raw`` is written as Python's repr writes it."""
    return all(repr(float(tok)) == tok.decode() for tok in set(_FLOAT.findall(raw)))
