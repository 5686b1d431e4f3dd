"""The text access line (openkvs/observe.py), field by field, from the layer itself in process: the numbers that are
looked up rather than formatted, the duration's rounding and the escaping of what a client put in the path."""

from __future__ import annotations

import asyncio
import re
import time
import types
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.observe import LineWriter, Observe, duration_text
from tests.conftest import examples


@settings(max_examples=examples(500), deadline=None)
@given(ns=st.one_of(st.integers(0, 10**12), st.integers(0, 2_000_000).map(lambda n: n * 50_000)))
def test_duration_is_milliseconds_with_one_decimal_rounded_half_up(ns: int) -> None:
    # (multiples of 50 us: every tie between two tenths of a millisecond)
    expected = (Decimal(ns) / Decimal(1_000_000)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    assert duration_text(ns) == str(expected)


def _lines(status: int, body: bytes, raw_path: bytes, query: bytes = b"", took_ns: int = 0) -> list[str]:
    """The lines of one request through Observe, whose clock says it took ``took_ns``."""
    written: list[str] = []
    readings = iter([10**12, 10**12 + took_ns])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def run() -> None:
        writer = LineWriter(written.append)
        observe = Observe(app, log_format="text", with_metrics=False, templates={}, download_route="/d",
                          trusted=[], writer=writer)
        scope = {"type": "http", "method": "GET", "path": raw_path.decode("latin-1"), "raw_path": raw_path,
                 "query_string": query, "headers": [], "client": ("192.0.2.1", 1234), "http_version": "1.1"}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            pass

        await observe(scope, receive, send)
        writer.flush()

    clock = types.SimpleNamespace(perf_counter_ns=lambda: next(readings), time=time.time, gmtime=time.gmtime,
                                  strftime=time.strftime)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("openkvs.observe.time", clock)
        asyncio.run(run())
    return "".join(written).splitlines()


LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [0-9a-f]{8}-1 192\.0\.2\.1 - "(.*)" (\d+) (\d+) (\d+\.\d)ms$')


def test_status_size_and_duration_fields() -> None:
    cases = [(200, b"x" * 1024, 812_345), (404, b"", 50_000), (599, b"y" * 123_456, 99_949_999), (999, b"z", 0),
             (201, b"{}", 99_950_000), (500, b"", 123_456_789_012)]
    for status, body, took_ns in cases:
        (line,) = _lines(status, body, b"/v2/key-value-stores/s/records/k", took_ns=took_ns)
        m = LINE.match(line)
        assert m is not None, line
        assert m[1] == "GET /v2/key-value-stores/s/records/k HTTP/1.1"
        assert (m[2], m[3], m[4]) == (str(status), str(len(body)), duration_text(took_ns))


def test_quotes_and_control_characters_are_escaped() -> None:
    (line,) = _lines(200, b"", b'/a"b\x01c\x7fd\xa0e', b"token=secret&x=1")
    m = LINE.match(line)
    assert m is not None, line
    assert m[1] == 'GET /a\\"b\\x01c\\x7fd\\xa0e?token=REDACTED&x=1 HTTP/1.1'
    assert len(line.splitlines()) == 1
