"""Schemathesis over the 17 request-queue operations: Apify's own description of them
(shared/spec/apify-openapi-datasets-rq.yaml, as openkvs/openapi_queues.json holds it) and openkvs's
(GET /v2/openapi.json), against a live SQLite server. Bounded and derandomized as tests/compat/test_schemathesis.py.

The test aims the generated data where the right value depends on state no description can express: the queue is
a real queue; a request ID in a path is the one derived from the body's uniqueKey (or a request that exists); a
body ``id`` is dropped (it may only repeat the derived one); a cursor is one the server issued.

Checks not run: on Apify's description, ``positive_data_acceptance`` (it allows what the contract refuses: any
``lockSecs`` number, any string as ``forefront`` or ``clientKey``), as for the key-value store description
(EXCLUSIONS.md), and ``response_schema_conformance`` where openkvs answers null (``cursor``, ``nextCursor``,
``exclusiveStartId`` of a list, ``clientKey`` of head/lock without one: the contract's "given or null", which
openkvs's own description states), and ``negative_data_rejection`` for the operations that take a request (a
null member is taken as absent, where Apify's types say integer or string); on both, ``ignored_auth`` for DELETE of a queue (a case deletes the queue the
next one needs)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as st_checks

from openkvs import openapi, openapi_queues
from openkvs.api.queue_input import encode_cursor
from openkvs.requestid import request_id

from .test_schemathesis import BOUNDED, has_empty_value, send

pytestmark = pytest.mark.slow  # schemathesis: seconds per operation, and its cases are generated at collection

if TYPE_CHECKING:
    from tests.conftest import Server


def _apify_queues() -> dict[str, Any]:
    part = json.loads(openapi_queues.QUEUES_PATH.read_text(encoding="utf-8"))
    base = json.loads(openapi.BASE_PATH.read_text(encoding="utf-8"))
    return {**base, "paths": part["paths"], "components": part["components"], "tags": part["tags"]}


def _ours_queues() -> dict[str, Any]:
    doc = openapi.build()
    doc["paths"] = {p: v for p, v in doc["paths"].items() if p.startswith("/v2/request-queues")}
    return doc


apify_schema = schemathesis.openapi.from_dict(_apify_queues())
ours_schema = schemathesis.openapi.from_dict(_ours_queues())
PER_OPERATION = {"DELETE /v2/request-queues/{queueId}": [st_checks.ignored_auth]}
# A string holding NUL (which PostgreSQL text cannot hold) is refused anywhere in a request, member names
# included; no description can say so at every depth of userData, headers and payload.
OURS_PER_OPERATION = {
    **PER_OPERATION,
    "POST /v2/request-queues/{queueId}/requests": [st_checks.positive_data_acceptance],
    "POST /v2/request-queues/{queueId}/requests/batch": [st_checks.positive_data_acceptance],
    "PUT /v2/request-queues/{queueId}/requests/{requestId}": [st_checks.positive_data_acceptance],
    "DELETE /v2/request-queues/{queueId}/requests/batch": [st_checks.negative_data_rejection],
}
APIFY_PER_OPERATION = {
    **PER_OPERATION,
    "GET /v2/request-queues/{queueId}/requests": [st_checks.response_schema_conformance],
    "POST /v2/request-queues/{queueId}/head/lock": [st_checks.response_schema_conformance],
    # a null member of a request is taken as absent (API-request-queues.md section 3), where Apify's types say
    # integer or string
    "POST /v2/request-queues/{queueId}/requests": [st_checks.negative_data_rejection],
    "POST /v2/request-queues/{queueId}/requests/batch": [st_checks.negative_data_rejection],
    "PUT /v2/request-queues/{queueId}/requests/{requestId}": [st_checks.negative_data_rejection],
    "DELETE /v2/request-queues/{queueId}/requests/batch": [st_checks.negative_data_rejection],
}
KNOWN = "https://example.com/known"


class QueueFuzz:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.auth = {"Authorization": f"Bearer {server.token}"}
        self.http = httpx.Client(base_url=server.url, headers=self.auth, timeout=30)
        self.session = requests.Session()

    def queue_id(self) -> str:
        """A queue holding one request (get or create: a case may have deleted or renamed it)."""
        r = self.http.post("/v2/request-queues", params={"name": "fuzz-queue"})
        assert r.status_code in (200, 201), r.text
        qid: str = r.json()["data"]["id"]
        self.http.post(f"/v2/request-queues/{qid}/requests", json={"url": KNOWN, "uniqueKey": KNOWN})
        return qid

    def run(self, case: schemathesis.Case, excluded: list[Any], per_operation: dict[str, list[Any]]) -> None:
        if case.query:
            case.query.pop("token", None)
        case.headers = {**(case.headers or {}), **self.auth}
        case._has_explicit_auth = True
        positive = case.meta is None or not any(c.mode.is_negative for c in case.meta.components.values())
        body_positive = case.meta is None or not case.meta.is_negative_at(ParameterLocation.BODY)
        if case.path_parameters and "queueId" in case.path_parameters:
            case.path_parameters["queueId"] = self.queue_id()
        if body_positive:
            for item in case.body if isinstance(case.body, list) else [case.body]:
                if isinstance(item, dict) and isinstance(item.get("uniqueKey"), str):
                    item.pop("id", None)  # only the derived ID is valid there
        if case.method.upper() == "PUT" and isinstance(case.body, dict) and "name" in case.body:
            if isinstance(case.body["name"], str) and re.fullmatch(r"[a-zA-Z0-9-]+", case.body["name"]):
                case.body["name"] = "fuzz-queue"  # names are unique per owner: keep the queue findable
        if positive and case.path_parameters and "requestId" in case.path_parameters:
            unique_key = case.body.get("uniqueKey") if isinstance(case.body, dict) else None
            case.path_parameters["requestId"] = request_id(unique_key if isinstance(unique_key, str) else KNOWN)
            if case.path.endswith("/lock"):  # free the request of the locks other cases took (another clientKey's)
                qid = case.path_parameters["queueId"]
                self.http.delete(f"/v2/request-queues/{qid}/requests/{request_id(KNOWN)}")
                self.http.post(f"/v2/request-queues/{qid}/requests", json={"url": KNOWN, "uniqueKey": KNOWN})
        if positive and case.query:
            if "cursor" in case.query:
                case.query["cursor"] = encode_cursor(request_id(KNOWN))
            if "exclusiveStartId" in case.query:
                case.query.pop("cursor", None)
                case.query.pop("filter", None)
        response = send(self.session, case.as_transport_kwargs(base_url=self.server.url))
        label = f"{case.method.upper()} {case.path}"
        excluded = [*excluded, *per_operation.get(label, [])]
        if has_empty_value(case):
            excluded.append(st_checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded)


@pytest.fixture(scope="module")
def fuzz(compat_server: Server) -> Iterator[QueueFuzz]:
    f = QueueFuzz(compat_server)
    yield f
    f.http.close()
    f.session.close()


@apify_schema.parametrize()
@BOUNDED
def test_apify_queue_description(case: schemathesis.Case, fuzz: QueueFuzz) -> None:
    fuzz.run(case, [st_checks.positive_data_acceptance], APIFY_PER_OPERATION)


@ours_schema.parametrize()
@BOUNDED
def test_openkvs_queue_description(case: schemathesis.Case, fuzz: QueueFuzz) -> None:
    fuzz.run(case, [], OURS_PER_OPERATION)
