"""The dataset schema (API-datasets.md section 9): checking one given at creation against Apify's dataset schema
(``@apify/json_schemas`` ``dataset.schema.json``), and validating pushed items against its ``fields``.

``fields`` is a JSON Schema for one item, applied as draft-07 unless its ``$schema`` names 2020-12. Both validators
are schema.py's hardened ones (RE2 patterns, linear uniqueItems, a work budget, local references only), so a
hostile schema or item costs bounded CPU and fetches nothing; both run in a worker thread (``check_items_off_loop``)."""

from __future__ import annotations

from typing import Any

import jsonschema
import referencing.exceptions

from openkvs import errors, jsontext, schema

_TRANSFORMATION: dict[str, type | tuple[type, ...]] = {
    "fields": list,
    "unwind": (list, str),
    "flatten": list,
    "omit": list,
    "limit": int,
    "desc": bool,
    "clean": bool,
    "skipHidden": bool,
    "skipEmpty": bool,
}
_TOP = {"actorSpecification", "title", "description", "fields", "views"}
# Decision (the contract is silent; Apify's schemas are a few kB): a schema's JSON at most this, else 400. Checking
# one costs ~1.4 us of CPU a byte in a worker thread that shares the interpreter lock (~37 us a property: 3.8 s for
# the 2.7 MB of 100,000 properties); without this, only the body's 9 MiB bounded it (12 s). A key-value store's
# schema has the same cap (schema.MAX_SCHEMA_BYTES).
MAX_SCHEMA_BYTES = schema.MAX_SCHEMA_BYTES


def _invalid(what: str) -> errors.DatasetSchemaInvalid:
    return errors.DatasetSchemaInvalid(f"Dataset schema is invalid: {what}")


def _is_2020(fields: Any) -> bool:
    return isinstance(fields, dict) and "2020-12" in str(fields.get("$schema", ""))


def validate_dataset_schema(value: Any) -> dict[str, Any] | None:
    """The schema to store, or None; raises DatasetSchemaInvalid. CPU-bound for a big schema: in a worker thread."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("it must be an object")
    size = jsontext.stored_size(value)
    if size > MAX_SCHEMA_BYTES:
        raise _invalid(f"it is {size:,} bytes of JSON, more than {MAX_SCHEMA_BYTES:,}")
    try:
        jsontext.check_storable(value)
    except jsontext.InvalidJson as exc:
        raise _invalid(str(exc)) from None
    extra = sorted(set(value) - _TOP)
    if extra:
        raise _invalid(f"unknown property {extra[0]!r}")
    if value.get("actorSpecification") != 1:
        raise _invalid("actorSpecification must be 1")
    for name in ("title", "description"):
        if name in value and not isinstance(value[name], str):
            raise _invalid(f"{name} must be a string")
    if "fields" not in value and "views" not in value:
        raise _invalid("it needs fields or views")
    if "fields" in value:
        fields = value["fields"]
        if not isinstance(fields, dict):
            raise _invalid("fields must be an object (a JSON Schema)")
        problem = schema._json_schema_problem(fields, draft2020=_is_2020(fields))
        if problem:
            raise _invalid(f"fields: {problem}")
    views = value.get("views", {})
    if not isinstance(views, dict):
        raise _invalid("views must be an object")
    for name, view in views.items():
        if not isinstance(view, dict):
            raise _invalid(f"view {name!r} must be an object")
        if "transformation" not in view and "display" not in view:
            raise _invalid(f"view {name!r} needs transformation or display")
        transformation = view.get("transformation", {})
        if not isinstance(transformation, dict):
            raise _invalid(f"view {name!r}: transformation must be an object")
        for key, expected in _TRANSFORMATION.items():
            if key in transformation:
                v = transformation[key]
                negative = isinstance(v, bool) or (isinstance(v, int) and v < 0)  # a limit: a count
                if not isinstance(v, expected) or (expected is int and negative):
                    raise _invalid(f"view {name!r}: transformation.{key} has the wrong type")
                if isinstance(v, list) and not all(isinstance(x, str) for x in v):
                    raise _invalid(f"view {name!r}: transformation.{key} must list strings")
        display = view.get("display", {})
        if not isinstance(display, dict):
            raise _invalid(f"view {name!r}: display must be an object")
    return value


async def validate_dataset_schema_off_loop(value: Any) -> dict[str, Any] | None:
    """validate_dataset_schema in a worker thread (a schema may be a body of 9 MiB)."""
    return await schema._off_loop(validate_dataset_schema, value)  # type: ignore[no-any-return]


def _ajv(error: jsonschema.ValidationError) -> dict[str, Any]:
    """A jsonschema error in AJV's shape (what Apify's API sends; the message texts are not part of the contract)."""
    keyword = str(error.validator)
    params: dict[str, Any]
    if keyword == "type":
        params = {"type": error.validator_value}
    elif keyword == "required":
        wanted: Any = error.validator_value
        missing = [p for p in wanted if isinstance(error.instance, dict) and p not in error.instance]
        params = {"missingProperty": missing[0] if missing else None}
    elif keyword == "additionalProperties":
        params = {"additionalProperty": error.message.split("'")[1] if "'" in error.message else None}
    else:
        params = {keyword: error.validator_value} if not isinstance(error.validator_value, (dict, list)) else {}
    message = error.message
    if len(message) > schema.MESSAGE_MAX:
        message = message[: schema.MESSAGE_MAX - 3] + "..."
    return {
        "instancePath": "".join(f"/{p}" for p in error.absolute_path),
        "schemaPath": "#" + "".join(f"/{p}" for p in error.relative_schema_path),
        "keyword": keyword,
        "params": params,
        "message": message,
    }


def check_items(fields: dict[str, Any], items: list[Any]) -> list[dict[str, Any]]:
    """The ``invalidItems`` of a push (empty: all valid). Runs under schema.py's work budget for the whole push."""
    # (only local references: a remote one would have the server fetch it, and show what it got in the errors)
    hardened = schema._Validator2020 if _is_2020(fields) else schema._Validator
    validator = hardened(fields, registry=schema._LOCAL_ONLY)
    invalid = []
    schema._budget.left = schema.CHECK_STEPS
    try:
        for position, item in enumerate(items):
            found = [_ajv(e) for e in validator.iter_errors(item)]
            if found:
                invalid.append({"itemPosition": position, "validationErrors": found[:100]})
    except schema._OverBudget:
        raise errors.InvalidInput("The items take too much work to check against the dataset schema.") from None
    except (referencing.exceptions.Unresolvable, schema._PatternNotSupported, RecursionError) as exc:
        raise errors.InvalidInput(f"The dataset schema can't be used to check items: {exc}") from None
    finally:
        del schema._budget.left
    return invalid
