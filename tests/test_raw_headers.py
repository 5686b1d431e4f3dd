"""A request's headers by name (api/common.py ``_raw_header_dict``): names in lower case, the first of repeated
headers winning, whatever case the ASGI server sent them in, request after request (the names it has seen in lower
case are remembered, and a name seen so must not let a differently cased one through unlowered)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.api.common import _raw_header_dict
from tests.conftest import examples

NAMES = st.sampled_from([b"authorization", b"Authorization", b"AUTHORIZATION", b"range", b"Range", b"x-1", b"123",
                         b"if-none-match", b"If-None-Match", b"host"])
HEADERS = st.lists(st.tuples(NAMES, st.binary(max_size=3)), max_size=6)


def _expected(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        found.setdefault(name.lower(), value)
    return found


@settings(max_examples=examples(300), deadline=None)
@given(requests=st.lists(HEADERS, min_size=1, max_size=8))
def test_names_in_lower_case_the_first_winning(requests: list[list[tuple[bytes, bytes]]]) -> None:
    for raw in requests:
        assert _raw_header_dict(raw) == _expected(raw)
