"""Section 4.5's query parameters: defaults, parsing, and the contract's 400s."""

from __future__ import annotations

import pytest

from openkvs import errors
from openkvs.datasets.query import parse_items_query


def test_defaults():
    q = parse_items_query({}, None)
    assert (q.offset, q.limit, q.desc) == (0, None, False)
    assert q.format.name == "json" and not q.format.bom and q.format.delimiter == ","
    assert (q.format.xml_root, q.format.xml_row) == ("items", "item")
    assert parse_items_query({"format": "csv"}, None).format.bom  # BOM on by default for csv only
    assert not parse_items_query({"format": "csv", "bom": "0"}, None).format.bom
    assert parse_items_query({"format": "xml", "bom": "1"}, None).format.bom


def test_format_case_insensitive():
    assert parse_items_query({"format": "XLSX"}, None).format.name == "xlsx"


def test_values():
    q = parse_items_query({"offset": "10", "limit": "0", "desc": "true", "delimiter": "\t", "skipHeaderRow": "1",
                           "xmlRoot": "r", "xmlRow": "_r.1-x", "attachment": "true", "feedTitle": "T",
                           "token": "ignored", "unknown": "x"}, None)
    assert (q.offset, q.limit, q.desc) == (10, None, True)
    assert q.format.delimiter == "\t" and q.format.skip_header_row and q.format.attachment
    assert (q.format.xml_root, q.format.xml_row, q.format.feed_title) == ("r", "_r.1-x", "T")
    assert parse_items_query({"limit": "9007199254740991"}, None).limit == 9007199254740991


@pytest.mark.parametrize("params", [
    {"format": "pdf"}, {"offset": "-1"}, {"offset": "+1"}, {"offset": "1.0"}, {"offset": "1e3"}, {"limit": " 1"},
    {"limit": "9007199254740992"}, {"limit": "1_000"}, {"desc": "yes"}, {"delimiter": ";;"}, {"delimiter": '"'},
    {"delimiter": "\n"}, {"delimiter": "\r"}, {"outputFields": "a"}, {"fields": "a,b", "outputFields": "x"},
    {"xmlRoot": "1a"}, {"xmlRow": "a b"}, {"xmlRow": "a:b"}, {"clean": "2"}, {"desc": "TRUE"}, {"bom": "False"},
])
def test_bad_values_are_invalid_input(params):
    with pytest.raises(errors.InvalidInput) as e:
        parse_items_query(params, None)
    assert e.value.status == 400 and e.value.type == "invalid-input"
    assert e.value.message.startswith("Invalid input: ")


def test_views():
    with pytest.raises(errors.DatasetDoesNotHaveSchema) as e:
        parse_items_query({"view": "v"}, None)
    assert (e.value.status, e.value.type, e.value.message) == (
        400, "dataset-does-not-have-schema", "Dataset does not have a schema.")
    with pytest.raises(errors.RequestedDatasetViewDoesNotExist) as e2:
        parse_items_query({"view": "nope"}, {"views": {"v": {"transformation": {}}}})
    assert (e2.value.status, e2.value.type, e2.value.message) == (
        400, "requested-dataset-view-does-not-exist", "Requested dataset view does not exist: nope")


def test_view_defaults_yield_to_query():
    schema = {"views": {"v": {"transformation": {"fields": ["a"], "omit": ["b"], "flatten": ["c"],
                                                  "skipHidden": True}}}}
    q = parse_items_query({"view": "v", "omit": "z"}, schema)
    assert q.shape.fields == ("a",) and q.shape.omit == ("z",) and q.shape.flatten == ("c",) and q.shape.skip_hidden
    # the SDK's get_data sends these explicitly: they override the view
    q = parse_items_query({"view": "v", "skipHidden": "false", "clean": "false"}, schema)
    assert not q.shape.skip_hidden


def test_simplified():
    s = parse_items_query({"simplified": "1"}, None).shape
    assert s.simplified and s.unwind == ("pageFunctionResult",)
    assert s.group_fields == ("url", "pageFunctionResult", "errorInfo")
    s = parse_items_query({"simplified": "1", "fields": "a"}, None).shape
    assert not s.simplified and s.unwind == ("pageFunctionResult",) and s.fields == ("a",)


def test_clean_means_both():
    s = parse_items_query({"clean": "1"}, None).shape
    assert s.skip_hidden and s.skip_empty


def test_raw_json_only_for_json_formats_of_identity_shape():
    assert parse_items_query({}, None).raw_json
    assert parse_items_query({"format": "jsonl", "desc": "1", "offset": "5"}, None).raw_json
    assert not parse_items_query({"format": "csv"}, None).raw_json
    assert not parse_items_query({"clean": "1"}, None).raw_json
