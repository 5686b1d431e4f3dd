"""The push's walk by columns (api/items.py ``shape_labels``) against the walk of each value it replaced
(``_shape``) and the skeletons themselves: the same items told apart, every float found, the same depth cap; and a
whole push prepared from it equal to the slow path's. Batches are drawn as a few shapes repeated with other scalars
(what scraped items look like, and what the column walk's groups are for) mixed with values of any shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from openkvs.api import items as push_items
from tests.conftest import examples
from tests.datasets.test_push_fast import floats_in

keys = st.sampled_from(["a", "b", "[", "[]", "{}", "#h", "", "-1", "-2"]) | st.text(max_size=3)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=2
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20
)
objects = st.dictionaries(keys, values, max_size=5)


def with_scalars(value: Any, draw: Any) -> Any:
    """``value`` with each scalar replaced by a drawn one: the same skeleton, other values."""
    if isinstance(value, dict):
        return {k: with_scalars(v, draw) for k, v in value.items()}
    if isinstance(value, list):
        return [with_scalars(v, draw) for v in value]
    return draw(scalars)


@st.composite
def batches(draw: Any, of: Any = objects) -> list[Any]:
    """Up to 14 values: copies of up to three shapes (their scalars redrawn), and values of any shape."""
    shapes = draw(st.lists(of, min_size=1, max_size=3))
    picks = draw(st.lists(st.integers(0, len(shapes)), max_size=14))
    return [with_scalars(shapes[p], draw) if p < len(shapes) else draw(of) for p in picks]


def labels_of(col: list[Any], room: int = 1000) -> tuple[list[Any], list[float]]:
    floats: list[float] = []
    labels = push_items.shape_labels(col, room, floats)
    return ([0] * len(col) if labels is None else labels), floats


@settings(max_examples=examples(400), deadline=None)
@given(batches(values) | batches(objects) | batches(st.lists(objects, max_size=3)))
@example([{"a": [1, 2]}, {"a": [1, 2, 3]}, {"a": [1, 2]}])
@example([{"a": {}, "b": 1}, {"a": 1, "b": {}}, {"a": {}, "b": 2}])
@example([[{}], {"[": 1, "{}": 2}, [{}], [{"x": 1}]])
@example([{"a": [{"b": 1}]}, {"a": [{"b": [1]}]}, {"a": [{"b": 2}]}, {"a": [{"c": 2}]}])
@example([{"k": 1, "n": [0, 1.5]}, {"k": 2, "n": [0, 2]}, {"k": 3, "n": [1, 2.5]}])
def test_a_column_tells_values_apart_exactly_as_their_skeletons(col: list[Any]) -> None:
    labels, _ = labels_of(col)
    skeletons = list(map(push_items.skeleton, col))
    for i in range(len(col)):
        for j in range(len(col)):
            assert (labels[i] == labels[j]) == (skeletons[i] == skeletons[j]), (col[i], col[j])


@settings(max_examples=examples(300), deadline=None)
@given(batches(values) | batches(objects))
@example([1.5, 2.5, {"a": 0.5}])
@example([{"a": [1.5, 2]}, {"a": [2.5, 3]}, {"a": [3.5, 4]}])
def test_a_column_collects_every_float_the_walk_of_each_value_does(col: list[Any]) -> None:
    _, got = labels_of(col)
    want: list[float] = []
    for value in col:
        if isinstance(value, (dict, list)):
            push_items._shape(value, 1000, want)
        elif type(value) is float:
            want.append(value)
    assert sorted(map(repr, got)) == sorted(map(repr, want)) == sorted(repr(f) for v in col for f in floats_in(v))


def nest(value: Any, levels: int, kind: str) -> Any:
    for _ in range(levels - 1):
        value = {"k": 1, "n": value} if kind == "object" else [0, value]
    return value


@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("levels", [1, 2, 126, 127, 128, 129])
def test_a_column_stops_past_its_room_as_the_walk_of_each_value(levels: int, kind: str) -> None:
    """Columns of equal values, of values one of which nests deeper, of values mixed with scalars."""
    for inner in ([[]], {"a": {}}, [1, [2.5]], {"x": 1, "y": [{"z": None}]}):
        deep = nest(inner, levels, kind)
        shallow = nest(inner, max(1, levels - 3), kind)
        for col in ([deep] * 4, [shallow, shallow, deep, shallow], [1, deep, "x", deep], [deep]):
            want_deep = False
            try:
                for value in col:
                    if isinstance(value, (dict, list)):
                        push_items._shape(value, 127, [])
            except push_items._Deep:
                want_deep = True
            try:
                labels_of(col, 127)
            except push_items._Deep:
                assert want_deep
            else:
                assert not want_deep


@settings(max_examples=examples(300), deadline=None)
@given(batches(objects))
@example([{"a": 1, "#b": {"c": [1, 2]}}] * 5)
@example([{"#a": 1}, {"#a": 2}, {"#a": 3}])
@example([{"a": 1, "b": 2}, {"b": 1, "a": 2}, {"a": 3, "b": 4}, {"c": 1}])
def test_a_push_of_repeated_shapes_prepared_as_the_slow_path_does(batch: list[dict[str, Any]]) -> None:
    """The stored bytes, each item's paths, the keys in order of first appearance and the clean count."""
    raw = json.dumps(batch).encode()
    push = push_items.prepare_push_body(raw, None)
    slow = push_items.prepare_push(json.loads(raw), None)
    assert (push.items, push.paths, push.keys, push.clean_count) == (slow.items, slow.paths, slow.keys, slow.clean_count)
