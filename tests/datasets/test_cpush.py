"""The C preparer of a push (openkvs/datasets/_cpush.c) against the Python path it stands in for (api/items.py
``prepare_push_body`` with the extension set aside): the same ``Push`` (stored bytes, paths, keys, clean count) or,
where the C hands the body back, the same 400 with the same message, for bodies written every way JSON allows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs import errors, jsontext
from openkvs.api import items as push_items
from openkvs.datasets import itemjson, pipeline
from tests.conftest import examples

_cpush = pytest.importorskip("openkvs.datasets._cpush")


def outcome(raw: bytes, c: bool) -> Any:
    """What a push of ``raw`` gives, by the C (when it takes the body) or by the Python path alone."""
    saved = push_items._cpush
    push_items._cpush = saved if c else None
    try:
        push = push_items.prepare_push_body(raw, None)
    except errors.InvalidInput as exc:
        return ("400", str(exc))
    finally:
        push_items._cpush = saved
    return (push.items, push.clean_count, push.keys, push.paths, push.field_stats)


def assert_same(raw: bytes) -> None:
    assert outcome(raw, c=True) == outcome(raw, c=False)


# -- bodies written by hand, every way JSON allows ------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "1", "-1", "1E5", "1e5", "1E+5", "1e-7", "1e-05", "-0.0", "0.0", "0.1", "1.0", "1.5", "10.37",
    "0.30000000000000004", "1e16", "1e15", "123456789012345678", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "10000000000000000000000", "-10000000000000000000000", "1e400", "-1e400", "1e-400",
    "2.5e-324", "1.7976931348623157e308", "0e0", "0E-0", "100000000000000000000.0", "1" * 700, "1" * 640,
    # plain decimals at the edges of the C's own repr of them (_cpush.c plain_float): 15 and 16 significant
    # digits, decimal exponents -4/-5 and 15/16, trailing zeros
    "0.0001", "0.00012", "0.00001", "1000000000000000.0", "9999999999999999.0", "10000000000000000.0",
    "123456789012345.6", "12345678901234.5", "1234567890123456.0", "-0.000", "5.00", "100.0", "100.50", "0.10",
    "0.1000000000000000055511151231257827", "0.30000000000000000", "999999999999999.9", "0.000099999",
]
# Escapes and characters as a client may write them: each of json.dumps' escapes, the ones it never writes (\/,
# \u00e9, uppercase hex), controls, U+2028/9, U+007F, astral characters raw and as surrogate pairs, lone surrogates.
STRING_PIECES = [
    "a", "é", "😀", "\u2028", "\u2029", "\x7f", "\ufeff", '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t",
    "\\u0000", "\\u001f", "\\u0020", "\\u00e9", "\\u00E9", "\\u2028", "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\ud800",
    "\\udc00", "\\ud800\\u0041", "\\u0022", "\\u005c", "#", "\\u0023",
]
KEYS = ["a", "b", "#a", "", "\\u0061", "é", "😀", "#", "\\u0023x", "[", "{}"]
SPACE = st.sampled_from(["", "", "", " ", "\n", "\t ", "\r\n  "])


def json_string(pieces: list[str]) -> str:
    return '"' + "".join(pieces) + '"'


scalar_texts = (
    st.sampled_from(NUMBERS)
    | st.integers().map(str)
    | st.builds(
        "{}{}.{}{}".format,
        st.sampled_from(["", "-"]),
        st.integers(0, 10**17),
        st.from_regex(r"\A[0-9]{1,18}\Z"),
        st.sampled_from(["", "", "e5", "E-3", "e+17", "e-320", "e308"]),
    )
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.sampled_from(["true", "false", "null"])
    | st.lists(st.sampled_from(STRING_PIECES), max_size=12).map(json_string)
    | st.text(max_size=30).map(lambda s: json.dumps(s, ensure_ascii=False))
    | st.text(max_size=30).map(json.dumps)
)
key_texts = st.sampled_from(KEYS).map(lambda k: f'"{k}"') | st.text(max_size=3).map(json.dumps)


@st.composite
def spaced(draw: Any, parts: list[str], sep: str) -> str:
    return draw(SPACE) + (draw(SPACE) + sep + draw(SPACE)).join(parts) + draw(SPACE)


def containers(inner: Any) -> Any:
    arrays = st.lists(inner, max_size=4).flatmap(lambda xs: spaced(xs, ",")).map(lambda t: "[" + t + "]")
    members = st.lists(st.tuples(key_texts, inner), max_size=5).map(lambda ms: [k + ":" + v for k, v in ms])
    objects = members.flatmap(lambda ms: spaced(ms, ",")).map(lambda t: "{" + t + "}")
    return arrays | objects


value_texts = st.recursive(scalar_texts, containers, max_leaves=25)
object_texts = st.lists(st.tuples(key_texts, value_texts), max_size=6).map(
    lambda ms: "{" + ",".join(k + ":" + v for k, v in ms) + "}"
)
bodies = object_texts | st.lists(object_texts, max_size=8).flatmap(lambda xs: spaced(xs, ",")).map(
    lambda t: "[" + t + "]"
)


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
@example('[{"a":1E5,"b":1e-7,"c":-0,"d":0.1,"e":1.0,"f":10000000000000000000000,"g":-0.0}]')
@example('{"a":"\\u2028\\/\\u0000😀\\ud83d\\ude00"}')
@example('[{"a":1,"a":2,"b":3}]')  # a duplicate key: its first place, its last value
@example('[{"a":{},"b":[]},{"a":[],"b":{}}]')
@example('[{"a":1e400}]')
@example('[{"a":"\\ud800"}]')
@example("[]")
@example("[{}]")
@example('[{"#a":1},{"a":1},{"#b":1,"c":2}]')
def test_a_push_is_the_python_paths(body: str) -> None:
    raw = body.encode()
    assert_same(raw)
    c = _cpush.split(raw)
    if c is not None:  # what it took, it wrote by the rule itself (itemjson.py): not only as the Python path does
        value = jsontext.loads(raw, max_depth=push_items.ITEM_MAX_DEPTH)
        assert c[0] == [itemjson.stdlib_encode(x) for x in (value if isinstance(value, list) else [value])]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.sampled_from(['{"a":1}', '{"a":[1,2]}', '{"a":[1]}', '{"a":{}}', '{"a":[]}', '{"#a":"x"}',
                                 '{"b":1,"a":2}', '{"a":"[1]"}', '{"a":{"b":null}}', '{"a":{"b":[null]}}']),
                max_size=30))
def test_items_of_a_few_shapes_share_paths_by_skeleton(objects: list[str]) -> None:
    """Numbered by skeleton: items of one share one paths list, items of two have each their own paths."""
    raw = ("[" + ",".join(objects) + "]").encode()
    assert_same(raw)
    push = push_items.prepare_push_body(raw, None)
    assert push.paths == [pipeline.item_paths(json.loads(x)) for x in objects]
    by_text = {x: p for x, p in zip(objects, push.paths, strict=True)}
    assert all(p is by_text[x] or by_text[x] == p for x, p in zip(objects, push.paths, strict=True))


@pytest.mark.parametrize("number", NUMBERS)
def test_each_number_form(number: str) -> None:
    assert_same(b'[{"a":%s},{"b":[%s]}]' % (number.encode(), number.encode()))


@pytest.mark.parametrize("piece", STRING_PIECES + ["\x01", "\x1f", "\x00"])
@pytest.mark.parametrize("at", [0, 3, 7, 8, 9, 15, 16])
def test_each_string_piece_anywhere_in_a_long_string(piece: str, at: int) -> None:
    """At each place in the C's 8-byte steps over a string (raw control characters: Python's 400)."""
    text = "abcdefghijklmnopqrstuvwxyz"
    assert_same(('{"k":"' + text[:at] + piece + text[at:] + '"}').encode())
    assert_same(('{"' + text[:at] + piece + text[at:] + '":1}').encode())


def assert_taken(raw: bytes) -> None:
    """The C takes ``raw`` (a body Python takes) and writes each item by the rule itself, as the Python path does."""
    got = _cpush.split(raw)
    assert got is not None, raw
    value = jsontext.loads(raw, max_depth=push_items.ITEM_MAX_DEPTH)
    assert got[0] == [itemjson.stdlib_encode(x) for x in (value if isinstance(value, list) else [value])]
    assert_same(raw)


# What the C's copy of a string stops at (_cpush.c copy16: 16 bytes at a time, each step copied whole): every kind
# of byte, each escape and UTF-8 of each length, at every place through the first three steps of a string.
STOPS = ['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0001", "\\u00e9", "\\u0022", "\\u005c", "\\u2028",
         "\\ud83d\\ude00", "é", "€", "😀", "\x7f", "é😀€"]
BAD_STOPS = ["\x00", "\x01", "\x1f", "\n", "\\x", "\\u12", "\\ud800", "\\udc00", "\\"]


@pytest.mark.parametrize("piece", STOPS)
def test_each_stop_at_every_place_of_a_string(piece: str) -> None:
    for at in range(49):
        text = "x" * at + piece + "y" * (48 - at)
        assert_taken(('{"k":"' + text + '","' + text + '":1}').encode())
        assert_taken(('{"' + text + '":"' + text[:at] + '"}').encode())  # (the body's last bytes: fewer than 16)


@pytest.mark.parametrize("piece", BAD_STOPS + ["\xff", "\xc3", "\xed\xa0\x80", "\xf0\x9f\x98"])
def test_each_bad_stop_at_every_place_of_a_string(piece: str) -> None:
    for at in range(49):
        raw = ('{"k":"' + "x" * at).encode() + piece.encode("latin-1") + ("y" * (48 - at) + '"}').encode()
        assert _cpush.split(raw) is None, raw
        assert_same(raw)


# A string of 3 of the C's steps that ends the body (test_no_read_past_the_body reads its cuts too).
ENDS_IN_A_STRING = ('{"a":1,"k":"' + "é".join(["x" * 7] * 6) + '\\n"}').encode()


def test_a_body_that_ends_in_a_string() -> None:
    """Cut at every byte: unterminated (Python's 400); and whole, then the body's end."""
    whole = ENDS_IN_A_STRING
    for cut in range(len(whole)):
        raw = whole[:cut]
        assert _cpush.split(raw) is None, raw
        if raw.strip():
            assert_same(raw)
    assert_taken(whole)


# Two equal keys in an object are found once per distinct skeleton, from the keys as the skeleton holds them
# (_cpush.c check): in an item after items of other skeletons, nested, in an array, in a large object; and keys whose
# written text holds a quote, a backslash or an escape (read back from the skeleton).
BIG = ",".join(f'"k{i}":{i}' for i in range(20))
SKELETONS = [
    (b'[{"a":1},{"a":1,"a":2}]', False), (b'[{"a":{"b":1}},{"a":{"b":1,"b":2}}]', False),
    (b'[{"a":1},{"x":[0,{"a":1,"a":1}]}]', False), (b'[{"a":1},{"x":[{"a":[]},{"b":{},"b":[]}]}]', False),
    (b'[{"k0":1},{' + BIG.encode() + b',"k19":1}]', False),
    (b'[{' + BIG.encode() + b'},{"k3":{' + BIG.encode() + b',"k0":[]}}]', False),
    (b'[{"a":1,"b":{"a":1}},{"a":{"a":{"a":1}},"b":[{"a":1,"b":1}]}]', True), (b'[{' + BIG.encode() + b'}]', True),
    (b'{"a\\"b":1,"a\\"b":2}', False), (b'{"a\\\\":1,"a\\\\\\"":2}', True), (b'{"\\\\":{"\\\\":1,"\\"":2}}', True),
    (b'{"\\\\":{"\\\\":1,"\\u005c":2}}', False), (b'{"\\u0001":1,"\\u0001":2}', False), (b'{"\\"":[{"\\"\\\\":1}]}', True),
    (b'{"a":1,"\\u0061":2}', False), (b'{"\\"}":1,"\\"}":2}', False), (b'{"\\"}":1,"}":2,"\\"":3}', True),
]


@pytest.mark.parametrize(("raw", "taken"), SKELETONS)
def test_two_equal_keys_in_any_item_go_to_python(raw: bytes, taken: bool) -> None:
    if taken:
        assert_taken(raw)
    else:
        assert _cpush.split(raw) is None
        assert_same(raw)


# Skeletons in every order: the previous item's (_cpush.c kind: compared first), one met earlier (by its hash), a
# new one; of one length but other keys; clean or not.
SHAPES = {"A": '{"a":1}', "B": '{"b":"x"}', "C": '{"#b":2}', "D": '{"a":1,"b":[2]}', "E": '{"#a":{"b":3}}'}


@pytest.mark.parametrize("order", ["AAAA", "ABAB", "AABBA", "ABCBA", "CCA", "BCDEEDCBA", "EAAAE"])
def test_items_are_numbered_by_skeleton_in_any_order(order: str) -> None:
    raw = ("[" + ",".join(SHAPES[c] for c in order) + "]").encode()
    assert_taken(raw)
    _, kinds, firsts, clean = _cpush.split(raw)
    seen = list(dict.fromkeys(order))
    assert kinds == [seen.index(c) for c in order]
    assert firsts == [order.index(c) for c in seen]
    assert clean == sum(c not in "CE" for c in order)


def nest(levels: int, kind: str) -> str:
    inner = "1"
    for _ in range(levels):
        inner = f'{{"a":{inner}}}' if kind == "object" else f"[{inner}]"
    return inner


@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("levels", [126, 127, 128, 129])
def test_depth_at_the_cap_and_one_over(levels: int, kind: str) -> None:
    as_object = '{"x":' + nest(levels - 1, kind) + "}"  # the body's own levels: `levels`
    as_array = "[" + '{"x":' + nest(levels - 2, kind) + "}" + "]"
    for raw in (as_object.encode(), as_array.encode()):
        got = outcome(raw, c=True)
        assert got == outcome(raw, c=False)
        assert (got[0] == "400") == (levels > push_items.ITEM_MAX_DEPTH)
        assert (_cpush.split(raw) is None) == (levels > push_items.ITEM_MAX_DEPTH)


# What the C must hand back to Python: it is not sure its answer would be the Python path's (or the body is a 400).
HANDED_BACK = [
    b'{"a":"\\ud800"}', b'{"a":"\\udc00"}', b'{"a":"\\ud800\\u0041"}', b'{"a":"\\ud800x"}', b'{"\\ud800":1}',
    b'{"a":1e400}', b'{"a":-1e400}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b'{"a":' + b"1" * 641 + b"}", b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\x80"}',
    b'{"a":"\xf4\x90\x80\x80"}', b'{"a":"\xe2\x82"}', b"\xef\xbb\xbf{}", b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}',
    b"{" + b",".join(b'"k%d":1' % i for i in range(40)) + b',"k7":2}', b'{"\\u0061":1,"a":2}',
    b"[1]", b"[{}, 1]", b'"a"', b"1", b"null", b"[{}]x", b"[{},]", b'{"a":1,}', b"{'a':1}", b'{"a":01}',
    b'{"a":1.}', b'{"a":.5}', b'{"a":-}', b'{"a":1e}', b'{"a":+1}', b'{"a":tru}', b'{"a":"x\ny"}',
    b'{"a":"\\x"}', b'{"a":"\\u12"}', b'{"a" 1}', b"[{}", b'{"a":[1,2}', b"{" * 129 + b"}" * 129,
    b"[" + b"{" * 128 + b"}" * 128 + b"]", b"\x00", b"[\x0c{}]",
]


@pytest.mark.parametrize("raw", HANDED_BACK)
def test_what_the_c_is_not_sure_of_goes_to_python(raw: bytes) -> None:
    assert _cpush.split(raw) is None
    assert_same(raw)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.data())
def test_damaged_bodies_give_what_python_gives(body: str, data: Any) -> None:
    """Bytes cut, replaced, inserted anywhere in a body: the C never crashes and never answers otherwise."""
    raw = bytearray(body.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        how = data.draw(st.sampled_from(["cut", "replace", "insert", "truncate"]))
        byte = data.draw(st.integers(0, 255) | st.sampled_from(list(b'{}[]",:\\0.-eE')))
        if how == "cut":
            del raw[at : at + 1]
        elif how == "replace" and at < len(raw):
            raw[at] = byte
        elif how == "insert":
            raw.insert(at, byte)
        else:
            del raw[at:]
    if bytes(raw).strip():
        assert_same(bytes(raw))


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_give_what_python_gives(raw: bytes) -> None:
    if raw.strip():
        assert_same(raw)


def test_a_bytearray_or_a_memoryview_is_read_as_its_bytes() -> None:
    raw = b'[{"a":1.0},{"b":[]}]'
    assert _cpush.split(bytearray(raw)) == _cpush.split(memoryview(raw)) == _cpush.split(raw)
    with pytest.raises(TypeError):
        _cpush.split("[]")


EMPTY_CONTAINERS = {
    "siblings": b'[{"a":[' + b",".join([b"[]"] * 200_000) + b"]}]",
    "deep": b"[" + b",".join([b'{"a":' + b"[" * 120 + b"]" * 120 + b"}"] * 4000) + b"]",
    "deep-shapes": b"[" + b",".join(b'{"a":' + b"[" * n + b"]" * n + b"}" for n in range(1, 127)) + b"]",
}


@pytest.mark.parametrize("name", list(EMPTY_CONTAINERS))
def test_bodies_of_empty_containers_are_the_python_paths(name: str) -> None:
    """Bodies of nested empty arrays (seen to stall the push's parse): the same Push."""
    raw = EMPTY_CONTAINERS[name]
    assert _cpush.split(raw) is not None
    assert_same(raw)


def test_a_push_without_the_extension() -> None:
    """Where no compiler was at install there is no _cpush: api/items.py imports without it and parses every push
    in Python. In a process of its own, with the import blocked."""
    script = textwrap.dedent("""
        import sys
        sys.modules["openkvs.datasets._cpush"] = None  # import raises ImportError, as when it was never built
        from openkvs.api import items
        assert items._cpush is None
        push = items.prepare_push_body(b'[{"a": 1E5, "b": "\\\\u2028"}, {"#c": []}]', None)
        sys.stdout.buffer.write(b"\\n".join(push.items) + b"|%d|%r|%r" % (push.clean_count, push.keys, push.paths))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == (
        '{"a":100000.0,"b":"\u2028"}\n{"#c":[]}'.encode()
        + b"|1|['a', 'b', '#c']|[[['a'], ['b']], [['#c', None]]]"
    )


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes")
def test_no_read_past_the_body() -> None:
    """Every prefix of the handed-back bodies, the number forms and the string pieces, each placed so that its last
    byte is the last before a page that can't be read: a read past the end is a crash (Python's bytes end in a NUL
    that would hide one, and ASan doesn't see inside an object). In a process of its own."""
    script = textwrap.dedent("""
        import ctypes, mmap
        from openkvs.datasets import _cpush
        from tests.datasets.test_cpush import ENDS_IN_A_STRING, HANDED_BACK, NUMBERS, STRING_PIECES
        page = mmap.PAGESIZE
        m = mmap.mmap(-1, page * 64)
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page * 63), page, 0) == 0  # PROT_NONE
        bodies = HANDED_BACK + [b'{"a":%s}' % n.encode() for n in NUMBERS]
        bodies += [b'{"a":"%s"}' % p.encode() for p in STRING_PIECES] + [ENDS_IN_A_STRING]
        for body in bodies:
            for cut in range(len(body) + 1):
                start = page * 63 - cut
                m[start : page * 63] = body[:cut]
                with memoryview(m)[start : page * 63] as view:
                    _cpush.split(view)
        print("read", len(bodies))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr.decode())
    assert done.stdout.startswith(b"read ")
