"""A csv export of unchanged items over HTTP, rendered by the C extension (openkvs/datasets/_ccsv.c), is byte for byte
the export the Python path renders: the same query with ``skipFailedPages=1``, which none of these items fails,
so it gives the same rows but goes through the general path (it is not an unchanged shape). On both backends,
across batches of the export, with the options that leave rows as they are."""

from __future__ import annotations

import csv
import io
import json

import pytest

from openkvs.datasets import formats

from .test_datasets import items_url, new_dataset

TRICKY = [
    {"a": 'say "hi", then\r\nleave', "b": "plain", "n": 1.5},
    {"a": "é€😀\u2028\x00\t\\/", "b": [1, {"c": None, "d": [True, False]}], "n": 10**30},
    {"a/b": "slash key", "a": {"b": "nested wins: later"}, "n": -0.0},
    {"q\"k": "key with a quote", "c,d": "key with a comma", "x\ny": 1e16},
    {"b": [], "n": {}, "a": None, "e": 5e-324, "f": 0.1 + 0.2, "g": -(2**63) - 1, "h": 1e-05},
    {"a": ";|\t,", "b": "ends with delimiters;"},
]


@pytest.fixture
def dataset(server):
    assert formats._ccsv is not None, "the C extension is not built: this test would compare Python with itself"
    with server.client() as c:
        ds = new_dataset(c)
        items = [*TRICKY, *({"a": f"item {i}", "n": i * 0.37, "b": [i, "x,y"]} for i in range(4500)), *TRICKY]
        r = c.post(items_url(ds["id"]), content=json.dumps(items).encode(), headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        yield c, ds["id"]


@pytest.mark.parametrize("params", [
    {},
    {"delimiter": ";", "bom": "0"},
    {"delimiter": "\t", "skipHeaderRow": "1", "attachment": "1"},
    {"desc": "1", "offset": "3", "limit": "4100"},
    {"delimiter": "é"},  # not one the C takes: the Python path both times
])
def test_csv_export_is_the_python_paths(dataset, params):
    c, did = dataset
    fast = c.get(items_url(did), params={"format": "csv", **params})
    general = c.get(items_url(did), params={"format": "csv", "skipFailedPages": "1", **params})
    assert fast.status_code == general.status_code == 200
    assert fast.content == general.content
    lines = fast.content.split(b"\r\n")
    assert len(lines) > 4000  # several batches of the export (4,000 items each)


def test_csv_export_cells(dataset):
    """The fast path's cells, read back by the csv module: the texts of the leaves, as section 6.1 says."""
    c, did = dataset
    text = c.get(items_url(did), params={"format": "csv", "bom": "0", "limit": "5"}).content.decode()
    header, *lines = csv.reader(io.StringIO(text, newline=""))
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    assert header[:4] == ["a", "b", "n", "b/0"] and len(rows) == 5
    assert rows[0]["a"] == 'say "hi", then\r\nleave' and rows[0]["n"] == "1.5"
    assert rows[1]["a"] == "é€😀\u2028\x00\t\\/" and rows[1]["n"] == "1" + "0" * 30
    assert (rows[1]["b/0"], rows[1]["b/1/c"], rows[1]["b/1/d/0"], rows[1]["b/1/d/1"]) == ("1", "", "true", "false")
    assert rows[2]["a/b"] == "nested wins: later" and rows[2]["n"] == "-0.0"  # the later leaf of one path
    assert (rows[3]['q"k'], rows[3]["c,d"], rows[3]["x\ny"]) == ("key with a quote", "key with a comma", "1e+16")
    assert [rows[4][k] for k in ("a", "b", "n", "e", "f", "g", "h")] == [
        "", "", "", "5e-324", "0.30000000000000004", "-9223372036854775809", "1e-05"]
