"""Section 5 of API-datasets.md: from stored items to output rows. Expected rows are written from the contract
text, step by step."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.datasets.pipeline import Shape
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples


def rows(item, **params):
    return parse_items_query(params, None).shape.rows(item)


def test_contract_example():
    item = {"url": "u", "#debug": 1, "reviews": [{"text": "a", "stars": 5}, {"text": "b"}], "shop": {"city": "X"}}
    assert rows(item, unwind="reviews", flatten="shop", clean="1") == [
        {"url": "u", "shop.city": "X", "text": "a", "stars": 5},
        {"url": "u", "shop.city": "X", "text": "b"},
    ]


def test_identity_is_the_item():
    item = {"b": 1, "a": [1, {"x": None}]}
    shape = parse_items_query({}, None).shape
    assert shape.identity
    assert shape.rows(item) == [item]
    for params in ({"fields": "a"}, {"omit": "a"}, {"unwind": "a"}, {"flatten": "a"}, {"clean": "1"},
                   {"skipHidden": "1"}, {"skipEmpty": "1"}, {"skipFailedPages": "1"}, {"simplified": "1"}):
        assert not parse_items_query(params, None).shape.identity, params


def test_skip_failed_pages_javascript_truthiness():
    truthy = ["x", 1, -0.5, True, [], {}, {"a": 1}]
    falsy = [None, False, 0, 0.0, ""]
    for v in truthy:
        assert rows({"errorInfo": v, "a": 1}, skipFailedPages="1") == [], v
    for v in falsy:
        assert rows({"errorInfo": v, "a": 1}, skipFailedPages="1") == [{"errorInfo": v, "a": 1}], v
    assert rows({"a": 1}, skipFailedPages="1") == [{"a": 1}]


def test_simplified_picks_then_unwinds():
    item = {"errorInfo": None, "x": 1, "pageFunctionResult": [{"t": 1}, {"t": 2}], "url": "u"}
    assert rows(item, simplified="1") == [
        {"url": "u", "errorInfo": None, "t": 1},
        {"url": "u", "errorInfo": None, "t": 2},
    ]
    # explicit fields win over simplified's pick; its unwind stays
    assert rows(item, simplified="1", fields="x,t") == [{"x": 1, "t": 1}, {"x": 1, "t": 2}]
    # explicit unwind wins over simplified's unwind
    assert rows(item, simplified="1", unwind="url") == [
        {"url": "u", "pageFunctionResult": [{"t": 1}, {"t": 2}], "errorInfo": None}
    ]


def test_unwind_array_of_objects_spreads_in_place():
    item = {"a": 1, "u": [{"a": 2, "z": 3}, {"q": 4}], "b": 5}
    # JavaScript {...row without u, ...e}: existing keys keep their position with the new value, new keys appended
    assert rows(item, unwind="u") == [{"a": 2, "b": 5, "z": 3}, {"a": 1, "b": 5, "q": 4}]
    assert [list(r) for r in rows(item, unwind="u")] == [["a", "b", "z"], ["a", "b", "q"]]


def test_unwind_array_of_scalars_sets_the_field():
    item = {"a": 1, "u": ["x", 2, None, [3]], "b": 5}
    assert rows(item, unwind="u") == [
        {"a": 1, "u": "x", "b": 5}, {"a": 1, "u": 2, "b": 5}, {"a": 1, "u": None, "b": 5}, {"a": 1, "u": [3], "b": 5}
    ]
    assert list(rows(item, unwind="u")[0]) == ["a", "u", "b"]


def test_unwind_object_and_leaves_other_values_alone():
    assert rows({"a": 1, "u": {"x": 2, "a": 3}}, unwind="u") == [{"a": 3, "x": 2}]
    for v in (None, 1, "s", [], {}):
        assert rows({"a": 1, "u": v}, unwind="u") == [{"a": 1, "u": v}]
    assert rows({"a": 1}, unwind="u") == [{"a": 1}]


def test_unwind_several_fields_in_order():
    item = {"u": [{"v": [1, 2]}, {"v": [3]}]}
    assert rows(item, unwind="u,v") == [{"v": 1}, {"v": 2}, {"v": 3}]
    assert rows(item, unwind="v,u") == [{"v": [1, 2]}, {"v": [3]}]


def test_flatten():
    assert rows({"a": {"b": {"c": 1}}}, flatten="a") == [{"a.b.c": 1}]
    item = {"x": 0, "a": {"b": [1, {"c": 2}], "d": {}, "e": {"f": None}}, "y": 9}
    assert rows(item, flatten="a") == [{"x": 0, "a.b": [1, {"c": 2}], "a.d": {}, "a.e.f": None, "y": 9}]
    assert list(rows(item, flatten="a")[0]) == ["x", "a.b", "a.d", "a.e.f", "y"]
    for v in ([1], {}, "s", None):
        assert rows({"a": v}, flatten="a") == [{"a": v}]


def test_fields_order_rename_and_repeats():
    item = {"a": 1, "b": 2, "c": 3}
    assert rows(item, fields="c,a,missing") == [{"c": 3, "a": 1}]
    assert rows(item, fields="c,a,c") == [{"c": 3, "a": 1}]
    assert rows(item, fields="c,a", outputFields="C,A") == [{"C": 3, "A": 1}]
    assert rows(item, fields="shop.city", flatten="shop") == [{}]
    assert rows({"shop": {"city": "X"}, "z": 1}, fields="shop.city", flatten="shop") == [{"shop.city": "X"}]


def test_omit_wins_and_hidden_and_empty():
    item = {"a": 1, "#h": 2, "b": 3}
    assert rows(item, fields="a,b", omit="a") == [{"b": 3}]
    assert rows(item, skipHidden="1") == [{"a": 1, "b": 3}]
    assert rows({"#h": 1}, skipHidden="1") == [{}]
    assert rows({"#h": 1}, clean="1") == []
    assert rows({}, skipEmpty="true") == []
    assert rows({"a": []}, skipEmpty="1") == [{"a": []}]  # empty only when the row is {}


def test_list_parameters_verbatim_and_empty_entries_ignored():
    assert rows({" a": 1, "a": 2}, fields=" a,,") == [{" a": 1}]


def test_view_defaults_and_query_wins():
    schema = {"views": {"overview": {"transformation": {"fields": ["a", "b"], "unwind": ["u"], "desc": True,
                                                        "limit": 5, "clean": True}}}}
    q = parse_items_query({"view": "overview"}, schema)
    assert q.shape.fields == ("a", "b") and q.shape.unwind == ("u",) and q.desc and q.limit == 5
    assert q.shape.skip_empty and q.shape.skip_hidden
    q = parse_items_query({"view": "overview", "fields": "c", "desc": "0", "clean": "false", "limit": "0"}, schema)
    assert q.shape.fields == ("c",) and not q.desc and not q.shape.skip_empty and q.limit is None
    assert q.shape.unwind == ("u",)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "#c", "u", "errorInfo", "a.b", "x/y"]), inner, max_size=4),
    max_leaves=20,
)
NAMES = st.lists(st.sampled_from(["a", "b", "#c", "u", "a.b", "x/y", "pageFunctionResult", "zz"]), max_size=3).map(",".join)


@settings(max_examples=examples(300), deadline=None)
@given(item=JSON, params=st.fixed_dictionaries({}, optional={
    "fields": NAMES, "omit": NAMES, "unwind": NAMES, "flatten": NAMES, "clean": st.sampled_from(["0", "1"]),
    "skipHidden": st.sampled_from(["0", "1"]), "skipEmpty": st.sampled_from(["0", "1"]),
    "skipFailedPages": st.sampled_from(["0", "1"]), "simplified": st.sampled_from(["0", "1"])}))
def test_rows_are_total_and_do_not_touch_the_item(item, params):
    before = copy.deepcopy(item)
    shape = parse_items_query(params, None).shape
    out = shape.rows(item)
    assert item == before
    assert all(isinstance(r, dict) for r in out)
    json.dumps(out)  # plain JSON values
    if not isinstance(item, dict):
        assert out == []
    if shape.skip_empty:
        assert {} not in out
    if shape.skip_hidden:
        assert not any(k.startswith("#") for r in out for k in r)
    if shape.fields is not None:
        assert all(set(r) <= set(shape.fields) for r in out)


def test_shape_checks_output_fields():
    with pytest.raises(ValueError):
        Shape(fields=("a",), output_fields=("x", "y"))
