"""A push body's items as stored (API-datasets.md 4.4, openkvs/datasets/itemjson.py): whatever the body, the push
path answers what the json module's path answered before orjson came in: the same 400 message, or the same
stored bytes, which are ``json.dumps(item, ensure_ascii=False, separators=(",", ":"))`` as UTF-8 of the value
``json.loads`` gives (the json and jsonl exports copy them). Also the counters and path index kept per push."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs import errors, jsontext
from openkvs.api import items as push_items
from openkvs.datasets import itemjson, pipeline
from tests.conftest import examples

DEPTH = push_items.ITEM_MAX_DEPTH


def rule(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def reference(raw: bytes) -> list[bytes] | str:
    """The push path as it was (json.loads, then the json encoder): the stored bytes, or the 400's message."""
    try:
        value = jsontext.loads(raw, max_depth=DEPTH) if raw.strip() else None
    except jsontext.InvalidJson as exc:
        return f"Invalid input: {exc}"
    if isinstance(value, dict):
        values = [value]
    elif isinstance(value, list):
        values = value
        for i, x in enumerate(values):
            if not isinstance(x, dict):
                return f"Invalid input: Item at index {i} is not a JSON object."
    else:
        return "Invalid input: The request body must be a JSON object or an array of JSON objects."
    try:
        return [rule(x) for x in values]
    except UnicodeEncodeError:
        return "Invalid input: A string in the items holds a lone UTF-16 surrogate."


def pushed(raw: bytes) -> list[bytes] | str:
    """The push's answer, the same by _cpush.c (where built) and by the Python path it stands in for."""
    answers = []
    saved = push_items._cpush
    for c in (saved, None):
        push_items._cpush = c
        try:
            answers.append(push_items.prepare_push_body(raw, None).items)
        except errors.InvalidInput as exc:
            answers.append(exc.message)
        finally:
            push_items._cpush = saved
    assert answers[0] == answers[1]
    return answers[0]


def same_answer(raw: bytes) -> None:
    assert pushed(raw) == reference(raw), raw[:200]


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**18, 10**19, -(10**19)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-3, max_value=1e-3, allow_nan=False)
    | st.sampled_from([1e-5, 1e-7, 1.5e-5, 1e16, 1e15, 1e21, 1e22, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 100.0])
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F))
    | st.sampled_from(["\x00", "\x7f", "\u2028\u2029", "é😀", '"\\/', "\b\f\n\r\t", "1e5", ":1e-05,", "[1e-7]"])
)
lone = st.sampled_from(["\ud800", "a\udfffb", "\udbff"])
keys = st.text(max_size=8) | st.sampled_from(["#debug", "#", "a", "url", ":1e-05,"])


def values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=30,
    )


item = st.dictionaries(keys, values(scalars), max_size=8)
body_value = st.lists(item, max_size=12) | item | values(scalars | lone)


def dumps_variants(value: Any) -> st.SearchStrategy[bytes]:
    """The text of ``value`` as a client may send it: compact or not, escaped or UTF-8 (a lone surrogate written
    as UTF-8 is invalid UTF-8)."""
    return st.builds(
        lambda ascii_, seps: json.dumps(value, ensure_ascii=ascii_, separators=seps).encode("utf-8", "surrogatepass"),
        st.booleans(),
        st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
    )


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_value.flatmap(dumps_variants))
@example(b'{"z": 1, "a": 1.50, "z": 2, "big": 12345678901234567890}')
@example(b'{"a\\u0000b": "x\\u0000y", "n": -0, "f": -0.0, "u": 18446744073709551616, "": 1, "e": 1e-400}')
@example(b'[{"a": 1}, {"b": ' + b"9" * 5000 + b"}]")
@example(b'{"a": 1e400}')
@example(b'{"a": -1e400}')
@example(b'{"a": NaN}')
@example(b'{"a": Infinity}')
@example(b'{"\\udc00": 1}')
@example(b'{"a": "\\ud83d\\ude00"}')
@example(b'{"a": "\xff"}')
@example(b'\xef\xbb\xbf[{"bom": 1}]')
@example('[{"utf16": 1}]'.encode("utf-16"))
@example(b'[{"a": 1e-05, "b": "x:1e-05,"}, {"c": [1e-7, 2.5]}, {"d": 1e16}]')
@example(b'{"s": "\x01"}')  # a raw control character in a string is not JSON
@example(b'[{"a":1},{"b":2},"x",{"c":3}]')
@example(b"[1]")
@example(b'"text"')
@example(b"42")
@example(b"  ")
@example(b"[]")
@example(b'{"a": ')
@example(b'[{"a": 1},]')
@example(b'{"a": 01}')
@example(b'{"a": 1.}')
@example(b'{"a": .5}')
@example(b'{"a": +1}')
@example(b'{"a": 1} x')
@example(b'{"a": "\\x"}')
@example(b"{'a': 1}")
def test_any_body_gets_the_answer_the_json_module_gave(raw: bytes) -> None:
    same_answer(raw)


@settings(max_examples=examples(150), deadline=None)
@given(body_value.flatmap(dumps_variants), st.integers(min_value=0), st.sampled_from(list(b'"\\{}[],:0-+.eE \x00\x1f\x7f\xc3\xed\xff')))
def test_a_damaged_body_gets_the_answer_the_json_module_gave(raw: bytes, at: int, byte: int) -> None:
    if raw:
        at %= len(raw)
        same_answer(raw[:at] + bytes([byte]) + raw[at + 1 :])
        same_answer(raw[:at] + bytes([byte]) + raw[at:])


@settings(max_examples=examples(300), deadline=None)
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?", fullmatch=True))
@example("0.1000000000000000055511151231257827")
@example("2.2250738585072011e-308")  # the slowest double to parse right
@example("9007199254740993")
@example("1e-05")
@example("123456789012345678")
def test_numbers_parse_and_encode_as_the_json_module_does(text: str) -> None:
    raw = b'[{"n": ' + text.encode() + b"}, {\"n\": [" + text.encode() + b"]}]"
    same_answer(raw)
    value = json.loads(text)
    if isinstance(value, float) and math.isfinite(value) and not isinstance(reference(raw), str):
        assert orjson.loads(text) == value  # correctly rounded, as Python's float()


@pytest.mark.parametrize("depth", [1, 2, 126, 127, 128, 129, 130, 1023, 1024, 1025, 5000])
def test_nesting_up_to_the_cap_and_past_it(depth: int) -> None:
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    for raw in (arrays, objects, b"[" + objects + b"]", b'[{"a":1},' + objects + b"]", b'[{"a":1},' + arrays + b"]"):
        same_answer(raw)
    assert isinstance(pushed(objects), list) == (depth <= DEPTH)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([{"a": 1}, {"#b": 2}, {}, {"a": 1, "b": [1, 2]}, {"b": [1]}, {"a": {"x": None}}]), max_size=30), st.data())
def test_counters_and_paths_of_a_push(shapes: list[dict[str, Any]], data: st.DataObject) -> None:
    """Per item, whatever the skeletons repeat: its own paths, the keys in order of first appearance, the clean
    count (items with a key not starting with '#')."""
    batch = [{k: data.draw(values(scalars)) if k != "b" else v for k, v in shape.items()} for shape in shapes]
    raw = json.dumps(batch).encode()
    push = push_items.prepare_push_body(raw, None)
    assert push.items == [rule(x) for x in batch]
    assert [list(p) for p in push.paths] == [pipeline.item_paths(x) for x in batch]
    assert push.keys == list(dict.fromkeys(k for x in batch for k in x))
    assert push.clean_count == sum(any(not k.startswith("#") for k in x) for x in batch)


def test_what_sends_a_body_to_the_json_module() -> None:
    """The fast path stays open to ordinary bodies (else the push's speed is gone) and closed to the rest."""
    assert itemjson.fast_loads(b'[{"a": 1.5, "b": "x", "c": 12345678901234567890}]') == [
        {"a": 1.5, "b": "x", "c": 12345678901234567890}  # (2**64 - 1 and below: exact)
    ]
    assert itemjson.floats_as_parsed([1.5, 10.37, -0.0, 1e16, 0.0001, 9.2e18, 5e-324])
    for doubtful in (1e-05, 1e-07, 2.0**63, -(2.0**63), 1.8446744073709552e19, 1e300):  # (1e300: only speed)
        assert not itemjson.floats_as_parsed([1.5, doubtful])
    for body in (b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\ud800"}', b"\xef\xbb\xbf{}"):
        with pytest.raises(itemjson.NotFast):
            itemjson.fast_loads(body)
