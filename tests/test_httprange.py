"""openkvs.httprange: one small test per edge case of Range / If-Range."""

from __future__ import annotations

import pytest

from openkvs import httprange
from openkvs.httprange import (
    RangeNotSatisfiable,
    content_range,
    if_range_allows,
    parse_range,
    unsatisfied_range,
)

ETAG = '"3f2a9c"'


def test_absent_header():
    assert parse_range(None, 100) is None


def test_closed_range():
    assert parse_range("bytes=0-0", 100) == (0, 1)
    assert parse_range("bytes=10-19", 100) == (10, 20)
    assert parse_range("bytes=99-99", 100) == (99, 100)


def test_open_ended():
    assert parse_range("bytes=10-", 100) == (10, 100)
    assert parse_range("bytes=0-", 1) == (0, 1)


def test_last_byte_clamped_to_size():
    assert parse_range("bytes=10-1000", 100) == (10, 100)
    assert parse_range("bytes=0-99", 100) == (0, 100)


def test_suffix():
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-100", 100) == (0, 100)


def test_suffix_longer_than_representation_is_whole():
    assert parse_range("bytes=-500", 100) == (0, 100)


def test_whitespace_is_tolerated():
    assert parse_range("  bytes = 5 - 9 ", 100) == (5, 10)
    assert parse_range("bytes=\t-3", 100) == (97, 100)


def test_unit_is_case_insensitive():
    assert parse_range("Bytes=1-2", 100) == (1, 3)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1--2",
        "bytes=0x10-20",
        "bytes=1.5-2",
        "items=0-10",
        "0-10",
        "bytes 0-10",
    ],
)
def test_malformed_is_ignored(header):
    assert parse_range(header, 100) is None


def test_last_before_first_is_malformed():
    assert parse_range("bytes=20-10", 100) is None


def test_several_ranges_give_none():
    assert parse_range("bytes=0-1,5-6", 100) is None
    assert parse_range("bytes=0-1, -5", 100) is None


def test_more_than_a_hundred_ranges_give_none():
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(150))
    assert parse_range(header, 1000) is None


def test_start_past_end_is_unsatisfiable():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-200", 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=5000-", 100)


def test_zero_suffix_is_unsatisfiable():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 100)


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"])
def test_empty_representation_is_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 0)
    assert info.value.size == 0


def test_empty_representation_ignores_malformed_and_multi():
    assert parse_range("bytes=x", 0) is None
    assert parse_range("bytes=0-1,2-3", 0) is None


def test_if_range_absent_allows():
    assert if_range_allows(None, ETAG) is True


def test_if_range_same_strong_etag_allows():
    assert if_range_allows(ETAG, ETAG) is True
    assert if_range_allows(f" {ETAG} ", ETAG) is True


def test_if_range_other_etag_refuses():
    assert if_range_allows('"other"', ETAG) is False
    assert if_range_allows('"3f2a9"', ETAG) is False


def test_if_range_weak_etag_refuses():
    assert if_range_allows(f"W/{ETAG}", ETAG) is False
    assert if_range_allows(f"W/{ETAG}", f"W/{ETAG}") is False


def test_if_range_date_refuses():
    assert if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", ETAG) is False


def test_if_range_unquoted_refuses():
    assert if_range_allows("3f2a9c", "3f2a9c") is False


def test_content_range():
    assert content_range(0, 1, 10) == "bytes 0-0/10"
    assert content_range(90, 100, 100) == "bytes 90-99/100"


def test_content_range_rejects_empty_or_outside():
    with pytest.raises(ValueError):
        content_range(5, 5, 10)
    with pytest.raises(ValueError):
        content_range(5, 11, 10)


def test_unsatisfied_range():
    assert unsatisfied_range(0) == "bytes */0"
    assert unsatisfied_range(12345) == "bytes */12345"


def test_parsed_range_round_trips_to_content_range():
    start, end = parse_range("bytes=-7", 20)
    assert content_range(start, end, 20) == "bytes 13-19/20"


def test_select_whole_when_no_range_or_stale_if_range() -> None:
    assert httprange.select(None, None, '"a"', 10) == (0, 10, None)
    assert httprange.select("bytes=2-4", '"old"', '"a"', 10) == (0, 10, None)


def test_select_a_range_with_its_content_range() -> None:
    assert httprange.select("bytes=2-4", '"a"', '"a"', 10) == (2, 5, "bytes 2-4/10")
    assert httprange.select("bytes=-3", None, '"a"', 10) == (7, 10, "bytes 7-9/10")


def test_select_raises_past_the_end() -> None:
    with pytest.raises(httprange.RangeNotSatisfiable):
        httprange.select("bytes=10-", None, '"a"', 10)
