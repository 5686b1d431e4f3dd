"""The push's fast path against the slow one it replaced (api/items.py, datasets/itemjson.py): the shape walk tells
items apart exactly as their skeletons do, finds every float and the depth cap as before, and the floats check
of a whole push answers what the check of each float answered."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from openkvs.api import items as push_items
from openkvs.datasets import itemjson, pipeline
from tests.conftest import examples

_INT64 = float(2**63)

# Keys that look like the markers of the shapes ("[", "{}", ...): a shape must not mistake an object for an array.
keys = st.sampled_from(["a", "b", "[", "[]", "{}", "#h", "", "-1", "-2"]) | st.text(max_size=3)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=2
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20
)
containers = st.lists(values, max_size=4) | st.dictionaries(keys, values, max_size=5)


def floats_in(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return [value] if type(value) is float else []


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def shape(value: Any, room: int = 1000) -> tuple[Any, list[float]]:
    floats: list[float] = []
    return push_items._shape(value, room, floats), floats


def old_floats_as_parsed(floats: list[float]) -> bool:
    """The check of each float, as it was before the check of the whole list."""
    for f in set(floats):
        if not -_INT64 < f < _INT64 or orjson.dumps(f) != repr(f).encode():
            return False
    return True


@settings(max_examples=examples(400), deadline=None)
@given(containers, containers)
@example([[]], {"[": 1, "[]": 2})  # (an earlier form gave these two the same shape)
@example([{}], {"[": 1, "{}": 2})
@example({"a": {}, "b": 1}, {"a": 1, "b": {}})
@example([1, {}], [{}, 1])
@example({"a": [1, 2]}, {"a": [1, 2, 3]})
def test_two_values_have_equal_shapes_exactly_when_their_skeletons_are_equal(a: Any, b: Any) -> None:
    assert (shape(a)[0] == shape(b)[0]) == (push_items.skeleton(a) == push_items.skeleton(b))


@settings(max_examples=examples(300), deadline=None)
@given(containers)
def test_the_walk_collects_every_float(value: Any) -> None:
    got = shape(value)[1]
    assert sorted(map(repr, got)) == sorted(map(repr, floats_in(value)))  # (in an order of its own)


@pytest.mark.parametrize("levels", [1, 2, 5, 127, 128, 129])
def test_the_walk_stops_past_its_room(levels: int) -> None:
    for value in ([[]], {"a": {}}, [1, [2.5]], {"x": 1, "y": [{"z": None}]}):
        nested: Any = value
        for _ in range(levels - 1):
            nested = {"k": 1, "n": nested} if levels % 2 else [0, nested]
        want_deep = depth(nested) > 128
        try:
            shape(nested, 128)
        except push_items._Deep:
            assert want_deep
        else:
            assert not want_deep


@settings(max_examples=examples(500), deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False)
        | st.floats(min_value=-1e-3, max_value=1e-3)
        | st.sampled_from([1e-5, 1e-7, 1e16, 1e15, 9.2e18, 2.0**63, -(2.0**63), 1.8446744073709552e19, 5e-324, -0.0]),
        max_size=30,
    )
)
@example([])
@example([1.5, 10.37, -0.0, 1e16, 0.0001])
@example([1.5, 1e-05])
@example([2.0**63 - 1024, 2.0**63])
def test_the_floats_of_a_push_checked_at_once_as_one_by_one(floats: list[float]) -> None:
    assert itemjson.floats_as_parsed(floats) == old_floats_as_parsed(floats)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.dictionaries(keys, values, max_size=5), max_size=20))
def test_the_paths_keys_and_clean_count_of_each_item_whatever_its_keys(batch: list[dict[str, Any]]) -> None:
    """The push's per-skeleton work on items whose keys look like shape markers: each item's own paths."""
    raw = json.dumps(batch).encode()
    push = push_items.prepare_push_body(raw, None)
    assert [list(p) for p in push.paths] == [pipeline.item_paths(x) for x in batch]
    assert push.keys == list(dict.fromkeys(k for x in batch for k in x))
    assert push.clean_count == sum(any(not k.startswith("#") for k in x) for x in batch)
    slow = push_items.prepare_push(json.loads(raw), None)
    assert (push.items, push.paths, push.keys, push.clean_count) == (slow.items, slow.paths, slow.keys, slow.clean_count)


def test_the_fast_path_is_taken_for_an_ordinary_body() -> None:
    """bench/datasets.py's items (a float price, nested objects, an array) pass every check of the fast path."""
    batch = [{"price": 10.37 + i, "shop": {"zip": "1"}, "tags": ["a", "b"], "#debug": {"ms": i}} for i in range(50)]
    items, _ = push_items._elements(orjson.loads(json.dumps(batch)))
    floats: list[float] = []
    for x in items:
        push_items._shape(x, 127, floats)
    assert len(floats) == 50 and itemjson.floats_as_parsed(floats)
