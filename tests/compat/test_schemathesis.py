"""Schemathesis (property-based, schema-driven) against a live openkvs: over Apify's official OpenAPI description of the
key-value store API, and over openkvs's own description (GET /v2/openapi.json, built by openkvs/openapi.py).

Bounded: a few examples per operation, no deadline, SQLite only. Every check schemathesis has runs, except those listed
with their reasons in tests/compat/EXCLUSIONS.md (mirrored in APIFY_EXCLUDED / OURS_EXCLUDED below).

The test shapes the generated data where the right value depends on server state no description can express: the
store ID is a real store (else every case is a 404), a `collection` is one the store's schema has, a grant names a
user who exists. A body sent with `Content-Encoding: gzip|br|deflate` is really compressed that way."""

from __future__ import annotations

import gzip
import json
import re
import secrets
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import brotli
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi import checks as st_checks

from openkvs import openapi, rules

pytestmark = pytest.mark.slow  # schemathesis: seconds per operation, and its cases are generated at collection

if TYPE_CHECKING:
    from tests.conftest import Server

# Apify's description: the yaml of the apify-docs repository (spec/apify-openapi-kvs.yaml), converted to JSON unchanged.
APIFY_DESCRIPTION = json.loads(openapi.BASE_PATH.read_text(encoding="utf-8"))

MAX_EXAMPLES = 12
FUZZ_SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "fuzz",
    "collections": {
        "images": {"title": "Images", "keyPrefix": "image-", "contentTypes": ["image/*"]},
        "report": {"title": "Report", "key": "REPORT", "contentTypes": ["application/json"]},
    },
}

# Checks not run, with the reason in EXCLUSIONS.md.
APIFY_EXCLUDED = [st_checks.positive_data_acceptance]
OURS_EXCLUDED: list[Any] = []
OURS_PER_OPERATION = {"DELETE /v2/key-value-stores/{storeId}": [st_checks.ignored_auth]}
APIFY_PER_OPERATION = {
    **OURS_PER_OPERATION,
    "GET /v2/key-value-stores/{storeId}/keys": [st_checks.negative_data_rejection],
    "PUT /v2/key-value-stores/{storeId}/records/{recordKey}": [st_checks.negative_data_rejection],
    "POST /v2/key-value-stores/{storeId}/records/{recordKey}": [st_checks.negative_data_rejection],
}

apify_schema = schemathesis.openapi.from_dict(APIFY_DESCRIPTION)
# The request-queue and dataset operations have suites of their own (test_schemathesis_queues.py,
# test_schemathesis_datasets.py: their cases need a queue, a dataset).
ours_schema = schemathesis.openapi.from_dict(openapi.build()).exclude(path_regex="^/v2/(request-queues|datasets)")


class Fuzz:
    """The live server and the state the cases are aimed at."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.auth = {"Authorization": f"Bearer {server.token}"}
        self.http = httpx.Client(base_url=server.url, headers=self.auth, timeout=30)
        self.session = requests.Session()
        server.new_user("bob")

    def store_id(self) -> str:
        """A store with a schema (get or create: a case may have deleted or renamed it)."""
        r = self.http.post("/v2/key-value-stores", params={"name": "fuzz-target"}, json={"schema": FUZZ_SCHEMA})
        assert r.status_code in (200, 201), r.text
        return r.json()["data"]["id"]

    def run(self, case: schemathesis.Case, excluded: list[Any], per_operation: dict[str, list[Any]]) -> None:
        # Our token, as a user-supplied credential (so the auth checks probe without it and with a wrong one);
        # never a generated ?token=.
        if case.query:
            case.query.pop("token", None)
        case.headers = {**(case.headers or {}), **self.auth}
        case._has_explicit_auth = True  # what schemathesis's own auth helpers set
        body = case.body if isinstance(case.body, dict) else {}
        body_positive = case.meta is None or not case.meta.is_negative_at(ParameterLocation.BODY)
        if body_positive and "schema" in body and body["schema"] is not None:
            body["schema"] = FUZZ_SCHEMA  # a schema's inner rules (one of key/keyPrefix, ...) are beyond OpenAPI
        if case.method.upper() == "PUT" and re.fullmatch(rules.STORE_NAME.pattern, str(body.get("name"))):
            body["name"] = f"renamed-{secrets.token_hex(6)}"  # store names are unique per owner
        if case.path_parameters and "storeId" in case.path_parameters:
            case.path_parameters["storeId"] = self.store_id()
        if case.query and case.query.get("collection") not in (None, *FUZZ_SCHEMA["collections"]):
            case.query["collection"] = "images"
        if case.path.endswith("/grants") and case.method.upper() == "PUT" and isinstance(case.body, dict):
            case.body["username"] = "bob"
        response = send(self.session, case.as_transport_kwargs(base_url=self.server.url))
        label = f"{case.method.upper()} {case.path}"
        excluded = [*excluded, *per_operation.get(label, [])]
        if key_negation_is_not_one(case) or has_empty_value(case):
            excluded.append(st_checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded)


def key_negation_is_not_one(case: schemathesis.Case) -> bool:
    """Schemathesis judges a path parameter on its percent-encoded form, so a "negative" record key made only of
    allowed characters that get encoded (' ( ) !) is really a valid key: the server rightly accepts it. Such a case
    (the path its only negative part) tells nothing about rejection."""
    meta = case.meta
    key = (case.path_parameters or {}).get("recordKey")
    if meta is None or meta.generation.mode != GenerationMode.NEGATIVE or not isinstance(key, str):
        return False
    negative = {loc for loc, comp in meta.components.items() if comp.mode.is_negative}
    return negative == {ParameterLocation.PATH} and re.fullmatch(rules.RECORD_KEY.pattern, unquote(key)) is not None


def has_empty_value(case: schemathesis.Case) -> bool:
    """openkvs reads an empty query value or header (`?ownership=`, `Content-Encoding:`) as absent (EXCLUSIONS.md),
    so a negative case that empties one is answered as if the parameter were not there."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.NEGATIVE:
        return False
    values = [*(case.query or {}).values(), *(case.headers or {}).values()]
    if any(isinstance(v, str) and not v.strip() for v in values):
        return True
    # Unknown query parameters are ignored (EXCLUSIONS.md), so a negative case that only adds one is accepted.
    declared = {p.name for p in case.operation.query} | {"token"}
    negative = {loc for loc, comp in case.meta.components.items() if comp.mode.is_negative}
    return negative == {ParameterLocation.QUERY} and bool(set(case.query or {}) - declared)


def send(session: requests.Session, kwargs: dict[str, Any]) -> requests.Response:
    """Send as schemathesis would, except that a body with `Content-Encoding: gzip|br|deflate` is really compressed
    that way (schemathesis sends the header with a plain body)."""
    kwargs = dict(kwargs)
    kwargs.pop("timeout", None)
    kwargs.pop("allow_redirects", None)
    kwargs.pop("verify", None)
    prepared = session.prepare_request(requests.Request(**kwargs))
    encoding = prepared.headers.get("Content-Encoding", "").strip()
    compress = {"gzip": gzip.compress, "br": brotli.compress, "deflate": zlib.compress}.get(encoding)
    if compress is not None:
        body = prepared.body or b""
        body = body.encode() if isinstance(body, str) else bytes(body)
        prepared.body = compress(body)
        prepared.headers["Content-Length"] = str(len(prepared.body))
    return session.send(prepared, timeout=30, allow_redirects=False)


@pytest.fixture(scope="module")
def fuzz(compat_server: Server) -> Iterator[Fuzz]:
    f = Fuzz(compat_server)
    yield f
    f.http.close()
    f.session.close()


# derandomize: the same cases on every run, so CI is reproducible; new cases come from changing the descriptions.
BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@apify_schema.parametrize()
@BOUNDED
def test_apify_description(case: schemathesis.Case, fuzz: Fuzz) -> None:
    fuzz.run(case, APIFY_EXCLUDED, APIFY_PER_OPERATION)


@ours_schema.parametrize()
@BOUNDED
def test_openkvs_description(case: schemathesis.Case, fuzz: Fuzz) -> None:
    fuzz.run(case, OURS_EXCLUDED, OURS_PER_OPERATION)


def test_served_description_is_the_built_one(compat_server: Server) -> None:
    r = httpx.get(compat_server.url + "/v2/openapi.json", timeout=30)  # no token needed
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    served = r.json()
    assert served["servers"] == [{"url": compat_server.url}]
    assert {**served, "servers": None} == {**openapi.build(), "servers": None}
    ours = {(path, m) for path, item in served["paths"].items() for m in item}
    assert ("/v2/key-value-stores/{storeId}/records", "head") in ours
    assert ("/v2/key-value-stores/{storeId}/signing-key", "post") in ours
    assert ("/v2/key-value-stores/{storeId}/grants/{username}", "delete") in ours
