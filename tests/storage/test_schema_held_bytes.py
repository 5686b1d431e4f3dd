"""What is held of store schemas is bounded by bytes as well as by count: a user may make many stores whose schemas
are near the 4 MiB cap, and a parsed schema takes several times its text's memory. Both places that keep them,
storage/schemas.py (the parsed value per store and text) and StoreMemo (a look-up's Store per store row), drop
what they hold past schemas.HELD_BYTES of text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openkvs.storage import schemas
from openkvs.storage.base import StoreMemo


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(schemas, "HELD_BYTES", 1000)
    monkeypatch.setattr(schemas, "_kept", {})
    monkeypatch.setattr(schemas, "_held", [0])
    return 1000


def schema_text(n: int, tag: str = "") -> str:
    return json.dumps({"title": tag, "pad": "x" * n})


def held_text() -> int:
    return sum(len(text) for text, _ in schemas._kept.values())


def test_parsed_schemas_held_stay_under_the_bound(small_bound: int) -> None:
    for i in range(50):  # 50 stores of ~300 bytes of schema: 15,000 bytes asked to be held
        text = schema_text(270, str(i))
        assert schemas.parsed(f"s{i}", text) == json.loads(text)
        assert held_text() <= small_bound
        assert schemas._held[0] == held_text()
    # a store whose schema changes in place is counted once
    for i in range(10):
        schemas.parsed("same", schema_text(100 + i))
        assert schemas._held[0] == held_text() <= small_bound


def test_a_schema_over_the_bound_is_parsed_but_not_held(small_bound: int) -> None:
    text = schema_text(2000)
    first, second = schemas.parsed("big", text), schemas.parsed("big", text)
    assert first == second == json.loads(text)
    assert first is not second  # parsed again: nothing of it held
    assert held_text() == 0


def test_a_schema_under_the_bound_is_parsed_once(small_bound: int) -> None:
    text = schema_text(100)
    assert schemas.parsed("s", text) is schemas.parsed("s", text)


def test_store_memo_holds_at_most_the_bound_of_text(small_bound: int) -> None:
    memo = StoreMemo()
    made: list[Any] = []

    def make(row: tuple[Any, ...]) -> Any:
        made.append(row)
        return object()

    for i in range(40):
        columns = (f"s{i}", "name", schema_text(200, str(i)), 7)
        store = memo.store(columns, make, columns)
        assert memo.store(columns, make, columns) is store  # unchanged row: the kept Store
        kept = sum(len(c) for cols, _ in memo._kept.values() for c in cols if isinstance(c, str))
        assert kept == memo._held <= small_bound
    assert len(made) == 40
    big = ("big", "name", schema_text(2000), 7)
    assert memo.store(big, make, big) is not memo.store(big, make, big)  # over the bound: made each time
