"""Sections 6.1 and 6.2: cells of a row and the columns of tabular exports. The index-based header
(``columns(shape, block_paths(items))``) must equal a brute-force oracle over the rows whenever it answers, and
answer for ordinary data; the scan (``ColumnCollector``) must always equal it."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkvs import errors
from openkvs.datasets.pipeline import (
    ColumnCollector,
    block_paths,
    cells,
    columns,
    item_paths,
    merge_blocks,
    merge_paths,
)
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples
from tests.datasets.helpers import oracle_cells, oracle_columns


def shape(**params):
    return parse_items_query(params, None).shape


def header(items, **params):
    s = shape(**params)
    return columns(s, block_paths(items))


def test_cells_contract_example():
    assert cells({"a": {"b": 1}, "tags": ["x", "y"], "n": None}) == {"a/b": 1, "tags/0": "x", "tags/1": "y", "n": None}
    assert list(cells({"a": {"b": 1}, "tags": ["x", "y"], "n": None})) == ["a/b", "tags/0", "tags/1", "n"]
    assert cells({"e": {}, "f": [], "g": [[], {}]}) == {}
    assert cells({"a/b": 1, "a": {"b": 2}}) == {"a/b": 2}  # the later leaf wins


def test_columns_first_appearance_ascending():
    items = [{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}]
    assert header(items) == ["a", "b", "c/0"]
    assert header([{"t": [1]}, {"z": 1, "t": [1, 2]}]) == ["t/0", "z", "t/1"]


def test_columns_with_fields_grouped_and_empty_field_kept():
    items = [{"a": {"x": 1}, "b": 2}, {"a": {"y": 1}, "c": 3}]
    assert header(items, fields="b,a,nothing") == ["b", "a/x", "a/y", "nothing"]
    assert header(items, fields="b,a", outputFields="B,A") == ["B", "A/x", "A/y"]
    assert header([{"a": []}], fields="a") == ["a"]


def test_no_columns_is_the_contract_error():
    for items in ([], [{}], [{"a": []}, {"b": {}}]):
        with pytest.raises(errors.NoColumnsInExportedDataset) as e:
            header(items)
        assert e.value.status == 400 and e.value.type == "no-columns-in-exported-dataset"
        assert e.value.message == "The exported dataset has no columns."


def test_column_limits():
    wide = {f"k{i:05d}": i for i in range(2500)}
    assert header([wide]) == [f"k{i:05d}" for i in range(2000)]
    long = "x" * 201
    assert header([{long: 1, "y" * 200: 2, "z": {long: 1}}]) == ["y" * 200]


def test_skip_failed_pages_rows_still_count():
    items = [{"errorInfo": "boom", "a": 1}, {"b": 2}]
    assert header(items, skipFailedPages="1") == ["errorInfo", "a", "b"]


def test_unwind_needs_a_scan():
    items = [{"u": [{"p": 1}, {"q": 2}], "a": 1}]
    s = shape(unwind="u")
    assert columns(s, block_paths(items)) is None
    c = ColumnCollector(s)
    c.add_items(items)
    assert c.columns() == ["a", "p", "q"]


def test_simplified_unwound_keys_join_the_result_group():
    items = [{"url": "u", "errorInfo": None, "pageFunctionResult": [{"t": 1}, {"s": 2}]}]
    s = shape(simplified="1")
    c = ColumnCollector(s)
    c.add_items(items)
    assert c.columns() == ["url", "t", "s", "errorInfo"]


def test_index_declines_when_keys_collide():
    # flatten makes "a.b", which the item already has: one value survives, the index can't know which
    items = [{"a": {"b": [1]}, "a.b": {"z": 1}}]
    assert header(items, flatten="a") is None
    assert header(items, flatten="a,a.b") is None
    assert header([{"a": 1, "b": [1]}], fields="a,b", outputFields="x,x") is None
    # ...but not when nothing collides
    assert header([{"a": {"b": 1}}, {"a.c": 2}], flatten="a") == ["a.b", "a.c"]


def test_index_is_json_and_merges_associatively():
    items = [{"a": [1, {"b": None}], "c": {}}, {"d": 1, "a": [0, {"b": 1}, 2]}]
    paths = [item_paths(i) for i in items]
    assert json.loads(json.dumps(paths)) == paths
    assert paths[0] == [["a", 0], ["a", 1, "b"], ["c", None]]
    merged: list = []
    for p in paths:
        merge_paths(merged, p)
    assert merged == block_paths(items) == [["a", 0], ["a", 1, "b"], ["c", None], ["d"], ["a", 2]]


def test_index_overflow_means_scan():
    huge = {"a": list(range(30_000))}
    assert item_paths(huge) == [[]]
    assert header([huge]) is None
    merged = block_paths([{"x": 1}])
    merge_paths(merged, item_paths(huge))
    assert merged == [[]]


KEYS = st.sampled_from(["a", "b", "#h", "u", "a.b", "b.c", "x/y", "x", "errorInfo", "url", "pageFunctionResult", ""])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
ITEMS = st.lists(st.dictionaries(KEYS, JSON, max_size=5), max_size=6)
NAMES = st.lists(KEYS.filter(bool), max_size=3).map(",".join)
PARAMS = st.fixed_dictionaries({}, optional={
    "fields": NAMES, "omit": NAMES, "flatten": NAMES, "unwind": NAMES,
    "clean": st.sampled_from(["0", "1"]), "skipHidden": st.sampled_from(["0", "1"]),
    "skipFailedPages": st.sampled_from(["0", "1"]), "simplified": st.sampled_from(["0", "1"]),
})


RENAMES = st.lists(st.tuples(KEYS.filter(bool), st.sampled_from(["x", "y", "a", "#h", "a.b"])), min_size=1, max_size=3)
PARAMS = st.one_of(PARAMS, st.tuples(PARAMS, RENAMES).map(lambda pr: {
    **pr[0], "fields": ",".join(f for f, _ in pr[1]), "outputFields": ",".join(o for _, o in pr[1])}))


def _oracle(s, items):
    try:
        return oracle_columns(s, items)
    except Exception as e:  # pragma: no cover - the oracle itself must not fail
        raise AssertionError(e) from e


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, params=PARAMS)
def test_index_and_scan_equal_the_oracle(items, params):
    s = shape(**params)
    expected = _oracle(s, items)
    scan = ColumnCollector(s)
    scan.add_items(items)
    if expected is None:
        with pytest.raises(errors.NoColumnsInExportedDataset):
            scan.columns()
    else:
        assert scan.columns() == expected
    try:
        got = columns(s, block_paths(items))
    except errors.NoColumnsInExportedDataset:
        assert expected is None
        return
    if got is not None:
        assert got == expected
    if not s.unwind and not s.flatten and s.output_fields is None:
        assert got is not None  # without flatten or renames nothing can collide: the index always answers


@settings(max_examples=examples(300), deadline=None)
@given(row=st.dictionaries(KEYS, JSON, max_size=5))
def test_cells_equal_the_oracle(row):
    assert cells(row) == oracle_cells(row)
    assert list(cells(row)) == list(oracle_cells(row))


@settings(max_examples=examples(200), deadline=None)
@given(items=ITEMS, cut=st.integers(0, 6))
def test_block_paths_and_merges_agree(items, cut):
    merged: list = []
    for item in items:
        merge_paths(merged, item_paths(item))
    assert block_paths(items) == merged
    assert merge_blocks([block_paths(items[:cut]), block_paths(items[:cut]), block_paths(items[cut:])]) == merged
