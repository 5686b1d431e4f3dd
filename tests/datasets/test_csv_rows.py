"""The csv renderer writes the same bytes as before it gathered cells per row over a template of the columns and
checked quoting a line at a time (tests/datasets/csv_reference.py, frozen from main), for any items, columns,
delimiter and query shape; and stored items come back from their bytes (openkvs/datasets/itemjson.py load, orjson with
fallbacks) as the same values ``json.loads`` gives."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs.datasets import itemjson
from openkvs.datasets.formats import renderer
from openkvs.datasets.pipeline import ColumnCollector, Shape
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples
from tests.datasets.csv_reference import CsvReference

# Text that csv quoting and the delimiters care about, and any other code point but lone surrogates.
SPECIAL = st.sampled_from(['"', ",", ";", "\r", "\n", "\r\n", " ", "\t", "é", "\x00", "|", "1", "", "''", "\u2028"])
TEXT = st.lists(SPECIAL | st.text(st.characters(codec="utf-8"), max_size=4), max_size=4).map("".join)
KEYS = st.sampled_from(["a", "b", "a/b", "a/0", "0", "#h", "x y", "é", "u", "v"]) | st.text(max_size=3)
NUMBERS = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1, 10**19, 10**30, -0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e16, 1.5e300, 5e-324, 9.2233720368547758e18, 1.8446744073709552e19])
)
SCALAR = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=12)
ITEMS = st.lists(st.dictionaries(KEYS, JSON, max_size=5), max_size=6)
DELIMITERS = st.sampled_from([",", ";", "\t", "|", "1", " ", "é", "a", "'", "\x00"])


def compact(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def both(rows, columns, delimiter=",", bom=True, skip_header_row=False):
    params = {"format": "csv", "delimiter": delimiter, "bom": "1" if bom else "0",
              "skipHeaderRow": "1" if skip_header_row else "0"}
    new = renderer(parse_items_query(params, None), label="l", dataset_id="i", public_url="http://x")
    old = CsvReference(delimiter, bom, skip_header_row)
    # in pieces, as the endpoint renders batches, with the renderer's state carried between them
    got = new.start(columns) + b"".join(new.rows(rows[i:i + 2]) for i in range(0, len(rows), 2)) + new.end()
    want = old.start(columns) + old.rows(rows)
    return got, want


def header_of(rows):
    c = ColumnCollector(Shape())
    c.add(rows)
    return c.columns()


def columns_for(items, extra, data):
    """The header of ``items`` with ``extra`` names no row has, in an order ``data`` draws (None: as found); one
    column at least. (test_ccsv.py draws its columns so too.)"""
    try:
        columns = header_of(items)
    except Exception:  # no columns at all: the endpoint answers 400 before rendering
        columns = []
    columns = list(dict.fromkeys(columns + extra))
    if data is not None and columns:
        columns = data.draw(st.permutations(columns))
    return columns or ["a"]


@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, extra=st.lists(KEYS, max_size=3), delimiter=DELIMITERS, bom=st.booleans(),
       skip=st.booleans(), data=st.data())
@example(items=[{"a": None}], extra=[], delimiter=",", bom=False, skip=False, data=None)  # one empty field: ""
@example(items=[{"a": True, "b": [False, 1, 1.0, 0]}], extra=[], delimiter=",", bom=True, skip=False, data=None)
def test_csv_bytes_equal_the_old_renderer(items, extra, delimiter, bom, skip, data):
    """Columns from the rows themselves, in a shuffled order, with names no row has: the same bytes."""
    columns = columns_for(items, extra, data)
    got, want = both(items, columns, delimiter, bom, skip)
    assert got == want


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, params=st.fixed_dictionaries({}, optional={
    "fields": st.sampled_from(["a,b", "b", "a/b,u", "v,a"]),
    "unwind": st.sampled_from(["a", "u", "a,u"]),
    "flatten": st.sampled_from(["a", "u,a"]),
    "omit": st.sampled_from(["b", "a,#h"]),
    "clean": st.sampled_from(["1", "0"]),
}), delimiter=DELIMITERS)
def test_csv_of_shaped_rows_from_stored_bytes(items, params, delimiter):
    """The endpoint's path: stored bytes parsed by itemjson.load_batch, shaped, rendered: the bytes the old renderer
    makes of json.loads'ed items shaped the same way."""
    q = parse_items_query({"format": "csv", **params}, None)
    raw = [compact(item) for item in items]
    new_rows = [row for item in itemjson.load_batch(raw) for row in q.shape.rows(item)]
    old_rows = [row for b in raw for row in q.shape.rows(json.loads(b))]
    try:
        columns = header_of(old_rows)
    except Exception:
        return
    got, _ = both(new_rows, columns, delimiter)
    _, want = both(old_rows, columns, delimiter)
    assert got == want


@settings(max_examples=examples(300))
@given(value=JSON)
@example(value=[2**63, 2**64, -(2**63) - 1, 10**40, 1.8446744073709552e19, "12345678901234567890"])
@example(value={"n": 10**300, "f": 1e300, "s": "\u2028\x00\"\\"})
def test_stored_items_load_as_json_loads_does(value):
    raw = compact({"v": value})
    got, want = itemjson.load(raw), json.loads(raw)
    assert got == want
    assert compact(got) == raw  # same types too: an int stays an int, -0.0 stays -0.0
    assert itemjson.load_batch([raw, raw]) == [want, want]


def test_csv_contract_example_unchanged():
    rows = [{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}]
    got, want = both(rows, ["a", "b", "c/0"])
    assert got == want == "\ufeffa,b,c/0\r\n1,\"x,y\",\r\n,\"q\"\"r\",true\r\n".encode()
