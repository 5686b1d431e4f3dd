"""Section 6.7: the xlsx workbook, read back by two independent readers: openpyxl (both its normal and its
read-only, streaming reader) and calamine (a Rust reader, python-calamine). LibreOffice is not installed in CI (a
heavy Debian package); calamine stands in as the second reader."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from python_calamine import CalamineWorkbook

from openkvs.datasets import xlsx
from openkvs.datasets.formats import renderer
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples
from tests.datasets.helpers import export, oracle_cells, oracle_columns

REQUIRED = {"[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/_rels/workbook.xml.rels"}


def sheets_openpyxl(data: bytes, read_only: bool) -> dict[str, list[list]]:
    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=read_only)
    out = {ws.title: [[c.value for c in row] for row in ws.iter_rows()] for ws in wb.worksheets}
    wb.close()
    return out


def trim(rows):
    """Row lists without trailing empty cells (readers differ in how wide they make a row)."""
    out = []
    for row in rows:
        row = list(row)
        while row and row[-1] in (None, ""):
            row.pop()
        out.append(row)
    return out


def test_package_layout_and_cells():
    items = [{"s": "text", "i": 123456789012345, "big": 1234567890123456, "f": 0.5, "neg": -7, "t": True,
              "n": None, "arr": ["x", False]}, {"s": " lead", "huge": 1e20, "small": -999999999999999}]
    data = export(items, {"format": "xlsx", "bom": "1"})
    assert data[:2] == b"PK"  # no BOM before a ZIP
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.testzip() is None
    names = set(z.namelist())
    assert REQUIRED | {"xl/worksheets/sheet1.xml"} <= names
    for name in names:
        ET.fromstring(z.read(name))  # every part is well-formed XML
    header = ["s", "i", "big", "f", "neg", "t", "n", "arr/0", "arr/1", "huge", "small"]
    for read_only in (False, True):
        rows = sheets_openpyxl(data, read_only)
        assert list(rows) == ["Sheet1"]
        got = trim(rows["Sheet1"])
        assert got[0] == header
        # numbers of at most 15 digits are numbers; longer integers are text; booleans are booleans
        assert got[1] == ["text", 123456789012345, "1234567890123456", 0.5, -7, True, None, "x", False]
        assert got[2] == [" lead", None, None, None, None, None, None, None, None, "1e+20", -999999999999999]
    cal = CalamineWorkbook.from_filelike(io.BytesIO(data))
    assert cal.sheet_names == ["Sheet1"]
    rows = trim(cal.get_sheet_by_name("Sheet1").to_python())
    assert rows[0] == header
    assert rows[1] == ["text", 123456789012345, "1234567890123456", 0.5, -7, True, "", "x", False]


def test_long_text_cut_and_forbidden_characters_removed():
    items = [{"long": "a" * 40_000, "bad": "x\x00y\x08z\ufffe\ud800!", "astral": "\U0001F600" * 20_000,
              "esc": "_x0041_ and _x00"}]
    for read_only in (False, True):
        row = sheets_openpyxl(export(items, {"format": "xlsx"}), read_only)["Sheet1"][1]
        assert row[0] == "a" * 32_767
        assert row[1] == "xyz!"
        assert row[2] == "\U0001F600" * 16_383  # 32,766 UTF-16 units: a pair is never split
        # openpyxl does not decode _xHHHH_ in inline strings (only in shared ones), so it shows the escape
        assert row[3] == "_x005F_x0041_ and _x00"
    # a reader that decodes the pattern, as Excel does, gets the literal text back
    cal = CalamineWorkbook.from_filelike(io.BytesIO(export(items, {"format": "xlsx"})))
    row = cal.get_sheet_by_index(0).to_python()[1]
    assert row[0] == "a" * 32_767 and row[1] == "xyz!" and row[3] == "_x0041_ and _x00"


def test_empty_selection_has_the_header_only():
    q = parse_items_query({"format": "xlsx", "fields": "a,b"}, None)
    r = renderer(q, label="l", dataset_id="i", public_url="http://h")
    data = r.start(["a", "b"]) + r.end()
    assert sheets_openpyxl(data, True) == {"Sheet1": [["a", "b"]]}


@pytest.mark.slow
def test_sheets_of_1048575_rows_then_a_new_sheet_with_the_header():
    q = parse_items_query({"format": "xlsx"}, None)
    r = renderer(q, label="l", dataset_id="i", public_url="http://h")
    parts = [r.start(["n"])]
    total = xlsx.SHEET_ROWS + 3
    batch = 50_000
    for start in range(0, total, batch):
        parts.append(r.rows([{"n": i} for i in range(start, min(start + batch, total))]))
    parts.append(r.end())
    data = b"".join(parts)
    cal = CalamineWorkbook.from_filelike(io.BytesIO(data))
    assert cal.sheet_names == ["Sheet1", "Sheet2"]
    first = cal.get_sheet_by_name("Sheet1").to_python()
    second = cal.get_sheet_by_name("Sheet2").to_python()
    assert len(first) == 1_048_576 and first[0] == ["n"] and first[1] == [0] and first[-1] == [1_048_574]
    assert second == [["n"], [1_048_575], [1_048_576], [1_048_577]]
    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    assert wb.sheetnames == ["Sheet1", "Sheet2"]
    assert [[c.value for c in row] for row in wb["Sheet2"].iter_rows()] == second


TEXT = st.text(max_size=12)
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                          max_size=3), max_leaves=8)
ITEMS = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d/e", "é"]), JSON, max_size=4), min_size=1,
                 max_size=5)


def expected_value(v):
    """What a reader should give back for one leaf (openpyxl's view)."""
    import math

    from openkvs.datasets import xml

    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if abs(v) <= 999_999_999_999_999 else str(v)
    if isinstance(v, float):
        return str(xml.scalar(v)) if v.is_integer() and abs(v) > 999_999_999_999_999 else v
    s = "".join(ch for ch in v if ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd")
                or ch >= "\U00010000")
    del math
    s = re.sub(r"_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1", s)  # openpyxl shows the escape (see above)
    return s or None  # an empty string makes an empty cell


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS)
def test_cells_read_back(items):
    try:
        data = export(items, {"format": "xlsx"})
    except Exception as e:
        assert getattr(e, "type", "") == "no-columns-in-exported-dataset"
        return
    for read_only in (False, True):
        rows = sheets_openpyxl(data, read_only)["Sheet1"]
        header = oracle_columns(parse_items_query({}, None).shape, items)
        assert rows[0] == [expected_value(c) for c in header]  # names lose forbidden characters too
        assert len(rows) <= len(items) + 1
        rows += [[]] * (len(items) + 1 - len(rows))  # trailing rows without cells are not reported
        for item, row in zip(items, rows[1:], strict=False):
            cells = oracle_cells(item)
            row = list(row) + [None] * (len(header) - len(row))
            got = [None if x == "" else x for x in row]
            assert got == [expected_value(cells.get(c)) for c in header]
    cal = trim(CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_name("Sheet1").to_python())
    assert cal[0] == rows[0]
    assert len(cal) <= len(items) + 1
