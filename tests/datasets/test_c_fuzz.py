"""The C extensions that read untrusted bytes (openkvs/datasets/_cpush.c: push bodies; _ccsv.c: stored items into
csv lines; openkvs/storage/postgres/_copyrows.c: PostgreSQL binary COPY of packed rows) under attack: bodies generated at
random and then damaged byte by byte (flips, inserts of JSON's own bytes, cuts, truncations, spliced pieces), each
checked against the Python path the C stands in for (for _copyrows.take, which has none: a reference written from
its docstring, ``take_reference``). The oracle, per input: the C's answer is the Python path's,
or the C hands the input back (None; for csv: the lines stop before that item); never a crash, never an answer
Python would not give. And no reference or memory kept across 10,000 calls.

Every input handed to _cpush and _copyrows is a buffer of exactly its length (a ctypes array: no NUL or slack
after it), so that under AddressSanitizer a read one byte past the end is a report. (_ccsv takes bytes objects,
which end in a NUL: a read of that byte is not seen; tests/datasets/test_cpush.py reads _cpush's bodies before an
unreadable page for that.)

Always run: the same driver, a few thousand inputs per extension, on the ordinary build. Under the sanitizers, a
few hundred thousand (the commands; 2-10 minutes on a loaded 2-core machine)::

    python hatch_build.py --sanitize /tmp/openkvs-asan
    OPENKVS_TEST_ASAN=/tmp/openkvs-asan/lib OPENKVS_TEST_FUZZ_CASES=300000 \\
        pytest -p no:cacheprovider tests/datasets/test_c_fuzz.py -k asan

which runs ``main`` in a process of its own with ASan's runtime preloaded (``LD_PRELOAD=$(gcc
-print-file-name=libasan.so)``), ``PYTHONMALLOC=malloc`` (so that ASan sees each of Python's allocations: pymalloc's
arenas would hide an overflow inside them) and ``ASAN_OPTIONS=detect_leaks=0`` (the interpreter's own allocations
at exit are not ours), the three modules loaded from the sanitized build."""

from __future__ import annotations

import ctypes
import gc
import itertools
import json
import os
import random
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkvs import errors, jsontext
from openkvs.api import items as push_items
from openkvs.datasets import itemjson
from openkvs.datasets.pipeline import Shape
from tests.conftest import examples

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("openkvs.datasets._cpush", "openkvs.datasets._ccsv", "openkvs.storage.postgres._copyrows")


def exact(raw: bytes) -> memoryview:
    """``raw`` in a buffer of exactly its length (ctypes: PyMem_Calloc of that size; malloc's under
    PYTHONMALLOC=malloc)."""
    buf = (ctypes.c_char * max(len(raw), 17))()  # (up to 16 bytes ctypes keeps inside the object: not exact)
    view = memoryview(buf).cast("B")[: len(raw)]
    view[:] = raw
    return view


# -- generated JSON ------------------------------------------------------------------------------------------------

# Pieces of strings as a client may write them: every escape, controls, raw UTF-8 of 2, 3 and 4 bytes, U+2028,
# a BOM, surrogates paired; and (BAD_PIECES) lone ones, escapes JSON has not, raw controls.
STRING_PIECES = [
    "a", "key", " ", "#", "/", "é", "€", "😀", "\u2028", "\ufeff", "\x7f", '\\"', "\\\\", "\\/", "\\b", "\\f",
    "\\n", "\\r", "\\t", "\\u0000", "\\u001f", "\\u0022", "\\u005c", "\\u00e9", "\\u00E9", "\\u2028", "\\uffff",
    "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\u0023", "\\uDBFF\\uDFFF", ",", ";", "x" * 40,
]
BAD_PIECES = ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800", "\\x", "\\u12", "\t", "\x00"]
RAW_PIECES = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\x00",
              b"\x01", b"\n", b"\xef\xbb\xbf", b"\x80", b"\xc2"]
NUMBERS = [
    "0", "-0", "1", "-1", "1E5", "1e5", "1E+5", "1e-7", "1e-05", "-0.0", "0.0", "0.1", "1.0", "1.5", "10.37", "5.00",
    "0.30000000000000004", "1e16", "1e15", "123456789012345678", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "-18446744073709551617", "1e400", "-1e400", "1e-400", "2.5e-324", "4.9e-324",
    "1.7976931348623157e308", "1.7976931348623159e308", "0e0", "0E-0", "100000000000000000000.0", "1" * 640,
    "1" * 641, "-" + "9" * 640, "0.0001", "0.00001", "1000000000000000.0", "9999999999999999.0", "1234567890123456.0",
    "123456789012345.6", "0.000099999", "2147483647", "2147483648", "4294967295", "4294967296", "-2147483649",
    "1e2147483648", "1e-2147483649", "0." + "0" * 400 + "1", "1." + "0" * 30, "1" * 25 + ".5",
]
KEYS = ["a", "b", "#a", "", "\\u0061", "é", "😀", "#", "\\u0023x", "[", "{}", "a/b", "a/0", "0", 'q\\"k', "c,d",
        "x\\ny", "\\u0000", "b1", "b2", "b3", "b4", "b5", "b6"]
SPACES = ["", "", "", "", " ", "\n", "\t", "\r\n  "]
BAD_SPACES = ["\x0c", "\u00a0", "\x00", "\ufeff"]  # not JSON's whitespace


class Gen:
    """Random JSON texts (and near-JSON: what a client may send), by a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def space(self) -> str:
        r = self.rng.random()
        return "" if r > 0.2 else self.rng.choice(SPACES) if r > 0.001 else self.rng.choice(BAD_SPACES)

    def string(self) -> str:
        rng = self.rng
        pieces = [rng.choice(STRING_PIECES if rng.random() < 0.98 else BAD_PIECES)
                  for _ in range(rng.choice((0, 1, 2, 3, 8)))]
        if rng.random() < 0.3:
            pieces.append(json.dumps(chr(rng.randrange(0x20, 0x30000)), ensure_ascii=rng.random() < 0.5)[1:-1])
        return '"' + "".join(pieces) + '"'

    def number(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.1:
            return rng.choice(NUMBERS)
        if r < 0.6:
            return str(rng.randrange(-(10**rng.randrange(1, 30)), 10**rng.randrange(1, 30)))
        if r < 0.8:
            return repr(rng.uniform(-1e6, 1e6) * 10.0 ** rng.randrange(-30, 30))
        return format(rng.uniform(-1, 1) * 10.0 ** rng.randrange(-8, 20), rng.choice([".15g", ".17g", ".3e", ".1f"]))

    def scalar(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.string()
        if r < 0.8:
            return self.number()
        return self.rng.choice(["true", "false", "null"])

    def value(self, depth: int) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.5:
            return self.scalar()
        if r < 0.75:
            return self.array(depth - 1)
        return self.object(depth - 1)

    def array(self, depth: int) -> str:
        n = self.rng.choice((0, 1, 2, 3, 5))
        return "[" + self.space() + ",".join(self.value(depth) + self.space() for _ in range(n)) + "]"

    def object(self, depth: int, keys: int | None = None) -> str:
        rng = self.rng
        n = rng.choice((0, 1, 2, 3, 5) if depth else (0, 1, 2, 3, 5, 17, 40)) if keys is None else keys
        names = [rng.choice(KEYS) if rng.random() < 0.7 else self.string()[1:-1] for _ in range(n)]
        if rng.random() < 0.8:  # (most objects without a repeated key: those the C hands back)
            try:
                decoded = dict.fromkeys(json.loads(f'"{k}"', strict=False) for k in names)
                names = [json.dumps(k, ensure_ascii=rng.random() < 0.3)[1:-1] for k in decoded]
            except ValueError:  # a bad escape: as drawn
                pass
        if n > 16 and rng.random() < 0.5:  # past the C's pairwise check of duplicates: distinct, or one repeat
            names = [f"k{i}" for i in range(n)]
            if rng.random() < 0.5:
                names[rng.randrange(n)] = names[rng.randrange(n)]
        members = [self.space() + f'"{k}"' + self.space() + ":" + self.space() + self.value(depth) + self.space()
                   for k in names]
        return "{" + ",".join(members) + "}"

    def nested(self) -> str:
        """A value at and past the depth caps (128 levels of a push, 256 of the csv walk)."""
        rng = self.rng
        levels = rng.choice((126, 127, 128, 129, 130, 255, 256, 257, 300))
        inner = self.scalar()
        for _ in range(levels):
            inner = f'{{"a":{inner}}}' if rng.random() < 0.5 else f"[{inner}]"
        return inner

    def body(self) -> str:
        """A push body: one object or an array of them (sometimes of other values)."""
        rng = self.rng
        if rng.random() < 0.02:
            return '{"x":' + self.nested() + "}"
        if rng.random() < 0.3:
            return self.space() + self.object(rng.randint(0, 4)) + self.space()
        items = [self.object(rng.randint(0, 3)) if rng.random() < 0.99 else self.value(2) for _ in range(rng.choice((0, 1, 2, 5)))]
        return self.space() + "[" + ",".join(self.space() + x + self.space() for x in items) + "]" + self.space()


# -- damage --------------------------------------------------------------------------------------------------------

TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u", b"\\ud800", b"0", b"-", b".", b"e", b"E", b"+",
          b"1e400", b"null", b"tru", b"\xff", b"\xc3", b"\xe2\x80", b"\x00", b" ", b"\n", b'"a":1', b"{}", b"[]",
          b"\xef\xbb\xbf"]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` damaged 1 to 4 times: a bit flipped, a byte replaced, JSON's bytes inserted, a byte or a run cut, a
    run repeated, the end cut off."""
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(b))
        how = rng.randrange(8)
        if how == 0 and at < len(b):
            b[at] ^= 1 << rng.randrange(8)
        elif how == 1 and at < len(b):
            b[at] = rng.randrange(256)
        elif how in (2, 3):
            b[at:at] = rng.choice(TOKENS) if how == 2 else rng.choice(RAW_PIECES)
        elif how == 4:
            del b[at : at + rng.choice((1, 1, 2, 5))]
        elif how == 5:
            n = rng.randint(1, 16)
            b[at:at] = b[at : at + n] * rng.randint(1, 3)
        elif how == 6:
            del b[at:]
        else:
            j = rng.randint(0, len(b))
            b[at:at] = b[min(at, j) : max(at, j)][:64]
    return bytes(b)


# -- oracles -------------------------------------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def python_push(raw: bytes) -> Any:
    """The Python path's Push of a body (its parts), or its 400."""
    saved = push_items._cpush
    push_items._cpush = None
    try:
        push = push_items.prepare_push_body(raw, None)
    except errors.InvalidInput as exc:
        return ("400", str(exc))
    finally:
        push_items._cpush = saved
    return (push.items, push.clean_count, push.keys, push.paths, push.field_stats)


def check_push(cpush: Any, raw: bytes) -> bool:
    """_cpush.split of ``raw`` (in an exact buffer) against the Python path; whether the C took the body."""
    got = cpush.split(exact(raw))
    if got is None:
        return False
    if not raw.strip():
        raise Mismatch(f"took an empty body: {raw!r}")
    saved = push_items._cpush
    push_items._cpush = cpush
    try:
        push = push_items._prepare_split(*got)
    finally:
        push_items._cpush = saved
    mine = (push.items, push.clean_count, push.keys, push.paths, push.field_stats)
    theirs = python_push(raw)
    if mine != theirs:
        raise Mismatch(f"split({raw!r}) = {mine!r}, the Python path: {theirs!r}")
    value = jsontext.loads(raw, max_depth=push_items.ITEM_MAX_DEPTH)  # and written by the rule itself
    if got[0] != [itemjson.stdlib_encode(x) for x in (value if isinstance(value, list) else [value])]:
        raise Mismatch(f"split({raw!r}) stored {got[0]!r}")
    return True


DELIMITERS = [",", ";", "\t", "|", " ", "'", "\x00", "\x01", "e", ".", "-", "+", "0", "t", "n", "\\", "/", "u", "é"]


def csv_line(renderer: Any, raw: bytes) -> bytes | None:
    """The Python path's csv line(s) of one stored item, or None where it can't parse it."""
    try:
        value = itemjson.load(raw)
    except (ValueError, RecursionError):
        return None
    return renderer.rows(list(Shape().iter_rows(value)))


def csv_renderer(columns: list[str], delimiter: str) -> Any:
    from openkvs.datasets import formats
    from openkvs.datasets.query import parse_items_query

    r = formats.renderer(parse_items_query({"format": "csv", "delimiter": delimiter}, None), label="l",
                         dataset_id="i", public_url="http://x")
    r.start(columns)
    return r


def check_csv(ccsv: Any, items: list[Any], columns: list[str], delimiter: str) -> int:
    """_ccsv.lines of ``items`` from each start against the Python path, item by item; how many it rendered."""
    table = ccsv.prepare(columns, delimiter)
    if table is None:
        return 0
    renderer = csv_renderer(columns, delimiter)
    done = 0
    start = 0
    while start < len(items):
        out, stop = ccsv.lines(table, items, start)
        if not start <= stop <= len(items):
            raise Mismatch(f"lines stopped at {stop} of {len(items)} from {start}")
        expected = []
        for raw in items[start:stop]:
            line = csv_line(renderer, raw) if type(raw) is bytes else None
            if line is None:
                raise Mismatch(f"rendered {raw!r}, which the Python path can't parse ({columns!r}, {delimiter!r})")
            expected.append(line)
        if out != b"".join(expected):
            raise Mismatch(f"lines of {items[start:stop]!r} ({columns!r}, {delimiter!r}): {out!r} != {expected!r}")
        done += stop - start
        start = stop + 1  # (the item at stop is Python's)
    check_joined(ccsv, table, items)
    return done


def check_joined(ccsv: Any, table: Any, items: list[Any]) -> None:
    """_ccsv.joined_lines over the same items joined by b"\n", as storage keeps them (when no item holds one): from
    each item's offset, the lines ``lines`` gives from that item, stopping at the offset of the item it stops at."""
    if any(type(raw) is not bytes or b"\n" in raw for raw in items):
        return
    data = b"\n".join(items)
    offsets = list(itertools.accumulate((len(raw) + 1 for raw in items), initial=0))
    start = 0
    while start < len(items):
        out, stop = ccsv.lines(table, items, start)
        got = ccsv.joined_lines(table, data, offsets[start])
        want = (out, offsets[stop] if stop < len(items) else len(data))
        if got != want:
            raise Mismatch(f"joined_lines of {data!r} from {offsets[start]}: {got!r} != {want!r}")
        start = stop + 1


# What _copyrows.take's arguments may be: a lead beyond this is no piece's (the C refuses it, as it refuses a
# negative one: its sums of bytes stay far from the int's limit).
MAX_LEAD = sys.maxsize // 4
ROW = struct.Struct("!hiqiii")  # a packed row's head: fields (3), 8, idx, 4, n, the length of its data
FULL, MORE, ENDED = 0, 1, 2


def take_reference(data: bytes, pos: int, nxt: int, lo: int, hi: int, desc: bool, sep: bytes | None, lead: int,
                   room: int, max_bytes: int) -> Any:
    """What _copyrows.take answers, by its docstring: (out, pos, next, items, size, state), or the exception's type.
    Item by item, with one shortcut the C's contract has: a row that goes whole into a joined piece, joined by
    b"\\n" or holding one item, is copied as stored, its b"\\n" not counted against its n (PostgreSQL wrote it, and
    a stored item holds no b"\\n"; every other row is split and checked). A piece holds something when ``lead``
    or what was taken is not empty (an empty item counts)."""
    if lead < 0 or room < 0 or max_bytes < 0 or lead > MAX_LEAD:
        return ValueError
    end = len(data)
    if not 0 <= pos <= end:
        return IndexError
    out: list[bytes] = []
    items, size, state = 0, 0, MORE
    step = b"" if sep is None else sep
    while pos + 2 <= end:
        (fields,) = struct.unpack_from("!h", data, pos)
        if fields == -1:
            if pos + 2 != end:
                return ValueError
            pos, state = end, ENDED
            break
        if fields != 3:
            return ValueError
        if pos + ROW.size > end:
            break
        _, w1, idx, w2, count, length = ROW.unpack_from(data, pos)
        if w1 != 8 or w2 != 4 or length < 0 or count < 1 or idx - count + 1 < 0:
            return ValueError
        if pos + ROW.size + length > end:
            break
        row, first = data[pos + ROW.size : pos + ROW.size + length], idx - count + 1
        if (nxt < lo) if desc else (nxt >= hi):  # the range is done: rows past it passed over
            pos += ROW.size + length
            continue
        if not first <= nxt <= idx:
            return ValueError
        last = max(first, lo) if desc else min(idx, hi - 1)
        held = lead + size > 0 or items > 0
        whole = length + (len(step) if held else 0)
        if ((sep == b"\n" or sep is not None and count == 1) and not desc and nxt == first and last == idx
                and count <= room - items and (lead + size + whole <= max_bytes or (not held and count == 1))):
            out.append(row)
            size, items, nxt, pos = size + whole, items + count, idx + 1, pos + ROW.size + length
            continue
        parts = row.split(b"\n")
        if len(parts) != count:
            return ValueError
        full = False
        while (nxt >= last) if desc else (nxt <= last):
            item = parts[nxt - first]
            held = lead + size > 0 or items > 0
            add = len(item) + (len(step) if held else 0)
            if items >= room or (held and lead + size + add > max_bytes):
                full = True
                break
            out.append(item)
            size, items, nxt = size + add, items + 1, nxt - 1 if desc else nxt + 1
        if full:
            state = FULL
            break
        pos += ROW.size + length
    if sep is None:
        return (out, pos, nxt, items, size, state)
    return ((sep if lead and out else b"") + sep.join(out), pos, nxt, items, size, state)


def check_take(copyrows: Any, data: bytes, pos: int, nxt: int, lo: int, hi: int, desc: bool, sep: bytes | None,
               lead: int, room: int, max_bytes: int) -> Any:
    """take()'s answer is the reference's (the same exception's type, or the same tuple); returns it."""
    args = (pos, nxt, lo, hi, desc, sep, lead, room, max_bytes)
    expected = take_reference(data, *args)
    try:
        got = copyrows.take(exact(data), *args)
    except (ValueError, IndexError) as exc:
        got = type(exc)
    if got != expected:
        raise Mismatch(f"take({data!r:.3000}, {args}) = {got!r:.3000}, expected {expected!r:.3000}")
    return got


def packed_rows(items: list[bytes], base: int, rng: random.Random) -> list[tuple[int, int, bytes]]:
    """``items`` (item ``base`` on) in rows of 1 to 8 items, as dataset_items holds them: (idx of the last, n,
    the items joined by b"\\n")."""
    rows, i = [], 0
    while i < len(items):
        n = min(rng.choice((1, 1, 2, 3, 8)), len(items) - i)
        rows.append((base + i + n - 1, n, b"\n".join(items[i : i + n])))
        i += n
    return rows


def copy_body(rows: list[tuple[int, int, bytes]], trailer: bool) -> bytes:
    """The rows as a binary COPY writes them after its header (what take reads from ``pos``), maybe its trailer."""
    return b"".join(ROW.pack(3, 8, idx, 4, n, len(d)) + d for idx, n, d in rows) + (b"\xff\xff" if trailer else b"")


def damaged_rows(rng: random.Random, rows: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """A row's n or idx off by a little or a lot, or its data with a b"\\n" more or less (the row's head still
    whole)."""
    rows = list(rows)
    k = rng.randrange(len(rows))
    idx, n, d = rows[k]
    how = rng.randrange(5)
    if how == 0:
        n = rng.choice((n - 1, n + 1, 0, -1, 2**31 - 1, -(2**31), min(idx + 2, 2**31 - 1)))
    elif how == 1:
        idx = rng.choice((idx - 1, idx + 1, n - 2, -1, 2**63 - 1, -(2**63), -(2**63) + n - 1))
    elif how == 2:
        d = d.replace(b"\n", b"", 1) if b"\n" in d and rng.random() < 0.5 else d + b"\n"
    elif how == 3:
        d = b"\n" + d
    else:
        rows[k:k] = [rows[k]]  # a row twice
    rows[k] = (idx, n, d)
    return rows


def copy_case(rng: random.Random, gen: Gen) -> tuple[Any, ...]:
    """A COPY's rows (ascending, or descending for ``desc``) of stored items, maybe damaged, and take's other
    arguments: a range in or around the items, a separator, lead, room and max_bytes of any size or sign."""
    base = rng.choice((0, 0, 5, 1000, 2**40))
    count = rng.choice((0, 1, 2, 3, 8, 20))
    items = []
    for _ in range(count):
        r = rng.random()
        items.append(gen.object(2).encode("utf-8", "surrogatepass") if r < 0.7 else b"x" * rng.choice((1, 100))
                     if r < 0.9 else b"")  # (an empty item: not a stored one, but what a damaged row holds)
    items = [i.replace(b"\n", b" ") for i in items]  # (stored items hold no raw b"\n")
    rows = packed_rows(items, base, rng)
    lo = base + rng.choice((0, 0, 1, -1, rng.randint(-2, count + 2)))
    hi = base + rng.choice((count, count, count - 1, count + 1, rng.randint(-2, count + 2)))
    if rng.random() < 0.8:  # the rows a read of [lo, hi) gets, as datasets.py asks for them; else all
        rows = [r for r in rows if r[0] >= lo and r[0] - r[1] + 1 < hi]
    desc = rng.random() < 0.4
    if desc:
        rows.reverse()
    if rows and rng.random() < 0.15:
        rows = damaged_rows(rng, rows)
    data = copy_body(rows, rng.random() < 0.6)
    if rng.random() < 0.25:
        data = mutate(rng, data)
    nxt = (hi - 1 if desc else lo) + rng.choice((0, 0, 0, 0, 0, 0, 1, -1))
    pos = 0 if rng.random() < 0.85 else rng.choice((rng.randint(0, len(data)), -1, len(data) + 1))
    sep = rng.choice((None, b"\n", b"\n", b",", b"", b",\n", b"\n\n"))
    lead = rng.choice((0, 0, 0, 1, 2, 100, 10_000, 2**60, MAX_LEAD))
    room = rng.choice((1, 2, 3, 1000, 1000, 0, sys.maxsize))
    max_bytes = rng.choice((0, 1, 50, 200, 1 << 20, 1 << 20, sys.maxsize))
    if rng.random() < 0.1:  # one of them out of range
        lead, room, max_bytes = rng.choice(((rng.choice((-1, -(2**62), MAX_LEAD + 1, sys.maxsize)), room, max_bytes),
                                            (lead, rng.choice((-1, -sys.maxsize - 1)), max_bytes),
                                            (lead, room, rng.choice((-1, -sys.maxsize - 1)))))
    return data, pos, nxt, lo, hi, desc, sep, lead, room, max_bytes


# -- the driver ----------------------------------------------------------------------------------------------------


# Bodies whose items' stored bytes and skeletons reach every length around the C's first buffers (256 bytes, then
# twice that) just before a string, a number or a byte of structure is written: a write past the room made for it
# is a report under ASan (_cpush.c writes a string's 16 bytes at a time, and its short ones inline).
GROWTH_BODIES = [
    body.replace("N", "x" * n).encode()
    for n in range(200, 560)
    for body in ('{"k":"N","a":"b"}', '{"N":1,"a":"b"}', '{"k":"N","a":1.5,"b":[{}]}', '{"k":"N\\n\\u00e9é","a":"bcd"}',
                 '[{"N":[1,{"b":"c"}]}]', '{"k":"N"}')
]


def fuzz_push(cpush: Any, cases: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    gen = Gen(rng)
    taken = 0
    for raw in GROWTH_BODIES:
        if not check_push(cpush, raw):
            raise Mismatch(f"handed back {raw!r}")
    for n in range(cases):
        raw = gen.body().encode("utf-8", "surrogatepass")
        if n % 4:
            raw = mutate(rng, raw)
        taken += check_push(cpush, raw)
    return cases, taken


def fuzz_csv(ccsv: Any, cases: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    gen = Gen(rng)
    rendered = 0
    for _ in range(cases // 4):
        items: list[Any] = []
        last = b""
        for _ in range(rng.choice((1, 2, 4))):
            if last and rng.random() < 0.5:  # the last item again (the C follows its keys: a plan), maybe damaged
                raw = last
            else:
                try:  # a stored item (Python's encoder, as a push stores it) or any JSON text, maybe damaged
                    raw = itemjson.stdlib_encode(json.loads(gen.object(3)))
                except (ValueError, RecursionError):
                    raw = gen.object(3).encode("utf-8", "surrogatepass")
            last = raw
            if rng.random() < 0.5:
                raw = mutate(rng, raw)
            items.append(raw if rng.random() < 0.97 else raw.decode("latin-1"))  # (not bytes: stops the C)
        columns = sorted({k for raw in items if isinstance(raw, bytes) for k in _paths(raw)})
        columns += rng.sample(["a", "b", "a/b", "a/0", "0", "#a", "", "é", "k1", "x" * 300], rng.randint(0, 3))
        columns = list(dict.fromkeys(columns)) if rng.random() < 0.95 else columns + columns[:1]
        if not columns or rng.random() < 0.1:
            rng.shuffle(columns)
        rendered += check_csv(ccsv, items, columns, rng.choice(DELIMITERS))
    return cases // 4, rendered


def fuzz_csv_shapes(ccsv: Any, cases: int, seed: int) -> tuple[int, int]:
    """Runs of items of a few shapes each (one to nine, more than _ccsv.c keeps templates for), each item its
    shape with other leaves (a leaf maybe a container), a tenth of them damaged: the C's templates followed,
    moved between, made and replaced."""
    rng = random.Random(seed)
    gen = Gen(rng)
    rendered = 0
    for _ in range(cases // 8):
        shapes = []
        for _ in range(rng.choice((1, 2, 3, 9))):
            try:
                shape = json.loads(gen.object(3))
            except (ValueError, RecursionError):
                continue
            shapes.append(shape)
        if not shapes:
            continue
        items: list[Any] = []
        for _ in range(rng.choice((4, 8, 24))):
            try:
                raw = itemjson.stdlib_encode(_releaf(rng, gen, rng.choice(shapes)))
            except itemjson.LoneSurrogate:  # (a push refuses it)
                continue
            items.append(mutate(rng, raw) if rng.random() < 0.1 else raw)
        columns = list(dict.fromkeys(k for raw in items for k in _paths(raw)))
        rendered += check_csv(ccsv, items, columns, rng.choice(DELIMITERS))
    return cases // 8, rendered


def _releaf(rng: random.Random, gen: Gen, value: Any) -> Any:
    """``value`` with other leaves (each kept, replaced by another scalar, or now and then by a container)."""
    if isinstance(value, dict):
        return {k: _releaf(rng, gen, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_releaf(rng, gen, v) for v in value]
    r = rng.random()
    if r < 0.3:
        return value
    try:
        return json.loads(gen.value(1) if r > 0.97 else gen.scalar())
    except (ValueError, RecursionError):
        return value


def _paths(raw: bytes) -> list[str]:
    """Some of a stored item's column names (its leaves' paths), where Python can parse it."""
    try:
        rows = list(Shape().iter_rows(itemjson.load(raw)))
    except (ValueError, RecursionError):
        return []
    from openkvs.datasets.columns import cells

    return [k for row in rows for k in cells(row)][:20]


def fuzz_copy(copyrows: Any, cases: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    gen = Gen(rng)
    taken = 0
    for _ in range(cases):
        got = check_take(copyrows, *copy_case(rng, gen))
        taken += isinstance(got, tuple) and got[3] > 0
    return cases, taken


FUZZERS = {"push": (fuzz_push, 0), "csv": (fuzz_csv, 1), "copy": (fuzz_copy, 2), "csv_shapes": (fuzz_csv_shapes, 1)}


# The modules of a build under a directory (``hatch_build.py --sanitize``'s lib) as the package's own: run first in
# the sanitized process, before anything imports the built ones.
LOAD = """
import importlib.util, pathlib, sys
for name in {modules!r}:
    path = next(pathlib.Path({directory!r}, *name.split(".")[:-1]).glob(name.rsplit(".", 1)[1] + ".*.so"))
    spec = importlib.util.spec_from_file_location(name, path)
    sys.modules[name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
"""


def main(cases: int, seed: int, only: str = "") -> None:
    """Fuzz each extension (or ``only`` one): prints what was done, raises Mismatch."""
    import importlib

    modules = [importlib.import_module(name) for name in MODULES]
    for module in modules:
        print(module.__file__, flush=True)
    push_items._cpush = modules[0]
    for name, (fuzz, index) in FUZZERS.items():
        if only and name != only:
            continue
        t = time.monotonic()
        done, taken = fuzz(modules[index], cases, seed)
        print(f"{name}: {done} inputs, {taken} taken by the C, {time.monotonic() - t:.0f} s", flush=True)


# -- tests ---------------------------------------------------------------------------------------------------------

CASES = int(os.environ.get("OPENKVS_TEST_FUZZ_CASES") or 0)


@pytest.mark.parametrize("name", list(FUZZERS))
def test_damaged_inputs_give_what_python_gives(name: str) -> None:
    """The driver on the ordinary build (OPENKVS_TEST_FUZZ_CASES inputs, else a few thousand)."""
    module = pytest.importorskip(MODULES[FUZZERS[name][1]])
    saved = push_items._cpush
    try:
        if name == "push":
            push_items._cpush = module
        done, taken = FUZZERS[name][0](module, CASES or 4000, seed=20261205)
    finally:
        push_items._cpush = saved
    assert done > 0 and taken > done // 10  # (the C took a fair share: the oracle ran)


@pytest.mark.skipif(not os.environ.get("OPENKVS_TEST_ASAN"), reason="OPENKVS_TEST_ASAN names no sanitized build")
@pytest.mark.timeout(3600)  # (the subprocess's own; pytest's 300 s ends a few hundred thousand inputs under ASan)
@pytest.mark.parametrize("name", list(FUZZERS))
def test_under_asan(name: str) -> None:
    """The driver in a process with ASan's runtime, the modules of the sanitized build (see the module's
    docstring): a sanitizer's report ends it with its trace on stderr."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    env = {**os.environ, "LD_PRELOAD": libasan, "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86", "UBSAN_OPTIONS": "print_stacktrace=1",
           "PYTHONPATH": str(ROOT)}
    code = LOAD.format(modules=MODULES, directory=os.environ["OPENKVS_TEST_ASAN"]) + (
        f"from tests.datasets.test_c_fuzz import main; main({CASES or 20000}, 20261205, {name!r})")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-20000:]
    built = done.stdout.splitlines()
    assert all(line.startswith(os.environ["OPENKVS_TEST_ASAN"]) for line in built[:3]), built  # the sanitized ones
    assert built[3].startswith(name + ":"), built


def _kept(call: Any, *watched: Any) -> tuple[list[int], int]:
    """What 10,000 calls keep: the change of each watched object's reference count, and of traced memory."""
    for _ in range(200):
        call()
    gc.collect()
    before_counts = [sys.getrefcount(x) for x in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            call()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    after_counts = [sys.getrefcount(x) for x in watched]
    return [a - b for a, b in zip(after_counts, before_counts, strict=True)], after - before


def test_split_keeps_nothing() -> None:
    cpush = pytest.importorskip(MODULES[0])
    body = b'[{"a":1,"b":[1.5,"\\u00e9",{"c":null}]},{"#x":true}]'
    bad = b'[{"a":1},{"a":1e400}]'
    for raw in (body, bad, bytearray(body)):
        deltas, grown = _kept(lambda raw=raw: cpush.split(raw), raw)
        assert deltas == [0] and grown < 4096, (raw, deltas, grown)
    with pytest.raises(TypeError):
        cpush.split("[]")


def test_lines_keep_nothing() -> None:
    ccsv = pytest.importorskip(MODULES[1])
    items = [b'{"a":1,"b":"x,y"}', b'{"a":1E5}', b'{"a":[1,2],"b":null}', b"not json"]
    columns = ["a", "b", "a/0"]
    table = ccsv.prepare(columns, ",")
    watched = (table, *items, columns)
    for start in (0, 2, 3, 4):
        deltas, grown = _kept(lambda start=start: ccsv.lines(table, items, start), *watched)
        assert deltas == [0] * len(watched) and grown < 4096, (start, deltas, grown)
    deltas, grown = _kept(lambda: ccsv.prepare(columns, ";"), columns)
    assert deltas == [0] and grown < 4096
    for bad in ([1], ["a", "\ud800"], ["a", "a"], []):
        assert ccsv.prepare(bad, ",") is None
    with pytest.raises(IndexError):
        ccsv.lines(table, items, 5)


def test_copy_rows_keep_nothing() -> None:
    copyrows = pytest.importorskip(MODULES[2])
    data = copy_body([(1, 2, b"abc\nd"), (2, 1, b"ef")], True)
    sep = b",\n"
    calls = [lambda: copyrows.take(data, 0, 0, 0, 3, False, sep, 0, 100, 1000),  # whole rows, split rows
             lambda: copyrows.take(data, 0, 0, 0, 3, False, b"\n", 0, 100, 1000),
             lambda: copyrows.take(data, 0, 1, 1, 3, False, None, 0, 100, 1000),
             lambda: copyrows.take(data[::-1], 0, 2, 0, 3, True, sep, 0, 100, 1000),  # refused
             lambda: copyrows.take(data + b"x", 0, 0, 0, 3, False, sep, 0, 100, 1000),
             lambda: copyrows.take(data, 0, 0, 0, 3, False, sep, 0, 1, 4)]  # full
    for call in calls:
        deltas, grown = _kept(lambda call=call: _swallow(call), data, sep)
        assert deltas == [0, 0] and grown < 4096, (deltas, grown)


def _swallow(call: Any) -> Any:
    try:
        return call()
    except ValueError:
        return None


# -- structured: every cut, paths at the column's length, row lengths near 2**31 and 2**32 ------------------------


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_every_cut_of_a_body(rng: random.Random) -> None:
    """A generated body cut at every offset (and each prefix with its last byte doubled): what Python gives."""
    cpush = pytest.importorskip(MODULES[0])
    raw = Gen(rng).body().encode("utf-8", "surrogatepass")[:400]
    for k in range(len(raw) + 1):
        check_push(cpush, raw[:k])
        check_push(cpush, raw[:k] + raw[k - 1 : k] + raw[k:])


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from(DELIMITERS))
def test_every_cut_of_a_stored_item(rng: random.Random, delimiter: str) -> None:
    """A stored item cut at every offset, before the whole one: the C renders the cut only where Python reads
    the same line from it, and goes on with the whole item after it."""
    ccsv = pytest.importorskip(MODULES[1])
    gen = Gen(rng)
    try:
        raw = itemjson.stdlib_encode(json.loads(gen.object(2)))[:300]
    except (ValueError, RecursionError):
        raw = gen.object(2).encode("utf-8", "surrogatepass")[:300]
    columns = list(dict.fromkeys(_paths(raw))) or ["a"]
    for k in range(len(raw) + 1):
        check_csv(ccsv, [raw[:k], raw], columns, delimiter)


@pytest.mark.parametrize("escape", [False, True])
def test_paths_around_a_columns_length(escape: bool) -> None:
    """Keys whose path is one byte shorter than the longest column, as long, one longer, written plain or each
    character escaped (the text then longer than what it decodes to: the C's path buffer holds the decoded)."""
    ccsv = pytest.importorskip(MODULES[1])
    for n in (1, 7, 8, 9, 63, 64, 255, 256, 257):
        columns = ["a/" + "k" * n, "a/" + "k" * n + "/0", "b"]
        for m in (n - 1, n, n + 1, n + 2):
            key = "".join("\\u006b" if escape else "k" for _ in range(m))
            for value in ("1", "[2,3]", '{"0":4}', '"x"'):
                raw = b'{"a":{"' + key.encode() + b'":' + value.encode() + b'},"b":"\\u00e9"}'
                assert check_csv(ccsv, [raw], columns, ",") == 1


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from([None, b"\n", b",", b"", b",\n"]), st.booleans())
def test_every_cut_of_a_copy(rng: random.Random, sep: bytes | None, desc: bool) -> None:
    """A COPY of packed rows cut at every offset (a row cut anywhere, its head included: MORE, the rows before it
    taken), from every row's start, with room and bytes for some of it: what the reference gives."""
    copyrows = pytest.importorskip(MODULES[2])
    gen = Gen(rng)
    items = [gen.object(1).encode("utf-8", "surrogatepass").replace(b"\n", b" ") for _ in range(rng.randint(1, 9))]
    rows = packed_rows(items, 0, rng)
    data = copy_body(rows[::-1] if desc else rows, True)
    starts = [0]
    for _idx, _n, d in rows[::-1] if desc else rows:
        starts.append(starts[-1] + ROW.size + len(d))
    room, max_bytes = rng.choice([(1000, 1 << 20), (2, 1 << 20), (1000, 40), (1, 1)])
    nxt = len(items) - 1 if desc else 0
    for k in range(len(data) + 1):
        got = check_take(copyrows, data[:k], 0, nxt, 0, len(items), desc, sep, 0, room, max_bytes)
        assert isinstance(got, tuple) and (got[5] != ENDED or k == len(data)), got  # (a cut row: not refused)
        for s in starts[:-1]:
            if s <= k:
                check_take(copyrows, data[:k], s, rng.randrange(len(items)), 0, len(items), desc, sep, 0, room,
                           max_bytes)


BIG_LENGTHS = [2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1, 2**32 - 2, 2**31 - 7, 2**16, 2**15, 0xFFFF, 0x8000]


@pytest.mark.parametrize("length", BIG_LENGTHS)
def test_row_lengths_near_the_int_limits(length: int) -> None:
    """A packed row's data length, n, or its fields' widths (signed 32-bit ints) at and past 2**31 and 2**32 with
    a few bytes of data: refused, or a row cut at the data's end (MORE), never a read past it; the field count
    likewise."""
    copyrows = pytest.importorskip(MODULES[2])
    first = copy_body([(1, 2, b"ok\nno")], False)
    for fields in (3, -1, 0, 1, 0x7FFF, -0x8000):
        for at in range(4):  # which of the 32-bit fields is big: idx's width, n's width, n, the data's length
            head = [8, 4, 2, length]
            head[at] = length
            field = struct.pack("!hIqIII", fields, head[0], 3, head[1], head[2], head[3])
            for rest in (b"", b"abc\nd", b"\xff\xff"):
                data = first + field + rest
                for sep in (None, b",", b"\n"):
                    for lead, room, max_bytes in ((0, 10, 1 << 40), (5, 10, 1 << 40), (0, 1, 1), (0, 10, 3)):
                        check_take(copyrows, data, 0, 0, 0, 10, False, sep, lead, room, max_bytes)
                        check_take(copyrows, data, len(first), 2, 0, 10, False, sep, lead, room, max_bytes)


def test_ranges_at_the_int64_limits() -> None:
    """``next``, ``lo``, ``hi`` and a row's idx at and near 2**63 and -2**63: what the reference gives (under
    UBSan, see the module's docstring: no signed overflow; ``hi - 1`` at -2**63 was one)."""
    copyrows = pytest.importorskip(MODULES[2])
    top, bottom = 2**63 - 1, -(2**63)
    ends = [bottom, bottom + 1, -1, 0, 1, 2, top - 1, top]
    for rows in ([(2, 3, b"a\nb\nc")], [(top, 2, b"a\nb")], [(1, 2, b"a\nb"), (top, 1, b"z")]):
        for desc, nxt, lo, hi in itertools.product((False, True), ends, ends, ends):
            for sep in (b",", b"\n", None):
                data = copy_body(rows[::-1] if desc else rows, True)
                check_take(copyrows, data, 0, nxt, lo, hi, desc, sep, 0, 10, 100)


def test_a_negative_or_huge_argument_is_refused() -> None:
    """take's ``lead`` (the bytes of the piece so far) below 0 or past any piece's size, ``room`` or
    ``max_bytes`` below 0: a ValueError (only a caller's error passes one: datasets.py passes ``held``, a piece's
    remaining count and its size). Before: a piece of empty items after a negative lead was written past the
    bytes object made for it (its size counted one separator fewer than the C wrote), and the sums of a lead near
    2**63 overflowed."""
    copyrows = pytest.importorskip(MODULES[2])
    data = copy_body([(0, 1, b""), (1, 1, b""), (2, 1, b"abc")], True)
    for lead, room, max_bytes in ((-1, 10, 100), (-5, 10, 100), (-(2**62), 10, 100), (MAX_LEAD + 1, 10, 100),
                                  (sys.maxsize, 10, 2**62), (0, -1, 100), (0, 10, -1), (0, -sys.maxsize - 1, 100)):
        for sep, desc, nxt in ((b",", False, 0), (b",", True, 2), (None, False, 0), (b"\n", False, 0)):
            rows = data if not desc else copy_body([(2, 1, b"abc"), (1, 1, b""), (0, 1, b"")], True)
            with pytest.raises(ValueError):
                copyrows.take(rows, 0, nxt, 0, 3, desc, sep, lead, room, max_bytes)
    assert copyrows.take(data, 0, 0, 0, 3, False, b",", MAX_LEAD, 10, sys.maxsize)[0] == b",,,abc"


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("sep", [b",", b"\n", b"", None])
def test_empty_items_are_joined_like_any(sep: bytes | None, desc: bool) -> None:
    """Items of no bytes (never a stored one, but a damaged row's): each after a separator all the same, the
    size counting what is written; and an empty item does not make the piece empty for the next one's budget."""
    copyrows = pytest.importorskip(MODULES[2])
    rows = [(0, 1, b""), (2, 2, b"\n"), (3, 1, b"abcdef")]
    data = copy_body(rows[::-1] if desc else rows, True)
    nxt = 3 if desc else 0
    got = check_take(copyrows, data, 0, nxt, 0, 4, desc, sep, 0, 100, 1000)
    want = [b"", b"", b"", b"abcdef"][::-1 if desc else 1]
    joined = want if sep is None else sep.join(want)
    assert got[0] == joined and got[3:] == (4, len(b"".join(want) if sep is None else joined), ENDED)
    if not desc:  # 3 empty items, then 6 bytes past a budget of 4: the piece is full, not a piece of its own
        assert check_take(copyrows, data, 0, 0, 0, 4, False, sep, 0, 100, 4)[3:] == (3, 2 * len(sep or b""), FULL)


def test_lines_in_threads_at_once() -> None:
    """_ccsv.lines walks without the GIL: threads rendering with one table at once (the export's threads do) each
    get what one thread alone gets."""
    import concurrent.futures

    ccsv = pytest.importorskip(MODULES[1])
    rng = random.Random(5)
    gen = Gen(rng)
    batches = []
    for _ in range(8):
        batch = []
        for _ in range(200):
            try:
                batch.append(itemjson.stdlib_encode(json.loads(gen.object(2))))
            except (ValueError, RecursionError):
                batch.append(b'{"a":1E5}')
        batches.append(batch)
    columns = sorted({k for batch in batches for raw in batch[:20] for k in _paths(raw)})
    table = ccsv.prepare(columns, ",")
    alone = [ccsv.lines(table, batch, 0) for batch in batches]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            assert list(pool.map(lambda batch: ccsv.lines(table, batch, 0), batches)) == alone
