"""Section 6's text formats: the contract's examples byte for byte, and each format read back by an independent
reader (json.loads, Python's csv module, ElementTree, feedparser, html.parser)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import feedparser
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openkvs.datasets.formats import renderer
from openkvs.datasets.query import parse_items_query
from tests.conftest import examples
from tests.datasets.helpers import export, oracle_cells

CSV_ITEMS = [{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}]


def test_csv_contract_example():
    assert export(CSV_ITEMS, {"format": "csv"}) == "\ufeffa,b,c/0\r\n1,\"x,y\",\r\n,\"q\"\"r\",true\r\n".encode()


def test_csv_options():
    assert export(CSV_ITEMS, {"format": "csv", "bom": "0", "skipHeaderRow": "1", "delimiter": ";"}) == (
        b'1;x,y;\r\n;"q""r";true\r\n')
    assert export([{"a": "x\ty", "b": "=1+2", "c": "line\nbreak", "d": "cr\r"}], {"format": "csv", "bom": "0",
                                                                                  "delimiter": "\t"}) == (
        b'a\tb\tc\td\r\n"x\ty"\t=1+2\t"line\nbreak"\t"cr\r"\r\n')


def test_json_and_jsonl():
    items = [{"a": "é", "b": [1, 2.5, None, True]}, {"c": {}}]
    assert export(items) == '[{"a":"é","b":[1,2.5,null,true]},\n{"c":{}}]'.encode()
    assert export([]) == b"[]"
    assert export(items, {"format": "jsonl"}) == '{"a":"é","b":[1,2.5,null,true]}\n{"c":{}}\n'.encode()
    assert export([], {"format": "jsonl"}) == b""
    assert export(items, {"bom": "1"}).startswith(b"\xef\xbb\xbf[")
    # stored bytes copied as they are: the same output
    for fmt in ("json", "jsonl"):
        assert export(items, {"format": fmt}, raw=True) == export(items, {"format": fmt})


def test_html_contract_page():
    items = [{"a": "<b>&'\"", "n": None}, {"z": 1.5}]
    assert export(items, {"format": "html", "skipHeaderRow": "1"}, label="my<data>") == (
        b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Dataset my&lt;data&gt;</title></head><body>\n'
        b"<table>\n<tr><th>a</th><th>n</th><th>z</th></tr>\n"
        b"<tr><td>&lt;b&gt;&amp;&#39;&quot;</td><td></td><td></td></tr>\n"
        b"<tr><td></td><td></td><td>1.5</td></tr>\n"
        b"</table>\n</body></html>\n"
    )


def test_xml_contract_example_and_rules():
    docs_item = {"address": [{"@": {"type": "home"}, "street": "21st"}, {"@": {"type": "office"}, "#": "unknown"}]}
    assert export([docs_item], {"format": "xml"}) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<items>\n<item><address type="home"><street>21st</street>'
        b'</address><address type="office">unknown</address></item>\n</items>\n')
    item = {"n": None, "s": "", "t": True, "x": 1.5, "#debug": 1, "2nd": "a", "": 0, "l": [[1, 2], [], 3], "e": [],
            "o": {"@": {"k": [1], "z": None, "q": 'a"b'}}, "p": {"#": "t", "y": []}}
    assert export([item], {"format": "xml", "xmlRoot": "r", "xmlRow": "row"}) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<r>\n<row><n/><s></s><t>true</t><x>1.5</x><_debug>1</_debug>'
        b'<_2nd>a</_2nd><_>0</_><l><item>1</item><item>2</item></l><l></l><l>3</l>'
        b'<o k="[1]" q="a&quot;b"/><p>t</p></row>\n</r>\n')
    assert export([], {"format": "xml"}) == b'<?xml version="1.0" encoding="UTF-8"?>\n<items>\n</items>\n'


def test_rss_channel():
    out = export([{"title": "T1", "link": "http://x/1"}], {"format": "rss"}, label="shop", dataset_id="ID1",
                 public_url="http://h:1/")
    assert out == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel><title>Dataset shop</title>'
        b'<link>http://h:1/v2/datasets/ID1/items?format=rss</link>'
        b'<description>Items in dataset with id "ID1".</description>\n'
        b"<item><title>T1</title><link>http://x/1</link></item>\n</channel></rss>\n")
    feed = feedparser.parse(out)
    assert not feed.bozo and feed.version == "rss20"
    assert feed.feed.title == "Dataset shop" and feed.entries[0].title == "T1"
    custom = export([], {"format": "rss", "feedTitle": "A & B", "feedDescription": "<d>", "xmlRow": "ignored"})
    channel = ET.fromstring(custom).find("channel")
    assert channel.findtext("title") == "A & B" and channel.findtext("description") == "<d>"  # feedparser strips tags


def test_content_types_and_headers():
    for fmt, ct in [("json", "application/json; charset=utf-8"), ("jsonl", "application/jsonl; charset=utf-8"),
                    ("csv", "text/csv; charset=utf-8"), ("html", "text/html; charset=utf-8"),
                    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                    ("xml", "application/xml; charset=utf-8"), ("rss", "application/rss+xml; charset=utf-8")]:
        r = renderer(parse_items_query({"format": fmt}, None), label="l", dataset_id="i", public_url="http://h")
        assert r.content_type == ct and r.filename_ext == fmt
        assert r.tabular == (fmt in ("csv", "html", "xlsx"))
    html = renderer(parse_items_query({"format": "html"}, None), label="l", dataset_id="i", public_url="http://h")
    assert html.extra_headers == {"Content-Security-Policy": "sandbox"}


# -- independent readers on arbitrary data --------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=8)  # any code point but lone surrogates
KEYS = st.sampled_from(["a", "b", "c d", "#h", "é", "x/y", "1", "@", "#"]) | st.text(max_size=4)
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=10)
ITEMS = st.lists(st.dictionaries(KEYS, JSON, max_size=4), max_size=6)


def text_of(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS)
def test_json_and_jsonl_parse_back(items):
    assert json.loads(export(items)) == items
    lines = export(items, {"format": "jsonl"}).decode().split("\n")
    assert lines[-1] == "" and [json.loads(x) for x in lines[:-1]] == items


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, delimiter=st.sampled_from([",", ";", "\t", "|", "1", " ", "é"]))
@example(items=[{"": False}], delimiter=",")  # found in CI: the header of one column named "" was a blank line
def test_csv_parses_back_to_the_cells(items, delimiter):
    try:
        out = export(items, {"format": "csv", "delimiter": delimiter})
    except Exception as e:
        assert getattr(e, "type", "") == "no-columns-in-exported-dataset"
        return
    assert out.startswith(b"\xef\xbb\xbf")
    text = out.decode("utf-8-sig")
    assert text.endswith("\r\n")
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    header, body = parsed[0], parsed[1:]
    assert len(body) == len(items)
    for item, line in zip(items, body, strict=True):
        cells = oracle_cells(item)
        want = [text_of(cells.get(c)) for c in header]
        if want == [""]:
            assert line in ([], [""])  # one empty field is an empty line
        else:
            assert line == want


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS)
def test_xml_and_rss_parse(items):
    root = ET.fromstring(export(items, {"format": "xml"}))
    assert root.tag == "items" and len(root) == len(items)
    assert all(child.tag == "item" for child in root)
    rss = export(items, {"format": "rss"})
    channel = ET.fromstring(rss).find("channel")
    assert channel is not None and channel.findtext("title") == "Dataset my-data"
    assert len(channel.findall("item")) == len(items)
    assert not feedparser.parse(rss).bozo


def test_xml_text_survives_a_parser():
    tricky = "a&b<c>d\"e'f\r\ng\th\x01\x7f\ufffe\U0001F600"
    root = ET.fromstring(export([{"s": tricky, "@": {"at": tricky}}], {"format": "xml"}))
    expected = tricky.replace("\x01", "").replace("\ufffe", "")
    assert root[0].find("s").text == expected
    assert root[0].get("at") == expected


class _Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS)
def test_html_parses_to_the_cells(items):
    try:
        out = export(items, {"format": "html"})
    except Exception as e:
        assert getattr(e, "type", "") == "no-columns-in-exported-dataset"
        return
    p = _Table()
    p.feed(out.decode())
    header, body = p.rows[0], p.rows[1:]
    assert len(body) == len(items)
    for item, line in zip(items, body, strict=True):
        cells = oracle_cells(item)
        assert line == [text_of(cells.get(c)) for c in header]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "html"])
def test_lone_surrogates_never_fail(fmt):
    out = export([{"s": "a\ud800b"}], {"format": fmt})
    out.decode("utf-8")  # valid UTF-8


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "html", "xlsx", "xml", "rss"])
def test_deep_items_render(fmt):
    """Items nest up to the push cap (128 levels): every format renders them without hitting a recursion limit."""
    deep: object = "leaf"
    for i in range(150):
        deep = {"k": deep} if i % 2 else [deep, 1]
    out = export([{"a": deep, "b": 1}], {"format": fmt, "flatten": "a"})
    assert out
