"""A dataset's ``fields`` schema that declares JSON Schema 2020-12 (API-datasets.md 9.1) is checked as hardly as a
draft-07 one: it fetches nothing (a remote ``$ref`` made the server GET a URL of the schema author's choosing on
every push, with no timeout, and show what it got in the push's errors), and its patterns run on RE2 (Python's
backtracking re took seconds on one short string, holding every other request)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from openkvs import errors
from openkvs.dataset_schema import check_items, validate_dataset_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _dataset_schema(fields: dict[str, Any]) -> dict[str, Any]:
    return {"actorSpecification": 1, "fields": {"$schema": DRAFT, **fields}}


@pytest.fixture
def secret_server() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 holding a schema with a secret: (its URL, the paths asked of it)."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # (the http.server API names it)
            asked.append(self.path)
            body = b'{"type":"object","properties":{"a":{"const":"INTERNAL-SECRET"}}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/s.json", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_ref_is_refused_and_never_fetched(secret_server: tuple[str, list[str]]) -> None:
    url, asked = secret_server
    with pytest.raises(errors.DatasetSchemaInvalid, match="does not resolve within the schema"):
        validate_dataset_schema(_dataset_schema({"$ref": url}))
    # a schema stored before this check (or by another way in): its pushes don't fetch it either
    with pytest.raises(errors.InvalidInput) as raised:
        check_items({"$schema": DRAFT, "$ref": url}, [{"a": "x"}])
    assert "INTERNAL-SECRET" not in str(raised.value)
    assert asked == []


@pytest.mark.timeout(120)  # (with Python's re this check takes longer than the universe has: the timeout fails it)
def test_a_pattern_runs_on_re2() -> None:
    fields = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
              "patternProperties": {"^(b+)+$": {"type": "integer"}}}
    assert validate_dataset_schema(_dataset_schema(fields)) is not None
    evil = "a" * 64 + "!"
    invalid = check_items({"$schema": DRAFT, **fields}, [{"a": evil}, {"a": "aaa"}, {"b" * 64 + "!": "x", "bb": 1}])
    assert [i["itemPosition"] for i in invalid] == [0]
    assert invalid[0]["validationErrors"][0]["keyword"] == "pattern"


@pytest.mark.parametrize("fields, problem", [
    ({"properties": {"a": {"pattern": "(a)\\1"}}}, "pattern"),  # a backreference: RE2 has none
    ({"unevaluatedProperties": False, "patternProperties": {"^x": {}}}, "unevaluatedProperties"),
    ({"$defs": {"d": {"$ref": "https://example.com/d.json"}}, "properties": {"a": {"$ref": "#/$defs/d"}}}, "$ref"),
])
def test_what_can_not_be_checked_safely_is_refused_at_creation(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(errors.DatasetSchemaInvalid, match=problem.replace("$", "\\$")):
        validate_dataset_schema(_dataset_schema(fields))


def test_2020_keywords_still_check_items() -> None:
    fields = {
        "type": "object",
        "$defs": {"price": {"type": "number", "minimum": 0}},
        "properties": {"price": {"$ref": "#/$defs/price"}, "pair": {"prefixItems": [{"type": "string"}]}},
        "required": ["price"],
        "unevaluatedProperties": False,
    }
    assert validate_dataset_schema(_dataset_schema(fields)) is not None
    items = [{"price": 1, "pair": ["x"]}, {"price": -1}, {"price": 2, "pair": [1]}, {"price": 3, "extra": 1}, {}]
    invalid = check_items({"$schema": DRAFT, **fields}, items)
    assert {i["itemPosition"]: i["validationErrors"][0]["keyword"] for i in invalid} == {
        1: "minimum", 2: "type", 3: "unevaluatedProperties", 4: "required"}


@pytest.mark.parametrize("draft", ["draft-07", "2020-12"])
@pytest.mark.parametrize("fields", [
    {"$ref": "#"},
    {"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"allOf": [{"$ref": "#/definitions/a"}]}},
     "properties": {"x": {"$ref": "#/definitions/a"}}},
    {"anyOf": [{"type": "string"}, {"not": {"$ref": "#"}}]},
], ids=["itself", "through-two", "in-anyOf-not"])
def test_a_reference_back_to_itself_in_place_is_refused_at_creation(fields: dict[str, Any], draft: str) -> None:
    """Checking an item against such a schema checks it again until Python's recursion limit: every push was a 400
    "can't be used to check items" (an attack run); now the schema is refused when the dataset is made."""
    given = {"$schema": DRAFT, **fields} if draft == "2020-12" else fields
    with pytest.raises(errors.DatasetSchemaInvalid, match="leads back to itself"):
        validate_dataset_schema({"actorSpecification": 1, "fields": given})


@pytest.mark.parametrize("draft", ["draft-07", "2020-12"])
def test_a_tree_that_refers_to_itself_inside_the_value_is_kept(draft: str) -> None:
    tree = {"type": "object", "properties": {"name": {"type": "string"},
                                             "children": {"type": "array", "items": {"$ref": "#"}}}}
    fields = {"$schema": DRAFT, **tree} if draft == "2020-12" else tree
    assert validate_dataset_schema({"actorSpecification": 1, "fields": fields}) is not None
    good = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    bad = {"name": "a", "children": [{"name": "b", "children": [{"name": 5}]}]}
    assert [i["itemPosition"] for i in check_items(fields, [good, bad])] == [1]
