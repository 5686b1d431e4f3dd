"""The C renderer of csv lines (openkvs/datasets/_ccsv.c) against the Python path it stands in for: for stored items
of any content, in any form Python parses, ``CsvRenderer.stored_rows`` writes the bytes of ``CsvRenderer.rows`` of
the parsed items (``itemjson.load``, ``Shape.iter_rows``); the C renders every item our encoders write, and leaves
to Python each item it can't be sure of (and anything that isn't JSON) without writing a byte of it. The same at
the HTTP level is in tests/api/test_datasets_csv.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs.datasets import formats, itemjson
from openkvs.datasets.pipeline import Shape
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples
from tests.datasets.test_csv_rows import columns_for

try:
    from openkvs.datasets import _ccsv
except ImportError:  # a failure, not a skip: CI and `make install` have a compiler, and this is what they test
    pytest.fail("openkvs/datasets/_ccsv.c is not built: `make install` (pip install -e .) builds it", pytrace=False)

# Text that csv quoting, JSON escapes, UTF-8 and the delimiters care about, and any other code point but lone
# surrogates (stored items have none: a push refuses them).
SPECIAL = st.sampled_from(['"', ",", ";", "\r", "\n", "\r\n", "\\", "/", "\t", "\x00", "\x1f", "\x7f", "\b", "\f",
                           "é", "€", "😀", "\u2028", "\ufeff", "a/b", "1", "e", "-", ".", "|", " ", "''", ""])
TEXT = st.lists(SPECIAL | st.text(st.characters(codec="utf-8"), max_size=4), max_size=4).map("".join)
KEYS = st.sampled_from(["a", "b", "a/b", "a/0", "0", "#h", 'q"k', "c,d", "x\ny", "\r", "é", "😀", "\\", "", "u"]) | st.text(max_size=3)
NUMBERS = (
    st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1, 10**19, -(10**30), 0, -1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e16, 1e-05, 1e-07, 0.0001, 5e-324, 1e22, 1.5e300, 0.1 + 0.2, 123456789012345678.0,
                       2.2250738585072014e-308, 1.7976931348623157e308, 9.2233720368547758e18, 1234567890123456.0])
)
SCALAR = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=14)
ITEMS = st.lists(st.dictionaries(KEYS, JSON, max_size=5), max_size=6)
# Every one query.py takes is one character; the C does the ASCII ones (é: Python's).
DELIMITERS = st.sampled_from([",", ";", "\t", "|", "1", "0", " ", "'", "\x00", "e", ".", "-", "+", "t", "\\", "/", "é"])

# The forms of one value that Python parses back to it: what a push stores (json's compact form; orjson's where
# the push's checks let it), and forms no push writes but the C must get right or leave: \u escapes (surrogate
# pairs), whitespace, orjson's own float texts (1e-5 for 1e-05: not Python's repr, so left to Python).
FORMS = {
    "stored": itemjson.stdlib_encode,
    "ascii": lambda v: json.dumps(v).encode(),
    "indented": lambda v: json.dumps(v, indent=1, ensure_ascii=False).encode(),
    "orjson": orjson.dumps,
}
FAITHFUL = ("stored", "ascii", "indented")  # number texts are Python's repr: the C renders every item


def csv_renderer(columns, delimiter=",", **params):
    r = formats.renderer(parse_items_query({"format": "csv", "delimiter": delimiter, **params}, None),
                         label="l", dataset_id="i", public_url="http://x")
    r.start(columns)
    return r


def rows_of(raw):
    return list(Shape().iter_rows(itemjson.load(raw)))


def python_path(batch, columns, delimiter=","):
    """The reference: the export's general path, each stored item parsed, then rendered."""
    return csv_renderer(columns, delimiter).rows([row for raw in batch for row in rows_of(raw)])


@settings(max_examples=examples(500), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, extra=st.lists(KEYS, max_size=3), delimiter=DELIMITERS, form=st.sampled_from(sorted(FORMS)),
       data=st.data())
@example(items=[{"a": None}], extra=[], delimiter=",", form="stored", data=None)  # one empty field: ""
@example(items=[{"a": '"', "b": ""}], extra=[], delimiter=",", form="stored", data=None)
@example(items=[{"a/b": 1, "a": {"b": None}}, {"a": {"b": 2}, "a/b": {}}], extra=[], delimiter=",", form="stored", data=None)
@example(items=[{"a": 1e16, "b": -0.0, "c": 5e-324, "d": 10**30, "e": True}], extra=[], delimiter="e", form="stored", data=None)
@example(items=[{"😀": "😀\u2028\x00", 'q"k': "x\ny"}], extra=[], delimiter="\x00", form="ascii", data=None)
def test_c_lines_are_the_python_paths(items, extra, delimiter, form, data):
    encode = FORMS[form]
    try:
        batch = [encode(item) for item in items]
    except (TypeError, orjson.JSONEncodeError):  # orjson: an int past 64 bits
        return
    columns = columns_for(items, extra, data)
    r = csv_renderer(columns, delimiter)
    got = r.stored_rows(batch, rows_of)
    assert got == python_path(batch, columns, delimiter)
    table = _ccsv.prepare(columns, delimiter)
    assert (table is None) == (delimiter == "é")
    if table is not None and form in FAITHFUL:
        assert _ccsv.lines(table, batch, 0) == (got, len(batch))  # no item left to Python


# Long text: _ccsv.c scans a string 16 bytes at a time (SSE2), then 8, then byte by byte, so a character that
# matters is checked at every offset around those steps, in keys and values, raw and as an escape.
LONG_SPECIALS = ['"', "\\", ",", ";", "\t", "\n", "\x00", "\x1f", "\x7f", "é", "€", "😀", "\u2028", " "]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", " "])
@pytest.mark.parametrize("special", LONG_SPECIALS)
def test_a_special_character_anywhere_in_a_long_string(special, delimiter):
    items = []
    for at in range(40):
        text = "x" * at + special + "y" * (39 - at)
        items.append({"a": text, text: at, "b": "z" * at})
    columns = sorted({key for item in items for key in item})
    table = _ccsv.prepare(columns, delimiter)
    for form in FAITHFUL:
        batch = [FORMS[form](item) for item in items]
        assert _ccsv.lines(table, batch, 0) == (python_path(batch, columns, delimiter), len(batch)), form


# Float texts of every form: Python's repr, other formats of the same floats (more or fewer digits, trailing zeros,
# exponents), and digits at random (17-digit decimals that don't round trip, subnormals, overflow).
FLOAT_FORMS = ["r", ".15g", ".16g", ".17g", ".1f", ".4f", ".20f", ".3e", ".16e", "E"]
FLOAT_TEXTS = (
    st.tuples(st.floats(allow_nan=False, allow_infinity=False)
              | st.floats(min_value=-1e17, max_value=1e17) | st.floats(min_value=-1e-3, max_value=1e-3),
              st.sampled_from(FLOAT_FORMS)).map(lambda fv: repr(fv[0]) if fv[1] == "r" else format(fv[0], fv[1]))
    | st.from_regex(r"\A-?(0|[1-9][0-9]{0,17})\.[0-9]{1,19}([eE][-+]?[0-9]{1,3})?\Z")
    | st.from_regex(r"\A-?(0|[1-9][0-9]{0,2})[eE][-+]?[0-9]{1,3}\Z")
).filter(lambda text: re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?", text) and not text.lstrip("-").isdigit())


@settings(max_examples=examples(3000))
@given(text=FLOAT_TEXTS)
@example(text="0.0001")
@example(text="0.00001")
@example(text="1e-05")
@example(text="123456789012345.0")
@example(text="1234567890123456.0")
@example(text="999999999999999.9")
@example(text="0.000123456789012345")
@example(text="0.30000000000000004")
@example(text="9007199254740993.0")  # 16 significant digits that are not repr: 2**53 + 1 rounds to 2**53
@example(text="92830388.36859574")
@example(text="0.5418942328059832")
@example(text="0.007917366625729731")
@example(text="-0.0")
@example(text="0.00")
@example(text="5e-324")
@example(text="4e-324")
@example(text="1e+16")
@example(text="1.7976931348623157e+308")
@example(text="1e308")
def test_a_float_is_rendered_when_its_text_is_pythons_repr(text):
    """A float's text in a column: written as it is exactly when it is ``repr`` of its value (what the Python path
    writes), else the item is left to Python."""
    got = _ccsv.lines(_ccsv.prepare(["a"], ","), [b'{"a":' + text.encode() + b"}"], 0)
    if repr(float(text)) == text:
        assert got == (text.encode() + b"\r\n", 1)
    else:
        assert got == (b"", 0)


# Items the C leaves to Python (or Python fails on too): each alone in a batch, and between items it renders.
LEFT = [
    b"[1]",  # not an object: no row
    b'"x"',
    b'{"a":1E5}',  # numbers whose text is not Python's repr of their value
    b'{"a":1e5}',
    b'{"a":1e-5}',
    b'{"a":1.0e+16}',
    b'{"a":1.50}',
    b'{"a":0.10000000000000001}',
    b'{"a":1e400}',
    b'{"a":-1e400}',
    b'{"a":-0}',
    b'{"a":NaN}',
    b'{"a":-Infinity}',
    b'{"a":' + b"7" * 700 + b"}",  # past the least int/str limit Python may be set to
    b'{"a":"\\ud800"}',  # lone surrogates
    b'{"a":"\\udc00x"}',
    b'{"a":"\\ud83dx"}',
    b'{"a":"\xed\xa0\x80"}',  # a surrogate in UTF-8: json.loads takes it (surrogatepass), the line has U+FFFD
    b'{"a":1,"a":2}',  # duplicate keys: the dict keeps the last value at the first key's place
    b'{"a":{"b":1},"a":{"c":2}}',
    b'{"a":{"b":{"c":1,"d":2,"c":3}}}',
    b'{"a":' + b"[" * 300 + b"]" * 300 + b"}",  # deeper than the C goes
    b'\xef\xbb\xbf{"a":1}',  # a BOM: json.loads takes it
]
BROKEN = [  # not JSON: Python raises; the C must not render them
    b"",
    b"{",
    b'{"a":1} x',
    b'{"a":1}}',
    b'{"a":01}',
    b'{"a":1.}',
    b'{"a":-}',
    b'{"a":.5}',
    b'{"a":1e}',
    b'{"a":tru}',
    b'{"a":nul}',
    b'{"a":"x\x01"}',
    b'{"a":"\xff"}',
    b'{"a":"\xc3"}',
    b'{"a":"\xe2\x82"}',
    b'{"a":"\xf0\x9f\x98"}',
    b'{"a":"\xc0\x80"}',  # overlong
    b'{"a":"\xf4\x90\x80\x80"}',  # past U+10FFFF
    b'{"a":"\\u12"}',
    b'{"a":"\\u12g4"}',
    b'{"a":"\\x"}',
    b'{"a":"abc',
    b'{"a":"abc\\',
    b'{"a" 1}',
    b'{"a":1,}',
    b'{a:1}',
    b'{"a":[1,]}',
    b'{"a":[1 2]}',
    b'{"a":{"b":1}',
]
COLUMNS = ["a", "a/b", "a/c", "a/b/c", "a/b/d", "a/0"]


@pytest.mark.parametrize("raw", LEFT)
def test_left_to_python(raw):
    table = _ccsv.prepare(COLUMNS, ",")
    assert _ccsv.lines(table, [raw], 0) == (b"", 0)
    good = b'{"a":"x,y","a/b":1.5}'
    batch = [good, raw, good]
    assert _ccsv.lines(table, batch, 0) == (b'"x,y",1.5,,,,\r\n', 1)  # stops at it
    assert _ccsv.lines(table, batch, 2) == (b'"x,y",1.5,,,,\r\n', 3)  # goes on after it
    assert csv_renderer(COLUMNS).stored_rows(batch, rows_of) == python_path(batch, COLUMNS)


@pytest.mark.parametrize("raw", BROKEN)
def test_not_json_is_never_rendered(raw):
    with pytest.raises(ValueError):
        itemjson.load(raw)
    assert _ccsv.lines(_ccsv.prepare(COLUMNS, ","), [b'{"a":1}', raw], 0) == (b"1,,,,,\r\n", 1)


@settings(max_examples=examples(1000), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3), st.binary(max_size=3)),
                                  min_size=1, max_size=3))
def test_damaged_bytes_are_rendered_as_python_does_or_left(items, cuts):
    """Stored bytes damaged at random (bytes replaced, dropped, inserted): the C never reads past them or crashes,
    and what it renders is what Python renders of what it parses; what Python can't parse, the C leaves."""
    columns = columns_for(items, [], None)
    table = _ccsv.prepare(columns, ",")
    batch = []
    for item in items:
        raw = itemjson.stdlib_encode(item)
        for at, drop, put in cuts:
            at %= len(raw) + 1
            raw = raw[:at] + put + raw[at + drop:]
        batch.append(raw)
    at = 0
    while at < len(batch):
        got, stop = _ccsv.lines(table, batch, at)
        assert got == python_path(batch[at:stop], columns)
        at = stop + 1


def test_tables_the_c_does_not_take():
    assert _ccsv.prepare(["a"], "é") is None  # a delimiter of more than one UTF-8 byte
    assert _ccsv.prepare(["a", "b", "a"], ",") is None  # a repeated column
    assert _ccsv.prepare(["a\ud800"], ",") is None  # no UTF-8 form
    assert _ccsv.prepare([], ",") is None
    assert _ccsv.prepare(["a"], ",") is not None


def test_not_bytes_are_left_to_python():
    table = _ccsv.prepare(["a"], ",")
    assert _ccsv.lines(table, [b'{"a":1}', bytearray(b'{"a":2}'), b'{"a":3}'], 0) == (b"1\r\n", 1)
    with pytest.raises(IndexError):
        _ccsv.lines(table, [b"{}"], 2)


def test_the_export_renders_without_the_extension():
    """Where no compiler was at install there is no _ccsv: formats.py imports without it and the export's rows
    (api/items.py _Rows) are the Python path's. In a process of its own, with the import blocked."""
    script = textwrap.dedent("""
        import sys
        sys.modules["openkvs.datasets._ccsv"] = None  # import raises ImportError, as when it was never built
        from openkvs.api.items import _Rows
        from openkvs.datasets import formats, itemjson
        from openkvs.datasets.pipeline import Shape
        from openkvs.datasets.query import parse_items_query
        assert formats._ccsv is None
        batch = [b'{"a":"x,y","b":[1,{"c":null}]}', b'{"b":[true],"a":"q\\\\"r"}', b'[1]', b'{"a":1e16}']
        columns = ["a", "b/0", "b/1/c"]
        def renderer():
            r = formats.renderer(parse_items_query({"format": "csv"}, None), label="l", dataset_id="i",
                                 public_url="http://x")
            r.start(columns)
            return r
        rows, pieces = _Rows(renderer(), Shape(), batch), []
        while (piece := rows.next_piece()) is not None:
            pieces.append(piece)
        got = b"".join(pieces)
        assert got == renderer().rows([row for raw in batch for row in Shape().iter_rows(itemjson.load(raw))])
        sys.stdout.buffer.write(got)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b'"x,y",1,\r\n"q""r",true,\r\n1e+16,,\r\n'


def test_an_object_of_many_keys_is_left_to_python():
    """Each key of an object is checked against its earlier ones (a repeated key is Python's to render): pairwise,
    so one item of 500,000 keys took 47 s of CPU in the C walk, 0.6 s in Python. Past 256 keys an object goes to
    Python, with the same lines."""
    wide = {"url": "u", "o": {f"k{i}": i for i in range(300)}}
    fits = {"url": "v", "o": {f"k{i}": i for i in range(256)}}
    batch = [orjson.dumps(item) for item in (fits, wide, fits)]
    columns = ["url", "o/k0", "o/k299"]
    table = _ccsv.prepare(columns, ",")
    assert _ccsv.lines(table, batch, 0)[1] == 1  # the second item is left to Python
    assert _ccsv.lines(table, batch, 2) == (b"v,0,\r\n", 3)
    assert csv_renderer(columns, ",").stored_rows(batch, rows_of) == python_path(batch, columns, ",") == (
        b"v,0,\r\nu,0,299\r\nv,0,\r\n")


# -- the plan: _ccsv.c follows the steps (keys, elements) of the last item walked, comparing each key's bytes with
# the remembered ones, and walks generally from the first step that differs. Each sequence below is rendered from
# every start (a plan is made anew in each call, from its first item) and compared with the Python path.


def assert_lines_are_pythons(items, columns, delimiter=","):
    batch = [item if isinstance(item, bytes) else itemjson.stdlib_encode(item) for item in items]
    table = _ccsv.prepare(columns, delimiter)
    for start in range(len(batch)):
        got, stop = _ccsv.lines(table, batch, start)
        assert got == python_path(batch[start:stop], columns, delimiter), (start, stop)
        if any(b"\n" in raw for raw in batch):  # (not one piece of joined items: they hold none)
            continue
        joined = b"\n".join(batch[start:])
        got_joined, at = _ccsv.joined_lines(table, joined, 0)
        assert got_joined == got
        assert at == (len(joined) if stop == len(batch) else sum(len(raw) + 1 for raw in batch[start:stop]))
    assert csv_renderer(columns, delimiter).stored_rows(batch, rows_of) == python_path(batch, columns, delimiter)
    return _ccsv.lines(table, batch, 0)[1]  # how many the C rendered from the first


PLAN_SEQUENCES = {
    "same keys, another order": [{"a": 1, "b": 2, "c": 3}, {"b": "x", "a": "y", "c": "z"}, {"c": 1, "b": 2, "a": 3},
                                 {"a": 4, "b": 5, "c": 6}],
    "a key missing, one extra": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "c": 6}, {"a": 7, "b": 8, "x": 0, "c": 9},
                                 {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3, "d": 4}],
    "a key a prefix of the other": [{"ab": 1, "abc": 2}, {"abc": 3, "ab": 4}, {"a": 5, "ab": 6}, {"abcd": 7},
                                    {"ab": 8}, {"abc": 9}, {"": 10}, {"ab": 11}],
    "value type changes": [{"a": {"b": 1}, "c": 2}, {"a": 1, "c": 3}, {"a": [1, 2], "c": 4}, {"a": "s", "c": 5},
                           {"a": {"b": {"d": 1}}, "c": 6}, {"a": {}, "c": 7}, {"a": [], "c": 8},
                           {"a": {"b": 9}, "c": 10}, {"a": [[3]], "c": 11}, {"a": None, "c": 12}],
    # a path learnt as a container's, then a leaf's: its column is looked up then, its path written from the keys
    "container, then scalar": [{"x": {"y": {"z": 1}}, "w": 0}, {"x": {"y": 5}, "w": 1}, {"x": {"y": {"z": 2}}},
                               {"x": {"y": "t"}}, {"x": {"y": [7]}}, {"x": {"y": True}}],
    "inner keys change": [{"s": {"a": 1, "b": 2}, "t": 0}, {"s": {"a": 3, "c": 4}, "t": 5},
                          {"s": {"b": 6, "a": 7}, "t": 8}, {"s": {"a": 1, "b": 2, "c": 3}, "t": 9},
                          {"s": {"a": {"b": 1}}, "t": 1}, {"s": {"a": 1, "b": 2}, "t": 0}],
    "alternating": [{"a": 1, "b": {"c": 2}}, {"b": {"c": 3}, "a": 4}] * 4,
    "arrays": [{"t": [1, 2, 3]}, {"t": [4, 5]}, {"t": [6, 7, 8, 9]}, {"t": [[1], 2]}, {"t": [{"a": 1}]},
               {"t": {"0": 5, "1": 6}}, {"t": [5, 6]}, {"t": [[1, 2]]}, {"t": [[1], [2]]}, {"t": []}, {"t": [7]}],
    "escaped keys": [b'{"a":1,"b":2}', b'{"\\u0061":3,"b":4}', b'{"\\u0061":5,"b":6}', b'{"a":7,"\\u0062":8}',
                     b'{"a":9,"b":10}', b'{"a\\"b":1,"a":2}', b'{"a\\"b":3,"a":4}',
                     # a key with escapes is decoded into scratch, which the next item's strings overwrite
                     b'{"x":"\\u00e9","\\u0061":1}', b'{"x":"\\u0062\\u0062\\u0062","b":5}'],
    "whitespace": [b'{"a":1,"b":{"c":2}}', b'{ "a" : 1 , "b" : { "c" : 3 } }', b'{"a":1,"b":{"c":4}}',
                   b'{"a"\t:\r5,\r"b":{"c"  :6}}', b'{"a":1,\n"b":{"c":7}}'],
    "long keys": [{"description of it": 1, "k" * 40: 2, "ab" * 8: 3}, {"description of iT": 4, "k" * 40: 5},
                  {"description of it": 6, "k" * 39 + "K": 7, "ab" * 8: 8},
                  {"description of it": 9, "k" * 40: 10, "ab" * 7 + "aB": 11}],
    # paths longer than any column (not kept), and a walk leaving the plan inside one
    # a template's leaves of every kind, in turn at the place of each other, and containers there
    "leaf kinds": [{"a": True, "b": "s"}, {"a": False, "b": "s"}, {"a": None, "b": "s"}, {"a": "t", "b": "s"},
                   {"a": 1.5, "b": "s"}, {"a": -2, "b": 1e16}, {"a": True, "b": None}, {"a": {}, "b": "s"},
                   {"a": [], "b": "s"}, {"a": [None], "b": "s"}, {"a": {"x": True}, "b": "s"}, {"a": "n", "b": 0}],
    # shapes of optional keys, in turn: each item follows one of several templates, moving from one to another
    # where the bytes before are the same (a key left out, a container where a leaf was, more keys at the end)
    "optional keys": [{"a": 1, "b": "x", "c": True}, {"a": 2, "c": False}, {"a": 3, "b": "y", "c": None},
                      {"b": "z", "c": 1}, {"a": 4, "c": 2}, {"a": 5, "b": "w", "c": 3}, {"a": 6},
                      {"a": 7, "b": "v"}, {"a": 8, "b": "u", "c": 4, "d": 5}, {"a": 9, "c": 6}],
    "a container where a leaf was": [{"a": {"x": 1}, "b": 2}, {"a": 1, "b": 2}, {"a": {"x": 3}, "b": 4},
                                     {"a": 5, "b": 6}, {"a": [7], "b": 8}, {"a": {}, "b": 9}, {"a": [], "b": 1},
                                     {"a": {"x": {"y": 1}}, "b": 2}, {"a": {"x": 3}, "b": 4}, {"a": 5}],
    "more shapes than templates": [{f"k{i}": i, "a": i} for i in range(12)] * 3,
    "one path twice": [{"a/b": 1, "a": {"b": 2}}, {"a": {"b": 3}, "a/b": 4}, {"a/b": 5, "a": {"c": 6}},
                       {"a/b": 7, "a": {"b": None}}, {"a": {"b": 8}, "a/b": None}, {"a/b": 9, "a": {"b": 10}}],
    "paths too long": [{"p": {"q" * 30: {"r": 1}, "x": 2}}, {"p": {"q" * 30: {"r": 3, "s": 4}, "x": 5}},
                       {"p": {"q" * 30: {"s": 6}, "x": 7}}, {"p": {"x": 8}}],
}


@pytest.mark.parametrize("name", sorted(PLAN_SEQUENCES))
def test_shapes_that_change_from_item_to_item(name):
    items = PLAN_SEQUENCES[name]
    parsed = [itemjson.load(item) if isinstance(item, bytes) else item for item in items]
    columns = columns_for(parsed, ["ab", "abc", "a/b/d", "t/0/0", "x/y"], None)
    assert assert_lines_are_pythons(items, columns) == len(items)
    assert assert_lines_are_pythons(items, list(reversed(columns)), ";") == len(items)


@pytest.mark.parametrize("n", range(1, 20))
def test_a_key_that_differs_from_the_plans_in_one_byte(n):
    """The plan compares a key's bytes with the remembered key's (8, 4 or 1 at a time, by its length): a key that
    differs in any one byte is another key."""
    key = "".join(chr(ord("a") + i) for i in range(n))
    items = [{key: 0}]
    for i in range(n):
        items += [{key[:i] + "_" + key[i + 1:]: i + 1}, {key: -i}]
    columns = list(dict.fromkeys(k for item in items for k in item))
    assert assert_lines_are_pythons(items, columns) == len(items)


def test_fallbacks_right_after_a_plan():
    """An item the C leaves to Python (a repeated key, a number that is not repr, invalid UTF-8, too deep) after
    items whose keys it has followed: still left, at the same item."""
    good = {"a": 1, "b": {"c": 2}, "d": "x"}
    columns = ["a", "b/c", "d", "b"]
    for bad in [b'{"a":1,"a":2}', b'{"a":1,"b":{"c":2},"a":3}', b'{"a":1,"b":{"c":2,"c":3}}',
                b'{"a":1,"b":{"c":2},"d":"x","a":4}', b'{"a":1,"b":{"c":1e5}}', b'{"a":1,"b":{"c":2},"d":"\xff"}',
                b'{"a":1,"\\u0061":2}', b'{"a":1,"b":{"c":' + b"[" * 300 + b"]" * 300 + b"}}", b'{"a":-0}',
                b'{"a":1,"b":{"c":2},"d":"x"} x', b'{"a":1,"b":{"c":2},"d":"x"']:
        batch = [itemjson.stdlib_encode(good)] * 3 + [bad] + [itemjson.stdlib_encode({"d": "y", "a": 5})] * 2
        table = _ccsv.prepare(columns, ",")
        assert _ccsv.lines(table, batch, 0) == (python_path(batch[:3], columns), 3), bad
        assert _ccsv.lines(table, batch, 4) == (python_path(batch[4:], columns), 6), bad
        try:
            itemjson.load(bad)
        except ValueError:
            continue
        assert assert_lines_are_pythons(batch, columns) == 3


def test_a_plan_of_more_steps_than_it_keeps():
    """A plan keeps the first 1,024 steps of an item: an item of more is followed up to there, then walked."""
    items = [{"t": list(range(2000)), "u": 1}, {"t": list(range(2000)), "u": 2}, {"t": list(range(1500)), "u": 3},
             {"t": list(range(2001)), "u": 4}, {"t": list(range(2000)), "v": 5}]
    columns = ["t/0", "t/1022", "t/1023", "t/1024", "t/1999", "t/2000", "u", "v"]
    assert assert_lines_are_pythons(items, columns) == len(items)


# Items of a few keys, often the same ones in the same order or nearly: the plan is followed, then left anywhere.
PLAN_KEYS = st.sampled_from(["a", "b", "ab", "a/b", "0", "é", "q\"k", "x" * 9])
PLAN_VALUES = st.recursive(st.none() | st.integers(-3, 3) | st.sampled_from(["", "s", "t,u", 0.5, True]),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PLAN_KEYS, inner, max_size=3),
                           max_leaves=6)
PLAN_ITEMS = st.lists(st.dictionaries(PLAN_KEYS, PLAN_VALUES, max_size=4), min_size=1, max_size=6)


@settings(max_examples=examples(500), suppress_health_check=[HealthCheck.too_slow])
@given(shapes=PLAN_ITEMS, order=st.lists(st.integers(0, 5), min_size=1, max_size=12),
       form=st.sampled_from(FAITHFUL), data=st.data())
def test_repeated_shapes_are_the_python_paths(shapes, order, form, data):
    items = [shapes[i % len(shapes)] for i in order]
    batch = [FORMS[form](item) for item in items]
    columns = columns_for(items, ["a/0", "b/a"], data)
    assert assert_lines_are_pythons(batch, columns) == len(batch)


@pytest.mark.parametrize("inner", ["QQQQQ", "Q" * 300, "0"])
def test_leaving_the_plan_below_a_path_past_every_column(inner):
    """An item leaves the plan inside a container whose path matches no column (longer than every one): the walk,
    back at an ancestor whose path does fit, takes its next member from that ancestor's path, which must be there
    (it was an earlier item's bytes, and the cell went missing for that item and every later one of its shape)."""
    items = [{"p": {inner: {"r": 1}, "x": 2}}, {"p": {inner: {"r": 1}}, "zz": {"k": 1}},
             *[{"p": {inner: {"r": 1, "s": 2}, "x": 5 + i}} for i in range(4)]]
    batch = [itemjson.stdlib_encode(item) for item in items]
    columns = ["p/x", "zz/k"]
    want = python_path(batch, columns)
    assert want.count(b"\r\n") == 6 and b"8,\r\n" in want  # (the reference itself: the last item's p/x)
    table = _ccsv.prepare(columns, ",")
    assert _ccsv.lines(table, batch, 0) == (want, len(batch))
    assert _ccsv.joined_lines(table, b"\n".join(batch), 0) == (want, len(b"\n".join(batch)))


# -- the template: an item whose bytes are the last walked item's but for its leaves (strings, numbers, true, false,
# null) is rendered from them alone: the bytes between its leaves compared, each leaf parsed and checked, its column
# the template's.


@pytest.mark.parametrize("delimiter", [",", ";", "\t", " "])
@pytest.mark.parametrize("special", LONG_SPECIALS)
def test_a_special_character_anywhere_in_a_string_of_a_template(special, delimiter):
    """A template's strings are scanned 16 bytes at a time, the last bytes of an item by the 16 that end there, an
    item of fewer byte by byte: a special character at every offset of strings of every length up to 40, in a
    string first in its item and one that ends two bytes before the item's end, and in items under 16 bytes."""
    texts = ["x" * at + special + "y" * (n - 1 - at) for n in range(1, 41) for at in range(n)]
    items = [{"a": text, "b": 0} for text in texts] + [{"b": 0, "a": text} for text in texts]
    items += [{"a": text} for text in texts]
    table = _ccsv.prepare(["a", "b"], delimiter)
    for form in FAITHFUL:
        batch = [FORMS[form](item) for item in items]
        want = python_path(batch, ["a", "b"], delimiter)
        assert _ccsv.lines(table, batch, 0) == (want, len(batch)), form
        if form != "indented":  # (a piece of joined items holds no raw newline)
            joined = b"\n".join(batch)
            assert _ccsv.joined_lines(table, joined, 0) == (want, len(joined)), form


TEMPLATE_ITEM = b'{"a":"x,y","b":{"c":1,"d":[true,null,false]},"e":-1.5,"f":"\\u00e9z","g":{},"h":[""]}'


@pytest.mark.parametrize("change", ["replaced", "inserted", "cut"])
def test_an_item_that_differs_from_the_template_in_one_byte(change):
    """Every byte of an item changed (replaced by a byte that matters to JSON, one inserted before it, or the item
    cut there), between items of the template's bytes: the C renders it as Python does, or leaves it to Python (it
    is not JSON, or the C never renders it: a repeated key), and follows the template again after it."""
    columns = ["a", "b/c", "b/d/0", "b/d/1", "b/d/2", "e", "f", "g", "h/0", "b", "x"]
    table = _ccsv.prepare(columns, ",")
    variants = []
    for i in range(len(TEMPLATE_ITEM) + 1):
        head, tail = TEMPLATE_ITEM[:i], TEMPLATE_ITEM[i:]
        if change == "cut":
            variants.append(head)
        elif change == "inserted":
            variants += [head + bytes([b]) + tail for b in b' x"1,']
        elif tail:
            variants += [head + bytes([b]) + tail[1:] for b in b'x"{}[],:0-.\\etn ' if b != tail[0]]
    for variant in variants:
        batch = [TEMPLATE_ITEM, variant, TEMPLATE_ITEM, variant, TEMPLATE_ITEM]
        got, stop = _ccsv.lines(table, batch, 0)
        try:
            itemjson.load(variant)
        except ValueError:
            assert (got, stop) == (python_path(batch[:1], columns), 1), variant
            continue
        assert stop in (1, 5), variant
        assert got == python_path(batch[:stop], columns), variant
        assert csv_renderer(columns).stored_rows(batch, rows_of) == python_path(batch, columns), variant


@pytest.mark.parametrize("n", [1023, 1024, 1025])
def test_templates_of_about_as_many_leaves_as_one_holds(n):
    """A template holds 1,024 leaves: an item of more makes none (the next is walked), and items of fewer keys
    after it each make one."""
    items = [{"t": list(range(n)), "u": i} for i in range(3)] + [{"t": list(range(1024)), "u": 9}] * 2
    items += [{"t": list(range(n)), "u": "x"}] * 2
    columns = ["t/0", "t/1022", "t/1023", "t/1024", "u"]
    assert assert_lines_are_pythons(items, columns) == len(items)


def test_items_of_shapes_of_their_own_between_templated_ones():
    """Items that follow no template, many in a row (each with a key of its own), pause the templates for a while,
    longer each time: those items walked, and then the template followed again, every line as Python's."""
    items = []
    for i in range(300):
        if i % 100 < 70:
            items.append({f"own{i}": i, "a": i % 7 and i, **({"b": "x,y"} if i % 3 else {})})
        else:
            items.append({"a": i, "b": "z", "c": [i, i]})
    columns = ["a", "b", "c/0", "c/1", "own3", "own250"]
    batch = [itemjson.stdlib_encode(item) for item in items]
    table = _ccsv.prepare(columns, ",")
    assert _ccsv.lines(table, batch, 0) == (python_path(batch, columns), len(batch))
    assert _ccsv.joined_lines(table, b"\n".join(batch), 0) == (python_path(batch, columns), len(b"\n".join(batch)))


@pytest.mark.parametrize("delimiter", ["1", "e", ".", "-", "t", "a", "s", "0"])
def test_lines_that_take_the_most_room(delimiter):
    """The lines are written into room made for the most they can take: three bytes for each byte of a number,
    true or false when the delimiter is one of theirs (each quoted), one else, and the delimiters. Items that come
    near it, quoted cells of one byte each."""
    items = [{"a": [1] * 50}, {"a": [True, False] * 20}, {"a": [-1e-05, 0.5] * 10}, {"a": [1, 1]}, {"a": [0]},
             {"a": ["1", "e"] * 9}, {"b": 1}, {}, {"a": [None] * 9}]
    columns = [f"a/{i}" for i in range(50)] + ["b"]
    assert assert_lines_are_pythons(items, columns, delimiter) == len(items)
    assert assert_lines_are_pythons([{"b": 1}, {"b": "1"}, {"b": True}, {}], ["b"], delimiter) == 4


NUMBER_TEXTS = ["0", "-0", "7", "-7", "10", "1" * 640, "1" * 641, "-" + "9" * 640, "1.5", "-1.5", "0.5", "-0.5",
                "10.37", "1.50", "1.0", "100.0", "-0.0", "1.25e3", "1E5", "1e16", "2.5E-3", "123456789012345.6",
                "1234567890123456.7", "0.30000000000000004", "0.1000000000000000055511151231257827",
                "9007199254740993.0", "0.0001", "0.00001", "1.", "01", "-", "1.e5", "--1", "1.5.5"]


@pytest.mark.parametrize("delimiter", [",", "1", ".", "-", "e", "5", "0"])
def test_numbers_of_every_form_in_a_template(delimiter):
    """A template's number leaves: integers and floats whose text is surely repr are taken as they are, the rest
    decided as in the walk (a float that may not be repr checked by Python, "-0", too many digits, not JSON)."""
    columns = ["a", "b"]
    table = _ccsv.prepare(columns, delimiter)
    base = b'{"a":3,"b":1}'
    for text in NUMBER_TEXTS:
        raw = b'{"a":' + text.encode() + b',"b":1}'
        batch = [base, raw, base, raw, base]
        try:
            itemjson.load(raw)
        except ValueError:
            assert _ccsv.lines(table, batch, 0) == (python_path(batch[:1], columns, delimiter), 1), text
            continue
        got, stop = _ccsv.lines(table, batch, 0)
        assert got == python_path(batch[:stop], columns, delimiter), text
        integer = re.fullmatch(r"0|-?[1-9][0-9]{0,639}", text) is not None
        assert stop == (5 if integer or (text.lstrip("-")[:1].isdigit() and repr(float(text)) == text) else 1), text
        want = python_path(batch, columns, delimiter)
        assert csv_renderer(columns, delimiter).stored_rows(batch, rows_of) == want, text


@pytest.mark.parametrize("delimiter", [",", "e"])
def test_one_column_lines_as_the_leaves_come(delimiter):
    """One column, the item's one leaf: an empty text is the line '""' (a blank line is skipped by readers)."""
    items = [{"a": "x"}, {"a": ""}, {"a": None}, {"a": "e"}, {"a": 1.5}, {"a": ""}, {"b": 1}, {"a": ""}]
    assert assert_lines_are_pythons(items, ["a"], delimiter) == len(items)


@pytest.mark.parametrize("columns", [["a", "b"], ["a", "ab", "b"], ["b", "a"], ["a", "b", "c"]])
def test_lines_as_the_leaves_come(columns):
    """A template whose leaves are the columns in order, one each, writes the line as they come; where an item
    moves from it to a template whose leaves are not (a key left out, keys in another order), it is rendered into
    cells instead."""
    items = [{"a": 1, "b": "x,y"}, {"a": 0.5, "b": None}, {"a": 2}, {"a": 'q"', "b": 3}, {"a": 4}, {"b": 5, "a": 6},
             {"a": 7, "b": 8}, {"a": -0.0, "ab": 1, "b": "\u00e9"}, {"a": 9, "ab": 2.5, "b": 1e16},
             {"a": 9, "ab": [], "b": 0}, {"a": [], "ab": 1, "b": 0}, {"a": 1, "ab": 2, "b": 3}, {"a": 0, "ab": 2}]
    assert assert_lines_are_pythons(items, columns) == len(items)
    assert assert_lines_are_pythons(items, columns, "0") == len(items)


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes")
def test_no_read_past_the_data() -> None:
    """joined_lines over a piece whose last byte is the last before a page that can't be read, for every cut of
    pieces of items that follow templates (strings of 0-40 bytes with escapes, numbers, nested leaves last): a read
    past the end is a crash, which ASan would not see (a bytes object ends in a NUL; a memoryview of PostgreSQL's
    rows is what the export hands over). In a process of its own."""
    script = textwrap.dedent("""
        import ctypes, json, mmap
        from openkvs.datasets import _ccsv
        page = mmap.PAGESIZE
        m = mmap.mmap(-1, page * 64)
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page * 63), page, 0) == 0  # PROT_NONE
        table = _ccsv.prepare(["a", "b", "c/d", "e/0", "e/1"], ",")
        pieces = []
        for n in range(41):
            text = ("x" * n)[: max(0, n - 2)] + ('\\\\"' if n % 3 == 0 else "\\u00e9" if n % 3 == 1 else ",")
            items = [{"a": text, "b": 1.5 * i, "c": {"d": i % 2 == 0}, "e": ["y" * n, text]} for i in range(4)]
            pieces.append(b"\\n".join(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
                                      for item in items))
        for data in pieces:
            for cut in range(len(data) + 1):
                start = page * 63 - cut
                m[start : page * 63] = data[:cut]
                with memoryview(m)[start : page * 63] as view:
                    try:
                        _ccsv.joined_lines(table, view, 0)
                    except ValueError:
                        pass
        print("read", len(pieces))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr.decode())
    assert done.stdout.startswith(b"read ")
