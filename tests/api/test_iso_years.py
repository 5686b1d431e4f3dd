"""Timestamps in answers are RFC 3339 whatever the year: a queue request's ``handledAt`` may be any date a client
sends, and strftime's %Y writes the year 38 as "38" (found by schemathesis: "38-07-22T13:15:06.000Z")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from openkvs import errors
from openkvs.api.common import iso
from openkvs.api.queue_input import normalise_time

RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("0038-07-22T13:15:06Z", "0038-07-22T13:15:06.000Z"),
        ("0001-01-01T00:00:00.5+00:00", "0001-01-01T00:00:00.500Z"),
        ("0999-12-31T23:59:59.999Z", "0999-12-31T23:59:59.999Z"),
        ("2026-12-02T08:00:00+01:00", "2026-12-02T07:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ],
)
def test_a_sent_timestamp_comes_back_as_rfc3339_utc(sent: str, stored: str) -> None:
    assert normalise_time(sent, "handledAt") == stored


def test_a_date_before_year_one_is_refused_not_wrapped() -> None:
    with pytest.raises(errors.InvalidInput):
        normalise_time("0001-01-01T00:00:00+01:00", "handledAt")


def test_iso_pads_every_field() -> None:
    for dt in (datetime(38, 7, 22, 13, 15, 6, tzinfo=UTC), datetime(5, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)):
        assert RFC3339_UTC.fullmatch(iso(dt)), iso(dt)
    assert iso(datetime(5, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == "0005-01-02T03:04:05.006Z"
