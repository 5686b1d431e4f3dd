"""A push's stored items are compact JSON without a raw newline byte, by both preparation paths (the C of
datasets/_cpush.c and the Python of api/items.py): storage joins them by b"\\n" several to a row
(storage/datasets.py, packed_rows) and splits rows back at those bytes."""

from __future__ import annotations

import json

import pytest

from openkvs.api import items as push_items
from openkvs.storage.datasets import packed_rows

VALUES = [
    {"text": "line one\nline two\r\n\tend", "nested": {"list": ["a\nb", {"deep": "\n"}], "n": 1.5}},
    {"multi": "\n" * 20, "unicode": "é\u2028\u2029\n😀", "key\nwith newline": True},
    {"plain": 1},
]
BODIES = [
    json.dumps(VALUES, indent=4).encode(),  # pretty-printed: newlines between every token
    json.dumps(VALUES, indent="\t", ensure_ascii=False).encode(),
    json.dumps(VALUES[0], indent=2).encode(),  # one object, not an array
    b"[\n\n" + b",\n".join(json.dumps(v, separators=(",\n", ":\n")).encode() for v in VALUES) + b"\n]\n",
    b'\r\n[ {"a" :\n"x\\ny"\n}\r\n,\n{"b":[\n1,\n2\n]} ]\n',
]


def paths() -> list[bool]:
    try:
        from openkvs.datasets import _cpush  # noqa: F401
    except ImportError:
        return [False]
    return [True, False]


@pytest.mark.parametrize("c", paths(), ids=lambda c: "c" if c else "python")
@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_stored_items_hold_no_raw_newline_and_pack_into_rows(body: bytes, c: bool) -> None:
    saved = push_items._cpush
    push_items._cpush = saved if c else None
    try:
        push = push_items.prepare_push_body(body, None)
    finally:
        push_items._cpush = saved
    parsed = json.loads(body)
    want = parsed if isinstance(parsed, list) else [parsed]
    assert [json.loads(b) for b in push.items] == want
    assert all(b"\n" not in b for b in push.items)
    rows = packed_rows(push.items)
    assert [item for _, data in rows for item in data.split(b"\n")] == push.items


def test_the_c_path_takes_these_bodies() -> None:
    """(So that the test above covers the C's own output, not a hand-back to the Python path.)"""
    _cpush = pytest.importorskip("openkvs.datasets._cpush")
    for body in BODIES:
        assert push_items._cpush is _cpush
        assert _cpush.split(body) is not None, body
