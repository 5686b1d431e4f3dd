"""Key-value store schemas (API.md section 6): checking a schema, finding a key's collection, checking a record."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import jsonschema

from openkvs import errors

JSON_COLLECTION_MAX = 64 * 1024 * 1024  # a record checked against a jsonSchema is parsed whole, so it is capped


def _invalid(what: str) -> errors.StoreSchemaInvalid:
    return errors.StoreSchemaInvalid(f"Key-value store schema is not valid: {what}")


def validate_schema(schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise _invalid("it must be an object")
    if schema.get("actorKeyValueStoreSchemaVersion") != 1:
        raise _invalid("actorKeyValueStoreSchemaVersion must be 1")
    for field in ("title", "description"):
        if field in schema and not isinstance(schema[field], str):
            raise _invalid(f"{field} must be a string")
    collections = schema.get("collections", {})
    if not isinstance(collections, dict):
        raise _invalid("collections must be an object")
    for cid, spec in collections.items():
        if not isinstance(spec, dict):
            raise _invalid(f"collection '{cid}' must be an object")
        has_key, has_prefix = "key" in spec, "keyPrefix" in spec
        if has_key == has_prefix:
            raise _invalid(f"collection '{cid}' needs exactly one of key and keyPrefix")
        value = spec["key"] if has_key else spec["keyPrefix"]
        if not isinstance(value, str) or (has_key and not value):
            raise _invalid(f"collection '{cid}': key/keyPrefix must be a string")
        types = spec.get("contentTypes")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            raise _invalid(f"collection '{cid}': contentTypes must be a list of strings")
        if "jsonSchema" in spec:
            if types != ["application/json"]:
                raise _invalid(f"collection '{cid}': jsonSchema needs contentTypes [\"application/json\"]")
            try:
                jsonschema.Draft7Validator.check_schema(spec["jsonSchema"])
            except jsonschema.SchemaError as exc:
                raise _invalid(f"collection '{cid}': jsonSchema: {exc.message}") from None
    return schema


def collections_for_key(schema: dict[str, Any] | None, key: str) -> list[tuple[str, dict[str, Any]]]:
    if not schema:
        return []
    found = []
    for cid, spec in (schema.get("collections") or {}).items():
        if spec.get("key") == key or ("keyPrefix" in spec and key.startswith(spec["keyPrefix"])):
            found.append((cid, spec))
    return found


def check_content_type(cid: str, spec: dict[str, Any], content_type: str) -> None:
    types = spec.get("contentTypes")
    if not types:
        return
    bare = content_type.split(";")[0].strip().lower()
    if not any(fnmatch.fnmatchcase(bare, t.lower()) for t in types):
        raise errors.SchemaValidationFailed(
            f"Record content type '{bare}' is not allowed in collection '{cid}' (allowed: {', '.join(types)})."
        )


def check_json(cid: str, spec: dict[str, Any], data: bytes) -> None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise errors.SchemaValidationFailed(f"Record in collection '{cid}' is not valid JSON.") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(spec["jsonSchema"]).iter_errors(value))
    if error is not None:
        raise errors.SchemaValidationFailed(f"Record does not match the schema of collection '{cid}': {error.message}")
