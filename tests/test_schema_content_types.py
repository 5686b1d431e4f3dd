"""A collection's contentTypes are globs matched on the event loop (openkvs/schema.py): what one PUT may cost there
is bounded whatever the schema and the Content-Type say (attack run: a schema of 100 kB made one PUT with a
60,000-character type hold the server for 5 s; one of 4 MiB, for minutes)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from openkvs import errors, schema

SLOW = "*" + "?" * 1000 + "b"  # fnmatch: ".*" then 1,000 "." against the type, at every position


def _schema(types: list[str], collections: int = 1) -> dict[str, Any]:
    return {
        "actorKeyValueStoreSchemaVersion": 1,
        "collections": {f"c{i}": {"keyPrefix": "", "contentTypes": types} for i in range(collections)},
    }


def test_a_content_type_pattern_longer_than_a_media_type_is_refused() -> None:
    with pytest.raises(errors.StoreSchemaInvalid, match="at most 255 characters"):
        schema.validate_schema(_schema([SLOW]))
    assert schema.validate_schema(_schema(["image/*", "a" * 127 + "/" + "b" * 127]))


def test_at_most_a_thousand_content_types_in_a_schema() -> None:
    assert schema.validate_schema(_schema([f"t/{i}" for i in range(500)], collections=2))
    with pytest.raises(errors.StoreSchemaInvalid, match="more than 1000 contentTypes"):
        schema.validate_schema(_schema([f"t/{i}" for i in range(501)], collections=2))


def test_the_work_of_one_record_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema stored before these checks (taken as it is) and a type of 60,000 characters: the characters the
    globs are run on, counted, stay within the two bounds' product (they were 60 million per pattern)."""
    work = [0]
    real = fnmatch.fnmatchcase

    def counted(name: str, pattern: str) -> bool:
        work[0] += len(name) * len(pattern)
        return real(name, pattern)

    monkeypatch.setattr(schema.fnmatch, "fnmatchcase", counted)
    stored = _schema([SLOW] * 50 + ["*"])
    long_type = "a" * 60_000
    for cid, spec in schema.collections_for_key(stored, "k"):
        with pytest.raises(errors.SchemaValidationFailed, match=r"'a{255}\.\.\.' is not allowed"):
            schema.check_content_type(cid, spec, long_type)
    assert work[0] == 0
    # a type of a media type's length: only the patterns that could name one are run (the "*" matches it)
    for cid, spec in schema.collections_for_key(stored, "k"):
        schema.check_content_type(cid, spec, "a" * 255)
    assert work[0] <= schema.MEDIA_TYPE_MAX**2
