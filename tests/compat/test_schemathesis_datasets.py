"""Schemathesis against a live openkvs over the dataset operations: Apify's own description of them
(apify-openapi-datasets-rq.yaml, kept as openkvs/openapi_datasets.json) and openkvs's description
(GET /v2/openapi.json, the same operations patched by openkvs/openapi_datasets.py).

As tests/compat/test_schemathesis.py (its helpers, bounds and case filters): every check runs except those listed
with their reasons in tests/compat/EXCLUSIONS.md ("Datasets"). The generated data is aimed at a real dataset (else
every case is a 404) and a schema in a body is replaced by a valid dataset schema (its rules are beyond OpenAPI)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as st_checks

from openkvs import openapi, openapi_datasets, rules
from tests.compat.test_schemathesis import BOUNDED, Fuzz, has_empty_value, send

pytestmark = pytest.mark.slow  # schemathesis: seconds per operation, and its cases are generated at collection

if TYPE_CHECKING:
    from tests.conftest import Server

_part = json.loads(openapi_datasets.DATASETS_PATH.read_text(encoding="utf-8"))
APIFY_DESCRIPTION = {
    "openapi": "3.1.0",
    "info": {"title": "Apify API: datasets", "version": "v2"},
    "servers": [{"url": "/"}],
    "paths": _part["paths"],
    "components": _part["components"],
}
FUZZ_SCHEMA = {
    "actorSpecification": 1,
    "fields": {"type": "object", "properties": {"url": {"type": "string"}}},
    "views": {"overview": {"title": "Overview", "transformation": {"fields": ["url"]}}},
}

# Checks not run, with the reason in EXCLUSIONS.md ("Datasets").
APIFY_EXCLUDED = [st_checks.positive_data_acceptance]
OURS_EXCLUDED: list[Any] = []
OURS_PER_OPERATION = {"DELETE /v2/datasets/{datasetId}": [st_checks.ignored_auth]}
APIFY_PER_OPERATION = dict(OURS_PER_OPERATION)

apify_schema = schemathesis.openapi.from_dict(APIFY_DESCRIPTION)
ours_schema = schemathesis.openapi.from_dict(openapi.build()).include(path_regex="^/v2/datasets")


class DatasetFuzz(Fuzz):
    def dataset_id(self) -> str:
        r = self.http.post("/v2/datasets", params={"name": "fuzz-dataset"}, json={"schema": FUZZ_SCHEMA})
        assert r.status_code in (200, 201), r.text
        did = r.json()["data"]["id"]
        self.http.post(f"/v2/datasets/{did}/items", json=[{"url": "u", "#h": 1, "tags": ["a"]}])
        return did

    def run(self, case: schemathesis.Case, excluded: list[Any], per_operation: dict[str, list[Any]]) -> None:
        if case.query:
            case.query.pop("token", None)
            if case.query.get("view") not in (None, "overview"):
                case.query["view"] = "overview"  # a view is valid only if the dataset's schema has it
        case.headers = {**(case.headers or {}), **self.auth}
        case._has_explicit_auth = True
        body = case.body if isinstance(case.body, dict) else {}
        body_positive = case.meta is None or not case.meta.is_negative_at(ParameterLocation.BODY)
        if body_positive and "schema" in body and body["schema"] is not None:
            body["schema"] = FUZZ_SCHEMA
        if case.method.upper() == "PUT" and re.fullmatch(rules.STORE_NAME.pattern, str(body.get("name"))):
            body["name"] = f"renamed-{secrets.token_hex(6)}"  # names are unique per owner
        if case.path_parameters and "datasetId" in case.path_parameters:
            case.path_parameters["datasetId"] = self.dataset_id()
        response = send(self.session, case.as_transport_kwargs(base_url=self.server.url))
        label = f"{case.method.upper()} {case.path}"
        excluded = [*excluded, *per_operation.get(label, [])]
        if has_empty_value(case):
            excluded.append(st_checks.negative_data_rejection)
        if json_with_bom(case):
            excluded.append(st_checks.response_schema_conformance)
        if output_fields_unmatched(case):
            excluded.append(st_checks.positive_data_acceptance)
        case.validate_response(response, excluded_checks=excluded)


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def json_with_bom(case: schemathesis.Case) -> bool:
    """``bom=1`` on a JSON export: the body starts with the UTF-8 BOM, as asked (contract 6.3), which a strict JSON
    reader refuses."""
    q = case.query or {}
    return _flag(q.get("bom")) and str(q.get("format") or "json").lower() in ("json", "jsonl")


def output_fields_unmatched(case: schemathesis.Case) -> bool:
    """``outputFields`` renames ``fields`` one by one, so it needs them, as many (contract 4.5: else 400); a
    description can't say that one parameter's length depends on another's."""
    q = case.query or {}
    if q.get("outputFields") in (None, ""):
        return False
    names = [n for n in str(q.get("fields") or "").split(",") if n]
    return len(names) != len([n for n in str(q["outputFields"]).split(",") if n])


@pytest.fixture(scope="module")
def fuzz(compat_server: Server) -> Iterator[DatasetFuzz]:
    f = DatasetFuzz(compat_server)
    yield f
    f.http.close()
    f.session.close()


@apify_schema.parametrize()
@BOUNDED
def test_apify_dataset_description(case: schemathesis.Case, fuzz: DatasetFuzz) -> None:
    fuzz.run(case, APIFY_EXCLUDED, APIFY_PER_OPERATION)


@ours_schema.parametrize()
@BOUNDED
def test_openkvs_dataset_description(case: schemathesis.Case, fuzz: DatasetFuzz) -> None:
    fuzz.run(case, OURS_EXCLUDED, OURS_PER_OPERATION)
