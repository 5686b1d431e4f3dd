"""Parsing JSON that a client sent: the request bodies of the API and the records checked against a jsonSchema.

Python's parser nests as deep as its recursion limit (about 1,000 levels), and what consumes the value recurses
too, so a deep body would end as a RecursionError, a 500. jsonschema needs 4 to 10 Python frames per level,
depending on the schema (measured in a fresh thread: ``check_schema`` fails past 163 levels of schema; a record
checked against ``{"items": {"$ref": "#"}}`` past 247 levels, against ``anyOf`` of a ``$ref`` past about 120).
Every level past ``MAX_DEPTH`` is refused instead, before anything else looks at the value."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import orjson

MAX_DEPTH = 64  # levels of arrays and objects; well below what jsonschema can follow (see the module docstring)
BODY_MAX_DEPTH = 128  # levels a dataset push or a request-queue body may have (the contracts' section 1)

# NUL and lone UTF-16 surrogates (json.loads joins the pairs, so any surrogate left alone is lone): JSON allows
# both escapes, but PostgreSQL text can hold neither, and a lone surrogate has no UTF-8 form to send back.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UTF8_BOM = b"\xef\xbb\xbf"


class InvalidJson(ValueError):
    """The bytes are not JSON that we take; the message says why, for a 400."""


class TooDeep(InvalidJson):
    pass


class NotFinite(InvalidJson):
    pass


def _constant(name: str) -> Any:
    raise NotFinite(f"{name} is not a JSON number.")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotFinite(f"The number {text[:40]} is too large.")
    return value


_collector_lock = threading.Lock()
_collector = {"parses": 0, "was_on": False}  # parses under way; whether the first found the collector on


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a body is parsed. A parse makes containers and no cycles,
    and every 700 new containers started a collection that walked the ones made so far again: a 9 MB body of 3
    million empty arrays took 1.0 s so, 0.2 s without, all of it holding the interpreter (every other request
    waited). Process-wide: paused while any parse is under way, on again after the last one."""
    with _collector_lock:
        if _collector["parses"] == 0:
            _collector["was_on"] = gc.isenabled()
            gc.disable()
        _collector["parses"] += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector["parses"] -= 1
            if _collector["parses"] == 0 and _collector["was_on"]:
                gc.enable()


def loads(raw: bytes | bytearray, *, storable: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a JSON document of at most ``max_depth`` levels. ``storable``: also refuse a string or a
    member name holding NUL or a lone surrogate (``"\\u0000"``, ``"\\ud800"``). (Dataset items take 128 levels,
    API-datasets.md section 1: they are stored, not checked against a schema of unbounded recursion.)

    Numbers are finite: Python's parser takes NaN and Infinity, which are not JSON (RFC 8259), and reads 1e400 as
    infinity; jsonschema's arithmetic fails on them and no JSON text can hold them to send back or store."""
    with collector_paused():  # (the parse and the walk after it: the walk makes a list per level)
        try:
            # Decoded here, as UTF-8 only (API-datasets.md section 1; a leading BOM skipped): given bytes,
            # json.loads would detect UTF-16 and UTF-32 by itself and take lone surrogates encoded in UTF-8
            # ("surrogatepass").
            text = (raw[3:] if raw[:3] == _UTF8_BOM else raw).decode("utf-8")
            value = json.loads(text, parse_constant=_constant, parse_float=_finite)
        except NotFinite:
            raise
        except RecursionError:  # raised cleanly by the C parser, past the interpreter's limit
            raise TooDeep(f"JSON nested more than {max_depth} levels deep.") from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidJson("The request body contains invalid data.") from None
        _scan(value, storable, max_depth)
    return value


def check_storable(value: Any) -> None:
    """Raise InvalidJson if a string or member name anywhere in ``value`` holds NUL or a lone surrogate: for
    values that are stored (a store's schema), not for whole bodies, whose unknown members are ignored."""
    _scan(value, True, max_depth=None)


def _scan(value: Any, storable: bool, max_depth: int | None = MAX_DEPTH) -> None:
    """Walk ``value`` without recursion: raise TooDeep past MAX_DEPTH; with ``storable``, InvalidJson for NUL or
    a lone surrogate in any string."""
    if storable and isinstance(value, str) and _UNSTORABLE.search(value):
        raise InvalidJson("A string in the request body holds NUL or a lone UTF-16 surrogate (\\u0000, \\ud800).")
    stack = [(value, 1)] if isinstance(value, (list, dict)) else []
    while stack:
        node, level = stack.pop()
        if max_depth is not None and level > max_depth:
            raise TooDeep(f"JSON nested more than {max_depth} levels deep.")
        if isinstance(node, dict):
            children: Any = node.values()
            if storable and any(_UNSTORABLE.search(k) for k in node):
                raise InvalidJson("A member name in the request body holds NUL or a lone UTF-16 surrogate.")
        else:
            children = node
        for child in children:
            if isinstance(child, (list, dict)):
                stack.append((child, level + 1))
            elif storable and isinstance(child, str) and _UNSTORABLE.search(child):
                raise InvalidJson(
                    "A string in the request body holds NUL or a lone UTF-16 surrogate (\\u0000, \\ud800)."
                )


def stored_size(value: Any) -> int:
    """The bytes of ``value`` as a backend stores it (compact JSON, UTF-8): by orjson, a few ms for the largest
    schema, unless it holds what orjson refuses (an integer past 64 bits)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(errors="surrogatepass"))
