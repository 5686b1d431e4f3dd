"""SQLite's joined pieces of an export (storage/sqlite/datasets.py ``_pieces``), cut by byte offsets into its packed
rows: against a greedy oracle over the items one by one, for rows of any sizes, both separators, any bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.storage.sqlite.datasets import _pieces
from tests.conftest import examples

ITEM = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"x"))  # stored items never hold a raw b"\n"
ROWS = st.lists(st.lists(ITEM, min_size=1, max_size=10), max_size=6)


def oracle(items: list[bytes], sep: bytes, batch: int, size: int) -> list[bytes]:
    """Each piece takes the next item while it holds fewer than ``batch`` and stays within ``size`` once joined;
    an empty piece takes it whatever its size."""
    pieces: list[list[bytes]] = []
    for item in items:
        last = pieces[-1] if pieces else None
        if last is not None and len(last) < batch and len(sep.join([*last, item])) <= size:
            last.append(item)
        else:
            pieces.append([item])
    return [sep.join(p) for p in pieces]


@settings(max_examples=examples(2000))
@given(rows=ROWS, sep=st.sampled_from([b"\n", b",\n"]), batch=st.integers(1, 15), size=st.integers(1, 80))
def test_pieces_are_the_greedy_packing_of_the_items(rows, sep, batch, size):
    got = list(_pieces(iter([(len(r), b"\n".join(r)) for r in rows]), sep, batch, size))
    assert all(type(p) is bytes for p in got)
    assert got == oracle([item for r in rows for item in r], sep, batch, size)
