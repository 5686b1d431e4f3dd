"""Stored items back into Python values, a batch at a time, for the exports that re-shape or re-render them.

Stored items are compact JSON written by Python's encoder from a body that ``jsontext.loads`` accepted: finite
numbers only, no NaN or Infinity, nesting of at most 128 levels. orjson parses them several times faster than
``json.loads`` and gives the same values, with one exception: an integer outside [-2**63, 2**64) becomes a float
there (Python keeps it exact). Such an integer has at least 19 digits in a row, so an item holding a run of 19
digits anywhere (in a string too: that only costs speed) is parsed by ``json.loads``, as is any item orjson refuses.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Every digit as "0", any other byte as "x": a run of 19 digits is then a substring search (both in C: a tenth of
# what the parse costs, where a regular expression's search cost as much as the parse).
_DIGITS_AS_ZERO = bytes(48 if 48 <= c <= 57 else 120 for c in range(256))
_LONG_DIGITS = b"0" * 19


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
