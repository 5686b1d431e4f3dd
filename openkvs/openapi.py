"""openkvs's own OpenAPI 3.1 description, served at GET /v2/openapi.json.

It starts from Apify's official description of the 12 key-value store operations (openapi_base.json: the yaml from the
apify-docs repository, Apache-2.0, converted once to JSON so the server needs no yaml parser; regenerate with
`python -m openkvs.openapi path/to/apify-openapi-kvs.yaml`) and states what openkvs really does (docs/API.md):
exact input rules (store names, record keys, integer paging), the responses Apify leaves out (206, 304, 413, 415,
416, 503 and the error types it omits), HEAD on the records ZIP, and the openkvs extensions (signing-key rotation
and grants)."""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openkvs import openapi_datasets, openapi_queues, rules

BASE_PATH = Path(__file__).with_name("openapi_base.json")

EXTRA_ERROR_TYPES = ["token-not-valid", "permission-denied", "invalid-range", "service-unavailable"]

P = "/v2/key-value-stores"
S = P + "/{storeId}"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _error_response(description: str, type_: str, message: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": _ref("schemas", "ErrorResponse"),
                "example": {"error": {"type": type_, "message": message}},
            }
        },
    }


def _errors(*codes: str) -> dict[str, Any]:
    names = {
        "400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "405": "MethodNotAllowed",
        "413": "PayloadTooLarge", "415": "UnsupportedMediaType", "416": "RangeNotSatisfiable",
        "429": "TooManyRequests", "503": "ServiceUnavailable",
    }
    return {code: _ref("responses", names[code]) for code in codes}


COMMON_ERRORS = ("400", "401", "403", "404", "405", "429", "503")


def _store_object_response() -> dict[str, Any]:
    return {"description": "", "content": {"application/json": {"schema": _ref("schemas", "KeyValueStoreResponse")}}}


def _extensions() -> dict[str, Any]:
    """The openkvs-only operations: signing-key rotation and grants (owner only)."""
    store_id = _ref("parameters", "storeId")
    grants_response = {
        "description": "The store's grants after the change.",
        "content": {"application/json": {"schema": _ref("schemas", "GrantsResponse")}},
    }
    return {
        S + "/signing-key": {
            "post": {
                "tags": ["Storage/Key-value stores"],
                "operationId": "keyValueStore_signingKey_post",
                "summary": "Rotate the URL signing key (openkvs)",
                "description": "Gives the store a new `urlSigningSecretKey`, which voids every signature made with "
                "the old one (record signatures and signed `keysPublicUrl`/`recordsPublicUrl`). Owner only.",
                "parameters": [store_id],
                "responses": {"200": _store_object_response(), **_errors(*COMMON_ERRORS)},
            }
        },
        S + "/grants": {
            "get": {
                "tags": ["Storage/Key-value stores"],
                "operationId": "keyValueStore_grants_get",
                "summary": "List grants (openkvs)",
                "description": "The users other than the owner who may read or write the store. Owner only.",
                "parameters": [store_id],
                "responses": {"200": grants_response, **_errors(*COMMON_ERRORS)},
            },
            "put": {
                "tags": ["Storage/Key-value stores"],
                "operationId": "keyValueStore_grants_put",
                "summary": "Grant a user access (openkvs)",
                "description": "Adds or changes one user's grant. The user must exist and must not be the owner "
                "(400 otherwise). Owner only.",
                "parameters": [store_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("schemas", "GrantRequest")}},
                },
                "responses": {"200": grants_response, **_errors(*COMMON_ERRORS, "413", "415")},
            },
        },
        S + "/grants/{username}": {
            "delete": {
                "tags": ["Storage/Key-value stores"],
                "operationId": "keyValueStore_grant_delete",
                "summary": "Take a grant back (openkvs)",
                "description": "204 also when the user had no grant or does not exist. Owner only.",
                "parameters": [
                    store_id,
                    {
                        "name": "username", "in": "path", "required": True, "style": "simple",
                        "description": "Any string: a user without a grant (or no such user) is not an error.",
                        "schema": {"type": "string", "example": "bob"},
                    },
                ],
                "responses": {"204": _ref("responses", "NoContent"), **_errors(*COMMON_ERRORS)},
            }
        },
    }


def _add_components(c: dict[str, Any]) -> None:
    schemas, responses, params = c["schemas"], c["responses"], c["parameters"]
    schemas["ErrorType"]["enum"] = sorted(set(schemas["ErrorType"]["enum"]) | set(EXTRA_ERROR_TYPES))
    schemas["Grant"] = {
        "type": "object",
        "required": ["userId", "username", "access"],
        "properties": {
            "userId": {"type": "string"},
            "username": {"type": "string"},
            "access": {"type": "string", "enum": ["READ", "WRITE"]},
        },
    }
    schemas["GrantsResponse"] = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["items", "count"],
                "properties": {
                    "items": {"type": "array", "items": _ref("schemas", "Grant")},
                    "count": {"type": "integer", "minimum": 0},
                },
            }
        },
    }
    schemas["GrantRequest"] = {
        "type": "object",
        "required": ["username", "access"],
        "properties": {
            "username": {"type": "string", "pattern": rules.USERNAME.pattern},
            "access": {"type": "string", "enum": ["READ", "WRITE"]},
        },
        "example": {"username": "bob", "access": "READ"},
    }
    schemas["KeyValueStoreSchema"] = {
        "type": ["object", "null"],
        "description": "Key-value store schema: collections select a key (`key`) or keys (`keyPrefix`, exactly one of "
        "the two) and may restrict `contentTypes` and, for `[\"application/json\"]` only, a JSON Schema draft 7 "
        "(`jsonSchema`). Anything else: 400 `store-schema-invalid`.",
        "required": ["actorKeyValueStoreSchemaVersion"],
        "properties": {
            "actorKeyValueStoreSchemaVersion": {"type": "integer", "enum": [1]},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "collections": {"type": "object", "additionalProperties": {"type": "object"}},
        },
        "example": {
            "actorKeyValueStoreSchemaVersion": 1,
            "title": "Shop",
            "collections": {"images": {"title": "Images", "keyPrefix": "image-", "contentTypes": ["image/*"]}},
        },
    }
    schemas["CreateStoreRequest"] = {
        "type": ["object", "null"],
        "description": "Optional. Used only when the store is created. `null` is the same as no body.",
        "properties": {"schema": _ref("schemas", "KeyValueStoreSchema")},
    }
    schemas["KeyValueStoreStats"]["properties"]["recordCount"] = {
        "type": "integer", "minimum": 0, "examples": [1204],
        "description": "openkvs extension: the number of records in the store, exact at the moment of the answer "
        "(it changes in the same transaction as each record write and delete). The access counters beside it may "
        "lag a few seconds.",
    }
    schemas["KeyValueStoreKey"]["properties"]["contentType"] = {
        "type": "string", "examples": ["application/json; charset=utf-8"],
        "description": "openkvs extension: the record's Content-Type, as a GET of the record answers it.",
    }
    update = schemas["UpdateStoreRequest"]
    update["properties"]["name"] = {
        "type": ["string", "null"], "pattern": rules.STORE_NAME.pattern, "maxLength": rules.STORE_NAME.max_length
    }
    update["properties"]["schema"] = {
        **_ref("schemas", "KeyValueStoreSchema"),
        "description": "openkvs extension: replaces the store's schema (null removes it).",
    }
    responses["RangeNotSatisfiable"] = {
        **_error_response(
            "The Range cannot be satisfied.", "invalid-range", "The requested range is not satisfiable."
        ),
        "headers": {"Content-Range": {"schema": {"type": "string"}, "example": "bytes */1234"}},
    }
    responses["ServiceUnavailable"] = _error_response(
        "The storage is temporarily unavailable; retry later.", "service-unavailable",
        "The service is temporarily unavailable. Please try again later.",
    )
    # Apify types the store list's paging as floating point; it is an integer (a negative offset or limit: 400).
    # An empty value is the same as none (the default).
    def integer(minimum: int, maximum: int | None, default: int, example: int) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "integer", "minimum": minimum}
        if maximum is not None:
            number["maximum"] = maximum
        return {"anyOf": [number, {"type": "string", "maxLength": 0}], "default": default, "example": example}

    params["offset"]["schema"] = integer(0, rules.MAX_QUERY_INT, 0, 0)
    params["offset"]["description"] = f"Number of stores to skip: 0 to {rules.MAX_QUERY_INT}."
    params["limit"]["schema"] = integer(0, None, 1000, 1000)
    params["limit"]["description"] = (
        "Maximum number of items to return: 1 to 1000 (larger is clamped to 1000); 0 means the default, 1000."
    )
    params["limit-3"]["schema"] = integer(0, None, 1000, 100)
    params["limit-3"]["description"] = (
        "Number of keys to return: 1 to 1000 (larger is clamped to 1000); 0 means the default, 1000."
    )
    for name in ("exclusiveStartKey", "prefixKeys", "prefixRecords"):  # no key holds a NUL character: 400
        params[name]["schema"]["pattern"] = "^[^\\u0000]*$"
    params["recordKey"]["schema"] = {
        "type": "string", "pattern": rules.RECORD_KEY.pattern, "example": "someKey",
    }
    params["recordKey"]["description"] = "Key of the record: 1 to 256 of `a-zA-Z0-9!-_.'()`, not `.` or `..`."
    params["Range"] = {
        "name": "Range", "in": "header", "required": False,
        "description": "A single byte range (`bytes=0-99`) gets 206; an unsatisfiable one 416. A Range header that "
        "is not one valid byte range is ignored (RFC 9110): the whole body, 200.",
        "schema": {"type": "string", "example": "bytes=0-99"},
    }


def _patch_operations(paths: dict[str, Any]) -> None:
    for item in paths.values():
        for op in item.values():
            op["responses"].pop("402", None)  # no payments here
            op["responses"].setdefault("503", _ref("responses", "ServiceUnavailable"))
    name = next(p for p in paths[P]["post"]["parameters"] if p.get("name") == "name")
    name["schema"] = {
        "type": "string", "maxLength": rules.STORE_NAME.max_length, "example": "eshop-values",
        "anyOf": [{"pattern": rules.STORE_NAME.pattern}, {"const": ""}],
    }
    name["description"] = (
        "Store name: 1 to 63 letters, digits and dashes, not starting or ending with a dash. Empty: no name."
    )
    post = paths[P]["post"]
    post["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": _ref("schemas", "CreateStoreRequest")}},
    }
    post["responses"].update(_errors("413", "415"))
    paths[S]["get"]["responses"].pop("402", None)

    records = paths[S + "/records"]
    records["get"]["parameters"].append(_ref("parameters", "Range"))
    records["get"]["parameters"].append({  # an openkvs extension (README, "Download records as ZIP")
        "name": "safeNames", "in": "query", "required": False,
        "description": "`1` or `true`: rename entries whose keys can't be file names everywhere (too long, equal but "
        "for case, reserved on Windows) and list them in the entry `openkvs~names.json`.",
        "schema": {
            "anyOf": [{"type": "string", "enum": ["1", "0", "true", "false"]}, {"type": "string", "maxLength": 0}]
        },
    })
    records["get"]["responses"]["206"] = {
        "description": "The requested byte range of the same archive.",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
    records["get"]["responses"].update(_errors("416"))
    records["head"] = {
        **{k: v for k, v in records["get"].items() if k not in ("responses", "operationId", "summary")},
        "operationId": "keyValueStore_records_head",
        "summary": "Download records: headers only",
        "responses": {
            "200": {"description": "The headers the GET would send (exact Content-Length, ETag), no body."},
            "206": {"description": "The headers of the requested range."},
            **_errors("400", "401", "403", "404", "405", "416", "429", "503"),
        },
    }

    record = paths[S + "/records/{recordKey}"]
    get = record["get"]
    get["parameters"].append(_ref("parameters", "Range"))
    get["responses"].pop("302", None)  # records are always served directly
    get["responses"]["206"] = {"description": "The requested byte range.", "content": {"*/*": {"schema": {}}}}
    get["responses"]["304"] = {"description": "Not modified (If-None-Match matched the ETag)."}
    get["responses"].update(_errors("416"))
    record["head"]["parameters"].append(_ref("parameters", "signature"))
    for method in ("put", "post"):
        record[method]["responses"].update(_errors("413", "415"))
        record[method]["requestBody"]["required"] = False  # an empty body stores an empty record
        # A record is any JSON value (Apify says object), or any bytes of any content type.
        record[method]["requestBody"]["content"]["application/json"] = {"schema": {}}


@functools.cache
def _document() -> dict[str, Any]:
    doc = json.loads(BASE_PATH.read_text(encoding="utf-8"))
    doc["info"]["title"] = "openkvs: the Apify key-value store API"
    doc["info"]["description"] = (
        "The key-value store part of the Apify API (version 2), as served by openkvs, with openkvs's extensions "
        "(signing-key rotation, grants). Based on Apify's OpenAPI description (Apache-2.0)."
    )
    _add_components(doc["components"])
    _patch_operations(doc["paths"])
    doc["paths"].update(_extensions())
    openapi_queues.add_queues(doc)
    openapi_datasets.add_datasets(doc)
    return doc


def build(server_url: str | None = None) -> dict[str, Any]:
    """The description as a new dict; `servers` names server_url when given."""
    doc = copy.deepcopy(_document())
    doc["servers"] = [{"url": server_url}] if server_url else [{"url": "/"}]
    return doc


@functools.cache
def _rendered(server_url: str) -> bytes:
    return json.dumps(build(server_url), separators=(",", ":"), ensure_ascii=False).encode()


async def openapi_json(request: Request) -> Response:
    """GET|HEAD /v2/openapi.json (no token needed)."""
    from openkvs.api.common import public_base

    return Response(_rendered(public_base(request)), media_type="application/json")


def _convert(yaml_path: str) -> None:  # pragma: no cover - a maintainer's tool
    import yaml  # only needed here, never by the server

    data = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8"))
    BASE_PATH.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    _convert(sys.argv[1])
