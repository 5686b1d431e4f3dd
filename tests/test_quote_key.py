"""A record key in a URL (a PUT's Location, a listing's recordPublicUrl): ``quote_key`` is ``quote(key, safe="")``,
with or without its shortcut for keys that quoting leaves alone."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.api.records import quote_key
from tests.conftest import examples

PLAIN = st.text(alphabet="abcXYZ019_.-~", max_size=20)  # the shortcut's keys
NEAR = st.text(alphabet="aZ9_.-~/ %+?#&=:@!$'()*,;é\x00\U0001f600", max_size=20)  # and around them


@settings(max_examples=examples(500), deadline=None)
@given(key=st.one_of(PLAIN, NEAR, st.text(max_size=40)))
def test_quote_key_is_quote_with_nothing_safe(key: str) -> None:
    assert quote_key(key) == quote(key, safe="")
