"""Stored items back into Python values, a batch at a time, for the exports that re-shape or re-render them.

Stored items are compact JSON written by Python's encoder from a body that ``jsontext.loads`` accepted: finite
numbers only, no NaN or Infinity, nesting of at most 128 levels. orjson parses them several times faster than
``json.loads`` and gives the same values, with one exception: an integer outside [-2**63, 2**64) becomes a float
there (Python keeps it exact). Such an integer has at least 19 digits in a row, so an item holding a run of 19
digits anywhere (in a string too: that only costs speed) is parsed by ``json.loads``, as is any item orjson refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def load(raw: bytes) -> Any:
    """One stored item."""
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def load_batch(batch: list[bytes]) -> list[Any]:
    """The items of a batch, in order."""
    return list(map(load, batch))
