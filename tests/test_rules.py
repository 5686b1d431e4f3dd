"""The input rules (openkvs/rules.py): the Python check and the OpenAPI pattern are one rule."""

from __future__ import annotations

import re

import pytest

from openkvs import openapi, rules


@pytest.mark.parametrize("key, ok", [
    ("a", True), ("a" * 256, True), ("a" * 257, False), ("Some-key_1!'().x", True), ("...", True), (".a", True),
    (".", False), ("..", False), ("", False), ("key\n", False), ("a/b", False), ("a b", False), ("ключ", False),
])
def test_record_key(key: str, ok: bool) -> None:
    assert rules.RECORD_KEY.ok(key) is ok


@pytest.mark.parametrize("name, ok", [
    ("a", True), ("my-store-1", True), ("a" * 63, True), ("a" * 64, False), ("-a", False), ("a-", False),
    ("a_b", False), ("", False), ("name\n", False),
])
def test_store_name(name: str, ok: bool) -> None:
    assert rules.STORE_NAME.ok(name) is ok


@pytest.mark.parametrize("name, ok", [
    ("bob", True), ("a.b_c-d", True), ("x" * 30, True), ("ab", False), ("x" * 31, False), ("bob\n", False),
    ("bo b", False), ("bo~b", False),
])
def test_username(name: str, ok: bool) -> None:
    assert rules.USERNAME.ok(name) is ok


def test_the_openapi_pattern_says_what_the_server_checks() -> None:
    """A JSON Schema validator reads the pattern with "$" as the end of the text; \\Z is its Python spelling."""
    for rule, samples in ((rules.RECORD_KEY, ["a", ".", "..", "a.b", "x" * 256, "a b"]),
                          (rules.STORE_NAME, ["a", "-a", "a-b", "a" * 63]),
                          (rules.USERNAME, ["bob", "ab", "b.o_b"])):
        for text in samples:
            assert (re.fullmatch(rule.pattern, text) is not None) is rule.ok(text), (rule.pattern, text)


def test_openapi_uses_the_rules() -> None:
    doc = openapi.build()
    assert doc["components"]["parameters"]["recordKey"]["schema"]["pattern"] == rules.RECORD_KEY.pattern
    assert doc["components"]["schemas"]["GrantRequest"]["properties"]["username"]["pattern"] == rules.USERNAME.pattern
    name = doc["components"]["schemas"]["UpdateStoreRequest"]["properties"]["name"]
    assert (name["pattern"], name["maxLength"]) == (rules.STORE_NAME.pattern, rules.STORE_NAME.max_length)


def test_general_access_values() -> None:
    assert rules.GENERAL_ACCESS == ("FOLLOW_USER_SETTING", "RESTRICTED", "ANYONE_WITH_ID_CAN_READ",
                                    "ANYONE_WITH_NAME_CAN_READ")
    assert set(rules.GENERAL_ACCESS_LEVELS) == set(rules.GENERAL_ACCESS) - {rules.FOLLOW_USER_SETTING}
