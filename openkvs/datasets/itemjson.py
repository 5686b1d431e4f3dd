"""The JSON of dataset items: a push body parsed and each item encoded as it is stored, and stored items parsed
back for the exports that re-shape them. orjson does the work where its answer is provably the standard library's,
the standard library where it may not be. This module is the one place that knows where the two differ.

orjson parses and writes JSON several times faster than the json module, and differs from it in three ways:

1. It refuses what json.loads takes: NaN and Infinity, 1e400 (json: infinity), lone surrogates, a BOM, UTF-16.
2. It parses an integer outside [-2**63, 2**64) as a float (json: the exact integer).
3. It writes some floats otherwise (1e-05 as 0.00001, 1e-07 as 1e-7).

Everything else is the same: key order, the last of duplicate keys wins, escapes of control characters, UTF-8 of
non-ASCII text, -0.0, correctly rounded float parsing.

**In** (a push; the caller is api/items.py ``prepare_push_body``). The stored form of an item (API-datasets.md
4.4; the json and jsonl exports copy it byte for byte) is what ``stdlib_encode`` gives: ``json.dumps(item,
ensure_ascii=False, separators=(",", ":"))`` as UTF-8, of the value ``jsontext.loads`` (``json.loads``) parses.
``fast_loads`` raises NotFast on any orjson error (1.), and the body goes through ``jsontext.loads``, which gives
today's value or today's 400. The caller's walk collects the floats of the value, and ``floats_as_parsed`` is
false for a float of magnitude 2**63 or more, which may be an integer orjson read as one (2.; a body may also hold
such a float as such: that only costs speed), or for a float orjson writes otherwise than ``repr`` does (3.): the
body goes through json then. tests/datasets/test_itemjson.py checks it against the standard library with
generated values and bodies.

**Out** (``load``, ``load_batch``: stored items back into values). Stored items are compact JSON written by
Python's encoder from a body that ``jsontext.loads`` accepted: finite numbers only, no lone surrogate, nesting of at
most 128 levels, so 1. and 3. can't happen. 2. can: an integer outside orjson's range has at least 19 digits in a
row, so an item holding a run of 19 digits anywhere (in a string too: that only costs speed) is parsed by
``json.loads``, as is any item orjson refuses. (Not the push's guard: that one needs the floats, which a push's
walk finds anyway and a load would have to walk for.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from openkvs import jsontext

# Every digit as "0", any other byte as "x": a run of 19 digits is then a substring search (both in C: a tenth of
# what the parse costs, where a regular expression's search cost as much as the parse).
_DIGITS_AS_ZERO = bytes(48 if 48 <= c <= 57 else 120 for c in range(256))
_LONG_DIGITS = b"0" * 19
_stdlib_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_INT64 = float(2**63)


# -- in ----------------------------------------------------------------------------------------------------------


class NotFast(Exception):
    """orjson can't tell what the json module would: parse with ``jsontext.loads``."""


class LoneSurrogate(jsontext.InvalidJson):
    """A string holds a lone UTF-16 surrogate: it has no UTF-8 form to store or send back."""


def fast_loads(raw: bytes) -> Any:
    """orjson's value of a body (depth unchecked: the caller's walk does that), or NotFast."""
    try:
        with jsontext.collector_paused():
            return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotFast from None


def floats_as_parsed(floats: list[float]) -> bool:
    """Whether the floats of a ``fast_loads`` value are those json.loads gives and are written as it writes them,
    so that ``encode(..., fast=True)`` may be used (else: parse with json). All at once: orjson's text of the list
    against ``repr`` of each joined by commas (neither writes a comma inside a float, so the texts are equal exactly
    when each float's are), and the least and the largest against 2**63 (C-level calls, no loop here)."""
    if not floats:
        return True
    if not (-_INT64 < min(floats) and max(floats) < _INT64):
        return False
    return orjson.dumps(floats) == b"[" + ",".join(map(repr, floats)).encode() + b"]"


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


# -- out ---------------------------------------------------------------------------------------------------------


def load(raw: bytes) -> Any:
    """One stored item."""
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def load_batch(batch: list[bytes]) -> list[Any]:
    """The items of a batch, in order."""
    return list(map(load, batch))
