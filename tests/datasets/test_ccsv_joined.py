"""csv lines from storage's joined pieces (items separated by b"\\n", ``ItemSnapshot.joined``): ``_ccsv.joined_lines``
and ``CsvRenderer.joined_rows``, which a csv export of unchanged items uses, write the bytes of the Python path for
the same items (tests/datasets/test_ccsv.py holds the C to that path for lists of items), and leave to Python the
items the C leaves in a list, at their offset in the piece."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs.datasets import _ccsv, itemjson
from tests.conftest import examples
from tests.datasets.test_ccsv import BROKEN, COLUMNS, DELIMITERS, ITEMS, LEFT, csv_renderer, python_path, rows_of
from tests.datasets.test_csv_rows import columns_for

# The forms a stored item may have: one line each (the joined pieces separate items by b"\n").
FORMS = {"stored": itemjson.stdlib_encode, "orjson": orjson.dumps}


@settings(max_examples=examples(500), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, extra=st.lists(st.sampled_from(["a", "b", "z"]), max_size=2), delimiter=DELIMITERS,
       form=st.sampled_from(sorted(FORMS)), left=st.lists(st.sampled_from([x for x in LEFT if b"\n" not in x]),
                                                          max_size=2), data=st.data())
@example(items=[{"a": None}], extra=[], delimiter=",", form="stored", left=[], data=None)
@example(items=[{"a": 1}, {"a": "x"}], extra=[], delimiter=",", form="stored", left=[b'{"a":1e5}'], data=None)
def test_joined_rows_are_the_python_paths(items, extra, delimiter, form, left, data):
    try:
        batch = [FORMS[form](item) for item in items]
    except (TypeError, orjson.JSONEncodeError):  # orjson: an int past 64 bits
        return
    for i, raw in enumerate(left):  # items the C leaves to Python, among the others
        batch.insert(min(len(batch), 2 * i + 1), raw)
    if not batch:
        return
    columns = columns_for(items, extra, data) if items else ["a"]
    r = csv_renderer(columns, delimiter)
    if not r.renders_joined:  # (a delimiter the C doesn't do: é)
        assert delimiter == "é"
        return
    assert r.joined_rows(b"\n".join(batch), rows_of) == python_path(batch, columns, delimiter)


@pytest.mark.parametrize("raw", [x for x in LEFT if b"\n" not in x])
def test_left_to_python_at_its_offset(raw):
    table = _ccsv.prepare(COLUMNS, ",")
    good = b'{"a":"x,y","a/b":1.5}'
    line = b'"x,y",1.5,,,,\r\n'
    joined = b"\n".join([good, raw, good])
    assert _ccsv.joined_lines(table, raw, 0) == (b"", 0)
    assert _ccsv.joined_lines(table, joined, 0) == (line, len(good) + 1)  # stops at it: its offset
    after = len(good) + 1 + len(raw) + 1
    assert _ccsv.joined_lines(table, joined, after) == (line, len(joined))  # goes on after it
    assert csv_renderer(COLUMNS).joined_rows(joined, rows_of) == python_path([good, raw, good], COLUMNS)


@pytest.mark.parametrize("raw", [x for x in BROKEN if b"\n" not in x and x])
def test_not_json_is_never_rendered(raw):
    table = _ccsv.prepare(COLUMNS, ",")
    assert _ccsv.joined_lines(table, b'{"a":1}\n' + raw, 0) == (b"1,,,,,\r\n", 8)
    with pytest.raises(ValueError):  # and the Python path refuses it, as for a list of items
        csv_renderer(COLUMNS).joined_rows(b'{"a":1}\n' + raw, rows_of)


def test_the_ends_of_a_piece():
    table = _ccsv.prepare(["a"], ",")
    assert _ccsv.joined_lines(table, b"", 0) == (b"", 0)
    assert _ccsv.joined_lines(table, b'{"a":1}', 7) == (b"", 7)
    assert _ccsv.joined_lines(table, b'{"a":1}\n{"a":2}', 8) == (b"2\r\n", 15)
    with pytest.raises(IndexError):
        _ccsv.joined_lines(table, b'{"a":1}', 8)
    with pytest.raises(IndexError):
        _ccsv.joined_lines(table, b'{"a":1}', -1)


def test_joined_lines_keep_nothing():
    from tests.datasets.test_c_fuzz import _kept

    joined = b'{"a":1,"b":"x,y"}\n{"a":1E5}\n{"a":[1,2],"b":null}\nnot json'
    table = _ccsv.prepare(["a", "b", "a/0"], ",")
    for start in (0, 18, 29, len(joined)):
        deltas, grown = _kept(lambda start=start: _ccsv.joined_lines(table, joined, start), table, joined)
        assert deltas == [0, 0] and grown < 4096, (start, deltas, grown)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, left=st.lists(st.sampled_from([x for x in LEFT if b"\n" not in x]), max_size=2),
       style=st.sampled_from(["sqlite", "postgres"]), views=st.booleans(), data=st.data())
@example(items=[{"a": 1}, {"a": "x"}, {"b": 2}], left=[b'{"a":1e5}'], style="sqlite", views=True, data=None)
def test_joined_rows_of_buffers_are_the_python_paths(items, left, style, views, data):
    """A piece of buffers (``ItemSnapshot.joined(buffers=True)``): SQLite's rows with b"\\n" as buffers of their
    own between them (a cut row a memoryview), PostgreSQL's runs of items each after the b"\\n" of the join. Its
    lines, one buffer per run, are the Python path's of its items, an item left to Python in a view too."""
    batch = [itemjson.stdlib_encode(item) for item in items]
    for i, raw in enumerate(left):
        batch.insert(min(len(batch), 2 * i + 1), raw)
    if not batch:
        return
    runs, at = [], 0  # the items cut into runs of 1-3
    while at < len(batch):
        n = data.draw(st.integers(1, 3)) if data is not None else 2
        runs.append(b"\n".join(batch[at : at + n]))
        at += n
    if views:  # (a view of a larger object, as a cut row is)
        runs = [memoryview(b"x\n" + run + b"\ny")[2:-2] for run in runs]
    if style == "sqlite":
        parts = [b"\n"] * (2 * len(runs) - 1)
        parts[::2] = runs
    else:
        parts = [runs[0], *(b"\n" + bytes(run) for run in runs[1:])]
    columns = columns_for(items, [], data) if items and data is not None else ["a", "b"]
    got = csv_renderer(columns).joined_rows(parts, rows_of)
    assert isinstance(got, list) and len(got) == len(runs)
    assert b"".join(got) == python_path(batch, columns)
