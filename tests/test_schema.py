"""Unit tests of openkvs/schema.py (store schemas and checking records against a collection's jsonSchema) and of
openkvs/jsontext.py (the JSON parser for what clients send)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from openkvs import errors, jsontext, schema


def kvs(json_schema: Any = None, **collection: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"key": "doc", **collection}
    if json_schema is not None:
        spec.update(contentTypes=["application/json"], jsonSchema=json_schema)
    return {"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": spec}}


def invalid_schema(s: Any) -> str:
    with pytest.raises(errors.StoreSchemaInvalid) as info:
        schema.validate_schema(s)
    return str(info.value)


def check(json_schema: Any, value: Any = None, *, raw: bytes | None = None) -> None:
    schema.check_json("c", {"jsonSchema": json_schema}, raw if raw is not None else json.dumps(value).encode())


def refused(json_schema: Any, value: Any = None, *, raw: bytes | None = None) -> str:
    with pytest.raises(errors.SchemaValidationFailed) as info:
        check(json_schema, value, raw=raw)
    return str(info.value)


# -- validate_schema: the shape of section 6 ------------------------------------------------------------------------


def test_none_is_no_schema() -> None:
    assert schema.validate_schema(None) is None


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ([], "must be an object"),
        ({"actorKeyValueStoreSchemaVersion": 2}, "actorKeyValueStoreSchemaVersion must be 1"),
        ({"actorKeyValueStoreSchemaVersion": 1, "title": 3}, "title must be a string"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": []}, "collections must be an object"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": 1}}, "must be an object"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {}}}, "exactly one of key and keyPrefix"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": "a", "keyPrefix": "b"}}}, "exactly one"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": ""}}}, "must be a string"),
        (kvs(contentTypes="text/plain"), "contentTypes must be a list of strings"),
        ({"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": "k", "jsonSchema": {}}}}, "needs contentTypes"),
        (kvs({"type": "nonsense"}), "jsonSchema"),
    ],
)
def test_shape_errors(bad: Any, says: str) -> None:
    assert says in invalid_schema(bad)


def test_a_good_schema_comes_back_as_given() -> None:
    good = kvs({"type": "object", "properties": {"a": {"$ref": "#/definitions/a"}}, "definitions": {"a": {}}})
    assert schema.validate_schema(good) is good


# -- validate_schema: $ref stays inside the schema (item 1) ----------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "file:///etc/passwd",
        "http://127.0.0.1:9/schema.json",
        "https://example.com/schema.json#/definitions/a",
        "other.json",  # relative to no base: would be a retrieval too
        "#/definitions/missing",
        "http://json-schema.org/draft-07/schema#",  # the metaschema too: only the schema's own content
    ],
)
def test_refs_that_do_not_resolve_within_the_schema_are_refused(ref: str) -> None:
    message = invalid_schema(kvs({"properties": {"a": {"$ref": ref}}}))
    assert "does not resolve within the schema" in message and ref in message


def test_refs_within_the_schema_are_taken() -> None:
    schema.validate_schema(kvs({"$ref": "#/definitions/a", "definitions": {"a": {"items": {"$ref": "#"}}}}))
    # an embedded $id: "a.json" resolves to the subschema that declares it, nothing is fetched
    schema.validate_schema(kvs({
        "$id": "http://example.com/root.json",
        "definitions": {"a": {"$id": "a.json", "type": "integer"}},
        "items": {"$ref": "a.json"},
    }))


def test_a_ref_shaped_value_in_data_keywords_is_not_a_reference() -> None:
    schema.validate_schema(kvs({"const": {"$ref": "file:///etc/passwd"}, "enum": [{"$ref": "http://x"}]}))


class _Listener:
    def __enter__(self) -> _Listener:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/s.json"
        return self

    def connected(self) -> bool:
        try:
            self.sock.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_stored_schema_with_a_remote_ref_never_fetches_it(tmp_path: Path) -> None:
    """Schemas stored before refs were checked: at check time the ref is still not retrieved (400, no 500)."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"enum": ["TOP-SECRET"]}')
    message = refused({"$ref": secret.as_uri()}, "x")
    assert "TOP-SECRET" not in message and "does not resolve" in message
    with _Listener() as listener:
        assert "does not resolve" in refused({"properties": {"a": {"$ref": listener.url}}}, {"a": 1})
        assert not listener.connected()


# -- patterns on RE2 (item 4) ---------------------------------------------------------------------------------------


def test_patterns_run_in_linear_time() -> None:
    # with Python's re: about 1.5 s at 25 characters, doubling with each one; 40 would be days
    started = time.monotonic()
    assert "does not match" in refused({"pattern": "^(a+)+$"}, "a" * 40 + "b")
    check({"pattern": "^(a+)+$"}, "a" * 40)
    assert time.monotonic() - started < 5


def test_pattern_properties_and_additional_properties_use_the_same_engine() -> None:
    js = {"patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False}
    check(js, {"aaa": 1})
    assert "is not of type 'integer'" in refused(js, {"aaa": "x"})
    assert "do not match any of the regexes" in refused(js, {"a" * 40 + "b": 1})
    assert "Additional properties are not allowed ('b' unexpected)" in refused(
        {"properties": {"a": {}}, "additionalProperties": False}, {"a": 1, "b": 2}
    )
    check({"additionalProperties": {"type": "integer"}}, {"x": 1})
    assert "is not of type" in refused({"additionalProperties": {"type": "integer"}}, {"x": "1"})


def test_dollar_matches_only_at_the_end_as_in_ecmascript() -> None:
    assert "does not match" in refused({"pattern": "^abc$"}, "abc\n")  # Python's re would accept it


@pytest.mark.parametrize("pattern", ["^(?!admin)", "(?<=a)b", "(a)\\1", "(?:a{1000}){1000}"])
def test_patterns_re2_cannot_run_are_refused_when_set(pattern: str) -> None:
    assert "is not supported" in invalid_schema(kvs({"pattern": pattern}))
    assert "is not supported" in invalid_schema(kvs({"items": {"patternProperties": {pattern: {}}}}))


def test_a_stored_pattern_re2_cannot_run_is_a_400_at_check_time() -> None:
    assert "is not supported" in refused({"pattern": "(?=a)"}, "a")


# -- bounded work (item 4) ------------------------------------------------------------------------------------------


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    started = time.monotonic()
    check({"uniqueItems": True}, [{"a": i} for i in range(50_000)])  # pairwise: over a billion comparisons
    assert time.monotonic() - started < 10
    assert "non-unique" in refused({"uniqueItems": True}, [{"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2}]}])
    check({"uniqueItems": True}, [1, True])
    check({"uniqueItems": True}, [[0], [False], {"x": 1}, {"x": True}])


def test_a_check_over_the_step_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "CHECK_STEPS", 1000)
    js = {"type": "array", "items": {"type": "integer"}}
    check(js, list(range(100)))
    assert "too much work" in refused(js, list(range(1000)))
    # an enum is charged its length each time it is looked at
    assert "too much work" in refused({"items": {"enum": list(range(500))}}, [1, 2, 3])


def test_the_budget_is_per_check() -> None:
    check({"items": {"type": "integer"}}, list(range(1000)))
    assert not hasattr(schema._budget, "left")  # nothing left behind for the next check in this thread


def test_long_messages_are_cut() -> None:
    message = refused({"type": "string"}, list(range(100_000)))
    assert len(message) < schema.MESSAGE_MAX + 200 and message.endswith("...")


def test_a_schema_whose_refs_loop_is_a_400() -> None:
    assert "recurses too deeply" in refused({"$ref": "#"}, 1)


def test_check_json_off_loop_runs_in_a_worker_thread() -> None:
    import threading

    seen: list[str] = []
    real = schema.check_json

    def spy(*args: Any) -> None:
        seen.append(threading.current_thread().name)
        real(*args)

    async def main() -> None:
        schema.check_json = spy  # type: ignore[assignment]
        try:
            await schema.check_json_off_loop("c", {"jsonSchema": {"type": "integer"}}, b"1")
        finally:
            schema.check_json = real  # type: ignore[assignment]

    anyio.run(main)
    assert seen and seen[0] != threading.main_thread().name


# -- JSON the client sent (item 6) ----------------------------------------------------------------------------------


def test_record_json_errors() -> None:
    assert "is not valid JSON" in refused({}, raw=b"{nope")
    assert "is not valid JSON" in refused({}, raw=b"\xff\xfe")
    assert f"more than {jsontext.MAX_DEPTH} levels" in refused({}, raw=b"[" * 100_000 + b"]" * 100_000)
    n = jsontext.MAX_DEPTH
    assert f"more than {n} levels" in refused({}, raw=b"[" * (n + 1) + b"]" * (n + 1))
    check({}, raw=b"[" * n + b"]" * n)


def test_jsonschema_can_follow_the_deepest_json_taken() -> None:
    """The cap is below what jsonschema needs: a recursive schema over a record at the cap is checked."""
    value: Any = 1
    for _ in range(jsontext.MAX_DEPTH - 1):
        value = [value]
    check({"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#"}}]}, value)
    check({"oneOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/definitions/a"}}],
           "definitions": {"a": {"$ref": "#"}}},
          value)
    js: Any = {"type": "integer"}
    for _ in range(jsontext.MAX_DEPTH - 1):
        js = {"items": js}
    schema.validate_schema(kvs(js))


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'{"\\udfff": 1}', b'["a\\u0000b"]', b'{"k\\u0000": 1}'])
def test_unstorable_strings(raw: bytes) -> None:
    with pytest.raises(jsontext.InvalidJson):
        jsontext.loads(raw, storable=True)
    jsontext.loads(raw)  # fine where nothing is stored (a record checked against a schema)


def test_storable_strings() -> None:
    assert jsontext.loads(b'{"a": "\\ud83d\\ude00", "b": "\\\\u0000"}', storable=True) == {"a": "\U0001f600",
                                                                                            "b": "\\u0000"}


def test_depth_is_counted_without_recursion() -> None:
    n = jsontext.MAX_DEPTH
    with pytest.raises(jsontext.TooDeep):
        jsontext.loads(b'{"a": ' * (n + 1) + b"1" + b"}" * (n + 1))
    assert jsontext.loads(b'{"a": ' * n + b"1" + b"}" * n) is not None
