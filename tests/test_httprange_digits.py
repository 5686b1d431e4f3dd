"""Range positions of any length (issue 11 item 7): a position past Python's 4,300-digit int() limit, or in another
script's digits, is never an error of the server."""

from __future__ import annotations

import pytest

from openkvs.httprange import RangeNotSatisfiable, parse_range
from tests.conftest import Server

MANY = "9" * 5000


def test_huge_last_position_is_clamped() -> None:
    assert parse_range(f"bytes=0-{MANY}", 100) == (0, 100)
    assert parse_range(f"bytes=10-{'0' * 5000}99", 100) == (10, 100)  # leading zeros: the value is 99


def test_huge_first_position_is_unsatisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={MANY}-", 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={MANY}-{MANY}9", 100)


def test_huge_last_before_huger_first_is_ignored() -> None:
    assert parse_range(f"bytes={MANY}9-{MANY}", 100) is None


def test_huge_suffix_is_the_whole_representation() -> None:
    assert parse_range(f"bytes=-{MANY}", 100) == (0, 100)


def test_digits_of_other_scripts_are_not_positions() -> None:
    assert parse_range("bytes=\u0661-\u0662", 100) is None  # ARABIC-INDIC ONE and TWO, which int() accepts


def test_record_and_zip_with_a_5000_digit_range(sqlite_server: Server) -> None:
    with sqlite_server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "range-digits"}).json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{store}/records/a", content=b"hello").status_code == 201
        record = c.get(f"/v2/key-value-stores/{store}/records/a", headers={"Range": f"bytes=0-{MANY}"})
        assert (record.status_code, record.content) == (206, b"hello")
        assert record.headers["content-range"] == "bytes 0-4/5"
        zip_ = c.get(f"/v2/key-value-stores/{store}/records", headers={"Range": f"bytes=0-{MANY}"})
        assert zip_.status_code == 206 and zip_.content.startswith(b"PK")
        past = c.get(f"/v2/key-value-stores/{store}/records/a", headers={"Range": f"bytes={MANY}-"})
        assert past.status_code == 416 and past.json()["error"]["type"] == "invalid-range"
