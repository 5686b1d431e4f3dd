"""The input rules of request queues and dataset exports (openkvs/rules.py): one declaration gives the server's
check and the OpenAPI pattern, as for keys and names (tests/test_rules.py)."""

from __future__ import annotations

import re

import pytest

from openkvs import openapi, rules
from openkvs.api import queue_input
from openkvs.datasets import query


@pytest.mark.parametrize("key, ok", [
    ("a", True), ("client-abc", True), ("!~" * 16, True), ("a" * 33, False), ("", False), ("a b", False),
    ("é", False), ("a\u0000", False), ("\t", False), ("a\u007f", False), ("a\n", False),
])
def test_client_key(key: str, ok: bool) -> None:
    assert rules.CLIENT_KEY.ok(key) is ok


@pytest.mark.parametrize("request_id, ok", [
    ("abcDEF123456789", True), ("a" * 64, True), ("a" * 65, False), ("", False), ("a-b", False), ("a\n", False),
])
def test_request_id(request_id: str, ok: bool) -> None:
    assert rules.REQUEST_ID.ok(request_id) is ok
    assert queue_input.plausible_request_id(request_id) is ok


@pytest.mark.parametrize("name, ok", [
    ("items", True), ("_x", True), ("a.b-c_1", True), ("1a", False), ("", False), ("a b", False), ("a:b", False),
    ("item\n", False),
])
def test_xml_name(name: str, ok: bool) -> None:
    assert rules.XML_NAME.ok(name) is ok


def test_the_patterns_say_what_the_server_checks() -> None:
    for rule, samples in ((rules.CLIENT_KEY, ["a", "a" * 33, "a b", "~"]),
                          (rules.REQUEST_ID, ["a", "a-b", "a" * 65]),
                          (rules.XML_NAME, ["a", "1a", "_.-"])):
        for text in samples:
            assert (re.fullmatch(rule.pattern, text) is not None) is rule.ok(text), (rule.pattern, text)


def test_openapi_uses_the_rules() -> None:
    doc = openapi.build()
    params, schemas = doc["components"]["parameters"], doc["components"]["schemas"]
    assert params["clientKey"]["schema"]["pattern"] == rules.CLIENT_KEY.pattern
    assert schemas["RequestId"]["pattern"] == rules.REQUEST_ID.pattern
    for name in ("xmlRoot", "xmlRow"):
        assert params[name]["schema"]["anyOf"][0]["pattern"] == rules.XML_NAME.pattern
    assert params["offset"]["schema"]["anyOf"][0]["maximum"] == rules.MAX_QUERY_INT == query.MAX_INT
