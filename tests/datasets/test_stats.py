"""Section 4.6: field statistics."""

from __future__ import annotations

from openkvs.datasets.pipeline import FieldStats, field_statistics

SCHEMA = {"actorSpecification": 1, "fields": {"type": "object", "properties": {
    "price": {"type": "number"}, "title": {"type": "string"}, "tags": {}, "meta": {}, "ok": {}}}}


def test_without_fields_schema_is_null():
    assert field_statistics(None, [{"a": 1}]) is None
    assert field_statistics({"actorSpecification": 1, "views": {}}, [{"a": 1}]) is None


def test_counts_and_measures():
    items = [
        {"price": 5, "title": "héllo", "tags": [1, 2, 3], "meta": {"a": 1}, "ok": True},
        {"price": -1.5, "title": "", "tags": [], "meta": {}, "ok": False},
        {"price": None, "title": None},
        {},
    ]
    assert field_statistics(SCHEMA, items) == {
        "price": {"min": -1.5, "max": 5, "nullCount": 1, "emptyCount": 1},
        "title": {"min": 0, "max": 5, "nullCount": 1, "emptyCount": 1},
        "tags": {"min": 0, "max": 3, "nullCount": 0, "emptyCount": 2},
        "meta": {"min": 0, "max": 1, "nullCount": 0, "emptyCount": 2},
        "ok": {"min": 0, "max": 1, "nullCount": 0, "emptyCount": 2},
    }


def test_incremental_resumes_from_a_stored_result():
    items = [{"price": i, "title": "x" * i} for i in range(10)] + [{}]
    first = FieldStats(SCHEMA)
    first.add_all(items[:4])
    second = FieldStats(SCHEMA, first.result())
    second.add_all(items[4:])
    assert second.result() == field_statistics(SCHEMA, items)
    assert second.result()["tags"] == {"min": None, "max": None, "nullCount": 0, "emptyCount": 11}
