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


def test_names_remembered_are_bounded_whatever_clients_send() -> None:
    """A client sending a new header name with every request does not grow the remembered names past their bound,
    and the names past it are still given in lower case."""
    from openkvs.api import common

    for i in range(4 * common.LOWER_NAMES_KEPT):
        raw = [(f"X-Hostile-{i}".encode(), b"v"), (b"host", b"h")]
        assert _raw_header_dict(raw) == {f"x-hostile-{i}".encode(): b"v", b"host": b"h"}
        assert len(common._LOWER_NAMES) <= common.LOWER_NAMES_KEPT + 2  # (one request's names may cross it)
