"""The request-queue part of GET /v2/openapi.json: Apify's own description of the 17 request-queue operations
(openapi_queues.json: the nine ``/v2/request-queues`` paths of shared/spec/apify-openapi-datasets-rq.yaml with every
component they reference, Apache-2.0, converted once to JSON), made to say what openkvs accepts
(API-request-queues.md): integer limits and ``lockSecs``, ``clientKey``'s characters, ``forefront`` as a boolean,
no 402, 503 when the storage is away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openkvs import rules
from openkvs.api.queue_input import MAX_TEXT_BYTES
from openkvs.rules import MAX_BATCH, MAX_QUERY_INT
from openkvs.storage.queues import MAX_LOCK_SECS

QUEUES_PATH = Path(__file__).with_name("openapi_queues.json")
BOOLEAN = {"anyOf": [{"type": "string", "enum": ["1", "0", "true", "false"]}, {"type": "string", "maxLength": 0}]}


def _integer(default: int, maximum: int, what: str) -> dict[str, Any]:
    return {
        "schema": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 0}],
                   "default": default, "example": default},
        "description": f"{what}: 1 to {maximum} (larger is clamped to {maximum}); 0 means the default, {default}.",
    }


def _patch_schemas(schemas: dict[str, Any]) -> None:
    """The request object as API-request-queues.md section 3 takes it, and the answers' nulls."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_BYTES, "pattern": "^[^\\u0000]*$"}
    schemas["UniqueKey"].update(text)
    schemas["RequestUrl"].update(text)
    schemas["RequestId"].update({"pattern": rules.REQUEST_ID.pattern})
    schemas["RetryCount"].update({"minimum": 0, "maximum": MAX_QUERY_INT})
    # A member whose value is null is dropped, as if absent (section 3).
    schemas["RequestUserData"]["type"] = ["object", "null"]
    schemas["RetryCount"]["type"] = ["integer", "null"]
    schemas["RequestMethod"] = {"anyOf": [{"$ref": "#/components/schemas/HttpMethod"}, {"type": "null"}]}
    schemas["RequestBase"]["properties"]["errorMessages"]["items"] = {"type": "string"}
    for name in ("RequestDraftDeleteById", "RequestDraftDeleteByUniqueKey"):
        props = schemas[name]["properties"]
        for field in ("id", "uniqueKey"):
            if field not in schemas[name]["required"]:
                props[field] = {"anyOf": [props[field], {"type": "null"}]}
    for field in ("cursor", "nextCursor", "exclusiveStartId"):  # null when not given / at the end
        schemas["ListOfRequests"]["properties"][field]["type"] = ["string", "null"]
    schemas["LockedRequestQueueHead"]["properties"]["clientKey"]["type"] = ["string", "null"]
    update = schemas["UpdateRequestQueueRequest"]["properties"]
    update["name"].update({"pattern": rules.STORE_NAME.pattern, "maxLength": rules.STORE_NAME.max_length})
    update["title"] = {"type": ["string", "null"], "maxLength": 200}


def add_queues(doc: dict[str, Any]) -> None:
    """Add the request-queue paths and their components to ``doc`` (components it has already are kept)."""
    part = json.loads(QUEUES_PATH.read_text(encoding="utf-8"))
    for kind, found in part["components"].items():
        mine = doc["components"].setdefault(kind, {})
        for name, value in found.items():
            mine.setdefault(name, value)
    names = {t["name"] for t in doc.get("tags", [])}
    doc.setdefault("tags", []).extend(t for t in part["tags"] if t["name"] not in names)
    params = doc["components"]["parameters"]
    params["clientKey"]["schema"] = {"type": "string", "pattern": rules.CLIENT_KEY.pattern, "example": "client-abc"}
    for name in ("forefront", "deleteForefront", "lockForefront"):
        params[name]["schema"] = {**BOOLEAN, "default": "false"}
    params["lockSecs"]["schema"] = {"type": "integer", "minimum": 1, "maximum": MAX_LOCK_SECS, "example": 60}
    params["lockSecs"]["description"] = f"How long the lock lasts, in whole seconds: 1 to {MAX_LOCK_SECS}."
    params["headLimit"].update(_integer(100, 1000, "How many requests of the head"))
    params["headLockLimit"].update(_integer(25, 25, "How many requests to lock"))
    params["listLimit"].update(_integer(1000, 10_000, "How many requests"))
    params["exclusiveStartId"]["schema"] = {"type": "string", "pattern": "^[^\\u0000]*$"}
    params["cursor"]["description"] = "The `nextCursor` of the previous page; any other value is 400."
    for path, item in part["paths"].items():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                op["responses"].pop("402", None)  # no payments here
                op["responses"].setdefault("503", {"$ref": "#/components/responses/ServiceUnavailable"})
        doc["paths"][path] = item
    _patch_schemas(doc["components"]["schemas"])
    name = next(p for p in part["paths"]["/v2/request-queues"]["post"]["parameters"] if p.get("name") == "name")
    name["schema"] = {
        "type": "string", "maxLength": rules.STORE_NAME.max_length, "example": "my-crawl",
        "anyOf": [{"pattern": rules.STORE_NAME.pattern}, {"const": ""}],
    }
    batch = part["paths"]["/v2/request-queues/{queueId}/requests/batch"]
    for method in ("post", "delete"):
        body = batch[method]["requestBody"]["content"]["application/json"]["schema"]
        body["minItems"], body["maxItems"] = 1, MAX_BATCH
